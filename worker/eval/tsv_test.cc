// TSV parsing and writing.
#include "worker/eval/tsv.h"

#include <gtest/gtest.h>

namespace dcvlr::eval {
namespace {

TEST(TsvTest, ParsesHeaderRowsAndLines) {
  TsvTable t;
  std::string error;
  ASSERT_TRUE(ParseTsv("index\tq\r\n1\ta b\r\n\n2\tc\n", "x.tsv", &t, &error))
      << error;
  ASSERT_EQ(t.header.size(), 2u);
  EXPECT_EQ(t.Column("q"), 1);
  EXPECT_EQ(t.Column("nope"), -1);
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0][1], "a b");
  EXPECT_EQ(t.rows[1][0], "2");
  EXPECT_EQ(t.row_lines[0], 2);
  EXPECT_EQ(t.row_lines[1], 4);
}

TEST(TsvTest, QuotedFieldsHoldTabsNewlinesAndQuotes) {
  TsvTable t;
  std::string error;
  ASSERT_TRUE(ParseTsv("a\tb\n\"x\ty\nz\"\t\"say \"\"hi\"\"\"\n3\t4\n", "x.tsv",
                       &t, &error))
      << error;
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.rows[0][0], "x\ty\nz");
  EXPECT_EQ(t.rows[0][1], "say \"hi\"");
  EXPECT_EQ(t.row_lines[1], 4);  // the quoted newline counts
}

TEST(TsvTest, WrongFieldCountNamesTheLine) {
  TsvTable t;
  std::string error;
  EXPECT_FALSE(ParseTsv("a\tb\n1\t2\n3\n", "bad.tsv", &t, &error));
  EXPECT_EQ(error, "bad.tsv:3: row has 1 fields, the header has 2");
}

TEST(TsvTest, UnclosedQuoteIsAnError) {
  TsvTable t;
  std::string error;
  EXPECT_FALSE(ParseTsv("a\tb\n1\t\"open\n", "q.tsv", &t, &error));
  EXPECT_NE(error.find("q.tsv:2: column 2"), std::string::npos) << error;
}

TEST(TsvTest, WriteThenReadRoundTrips) {
  const std::vector<std::string> header = {"index", "prediction"};
  const std::vector<std::string> row = {"7", "line one\nline\t\"two\""};
  TsvTable t;
  std::string error;
  ASSERT_TRUE(ParseTsv(TsvLine(header) + TsvLine(row), "rt", &t, &error));
  ASSERT_EQ(t.rows.size(), 1u);
  EXPECT_EQ(t.rows[0], row);
  EXPECT_EQ(TsvField("plain"), "plain");
}

}  // namespace
}  // namespace dcvlr::eval
