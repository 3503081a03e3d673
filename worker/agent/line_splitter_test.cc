#include "worker/agent/line_splitter.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dcvlr {
namespace {

std::vector<std::string> FeedAll(LineSplitter& splitter,
                                 const std::vector<std::string>& chunks) {
  std::vector<std::string> lines;
  for (const std::string& chunk : chunks) {
    splitter.Feed(chunk,
                  [&](std::string_view line) { lines.emplace_back(line); });
  }
  return lines;
}

TEST(LineSplitterTest, LinesSplitAcrossChunksComeOutWhole) {
  LineSplitter splitter(100);
  EXPECT_EQ(FeedAll(splitter, {"a\nb", "c", "d\n\ne\n", "f"}),
            (std::vector<std::string>{"a", "bcd", "", "e"}));
  EXPECT_EQ(splitter.pending_bytes(), 1u);  // "f" waits for its newline
  EXPECT_EQ(splitter.skipped(), 0);
}

TEST(LineSplitterTest, AnOverlongLineIsSkippedWithoutBeingHeld) {
  LineSplitter splitter(8);
  std::vector<std::string> chunks = {"ok\n0123"};
  for (int i = 0; i < 1000; ++i) chunks.push_back(std::string(1000, 'x'));
  chunks.push_back("tail\nafter\n123456789\nlast\n");
  std::vector<std::string> lines = FeedAll(splitter, chunks);
  EXPECT_EQ(lines, (std::vector<std::string>{"ok", "after", "last"}));
  EXPECT_EQ(splitter.skipped(), 2);  // the megabyte line and "123456789"
  EXPECT_EQ(splitter.pending_bytes(), 0u);
}

TEST(LineSplitterTest, MillionsOfShortLinesAreOnePass) {
  // The shape of the metrics file that once froze the agent: 3 MB of short
  // lines, here fed in 64 KiB reads as the agent does.
  std::string file;
  while (file.size() < 3 * 1024 * 1024) file += "{\"step\":1}\n";
  LineSplitter splitter;
  int64_t lines = 0;
  for (size_t at = 0; at < file.size(); at += 64 * 1024) {
    splitter.Feed(
        std::string_view(file).substr(at, 64 * 1024),
        [&](std::string_view line) { lines += line == "{\"step\":1}"; });
  }
  EXPECT_EQ(lines, static_cast<int64_t>(file.size() / 11));
}

}  // namespace
}  // namespace dcvlr
