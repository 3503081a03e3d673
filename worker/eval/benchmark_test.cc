// Benchmark TSV loading (good rows and each kind of bad row) and prompts.
#include "worker/eval/benchmark.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "worker/trainer/base64.h"
#include "worker/trainer/synthetic.h"

namespace dcvlr::eval {
namespace {

namespace fs = std::filesystem;

std::string PngBase64(int size, uint8_t shade) {
  trainer::Image img;
  img.width = img.height = size;
  img.rgb.assign(size_t(size) * size * 3, shade);
  return trainer::Base64Encode(trainer::EncodePng(img));
}

class BenchmarkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("dcvlr_eval_bench." + std::to_string(::getpid()) + "." +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  BenchmarkSpec Write(const std::string& text) {
    BenchmarkSpec spec;
    spec.name = "b";
    spec.path = (dir_ / "b.tsv").string();
    std::ofstream(spec.path) << text;
    return spec;
  }
  bool Load(const BenchmarkSpec& spec, Benchmark* out, std::string* error) {
    return LoadBenchmark(
        spec, 32, 0, [](int64_t) { return true; }, out, error);
  }

  fs::path dir_;
};

TEST_F(BenchmarkTest, LoadsRowsOptionsHintsAndSharedImages) {
  const std::string img = PngBase64(64, 200);
  BenchmarkSpec spec = Write(
      "index\timage\tquestion\thint\tA\tB\tC\tanswer\tcategory\n"
      "10\t" +
      img +
      "\tWhat colour?\tLook closely\tred\tgreen\t\tB\tcolor\n"
      "11\t10\tHow many?\tnan\t1\t2\t3\tC\tcount\n");
  Benchmark b;
  std::string error;
  ASSERT_TRUE(Load(spec, &b, &error)) << error;
  EXPECT_TRUE(b.has_category);
  EXPECT_TRUE(b.has_hint);
  EXPECT_EQ(b.option_columns, (std::vector<char>{'A', 'B', 'C'}));
  ASSERT_EQ(b.items.size(), 2u);
  const BenchmarkItem& a = b.items[0];
  EXPECT_EQ(a.index, "10");
  EXPECT_EQ(a.hint, "Look closely");
  EXPECT_EQ(a.options.size(), 2u);  // the empty C cell is no option
  EXPECT_EQ(a.answer, "B");
  EXPECT_EQ(a.category, "color");
  EXPECT_EQ(a.line, 2);
  // Resized to the model's 32x32 input.
  EXPECT_EQ(a.image.width, 32);
  EXPECT_EQ(a.image.rgb.size(), 32u * 32 * 3);
  EXPECT_EQ(a.image.rgb[0], 200);
  // Row 11 reuses row 10's image; "nan" is no hint.
  EXPECT_EQ(b.items[1].image.rgb, a.image.rgb);
  EXPECT_EQ(b.items[1].hint, "");
  EXPECT_EQ(b.items[1].options.size(), 3u);
}

TEST_F(BenchmarkTest, KeepsOnlyRequestedImagesAndHonoursMaxRows) {
  const std::string img = PngBase64(32, 9);
  BenchmarkSpec spec =
      Write("index\timage\tquestion\tanswer\n0\t" + img + "\tq0\tx\n1\t" + img +
            "\tq1\ty\n2\t" + img + "\tq2\tz\n");
  Benchmark b;
  std::string error;
  ASSERT_TRUE(LoadBenchmark(
      spec, 32, 2, [](int64_t r) { return r == 1; }, &b, &error))
      << error;
  ASSERT_EQ(b.items.size(), 2u);
  EXPECT_TRUE(b.items[0].image.rgb.empty());
  EXPECT_FALSE(b.items[1].image.rgb.empty());
  EXPECT_FALSE(b.has_category);
}

TEST_F(BenchmarkTest, MissingColumnIsNamed) {
  BenchmarkSpec spec = Write("index\timage\tquestion\nx\ty\tz\n");
  Benchmark b;
  std::string error;
  EXPECT_FALSE(Load(spec, &b, &error));
  EXPECT_EQ(error, spec.path + ":1: missing required column \"answer\"");
}

TEST_F(BenchmarkTest, BrokenBase64NamesLineAndColumn) {
  const std::string img = PngBase64(32, 1);
  std::string broken(100, 'A');
  broken[50] = '*';
  BenchmarkSpec spec = Write("index\timage\tquestion\tanswer\n0\t" + img +
                             "\tq\ta\n1\t" + broken + "\tq\ta\n");
  Benchmark b;
  std::string error;
  EXPECT_FALSE(Load(spec, &b, &error));
  EXPECT_EQ(error, spec.path + ":3: column \"image\": not valid base64");
}

TEST_F(BenchmarkTest, UndecodableImageNamesLineAndColumn) {
  const std::string not_image =
      trainer::Base64Encode(std::vector<uint8_t>(80, uint8_t('z')));
  BenchmarkSpec spec =
      Write("index\timage\tquestion\tanswer\n0\t" + not_image + "\tq\ta\n");
  Benchmark b;
  std::string error;
  EXPECT_FALSE(Load(spec, &b, &error));
  EXPECT_EQ(error.rfind(spec.path + ":2: column \"image\": cannot decode the "
                                    "image: ",
                        0),
            0u)
      << error;
}

TEST_F(BenchmarkTest, ReferenceToMissingIndexIsNamed) {
  const std::string img = PngBase64(32, 1);
  BenchmarkSpec spec = Write("index\timage\tquestion\tanswer\n0\t" + img +
                             "\tq\ta\n1\t7\tq\ta\n");
  Benchmark b;
  std::string error;
  EXPECT_FALSE(Load(spec, &b, &error));
  EXPECT_EQ(error, spec.path +
                       ":3: column \"image\": \"7\" is too short for an image "
                       "and names no row's index");
}

TEST_F(BenchmarkTest, DuplicateIndexAndEmptyAnswerAreErrors) {
  const std::string img = PngBase64(32, 1);
  Benchmark b;
  std::string error;
  EXPECT_FALSE(Load(Write("index\timage\tquestion\tanswer\n0\t" + img +
                          "\tq\ta\n0\t" + img + "\tq\ta\n"),
                    &b, &error));
  EXPECT_NE(error.find(":3: column \"index\": index \"0\" repeats line 2"),
            std::string::npos)
      << error;
  EXPECT_FALSE(
      Load(Write("index\timage\tquestion\tanswer\n0\t" + img + "\tq\t\n"), &b,
           &error));
  EXPECT_NE(error.find(":2: column \"answer\": empty answer"),
            std::string::npos)
      << error;
}

TEST(PromptTest, VlmEvalKitMultipleChoicePrompt) {
  BenchmarkItem item;
  item.question = "What colour is the circle?";
  item.hint = "It is small.";
  item.options = {{'A', "red"}, {'B', "green"}};
  EXPECT_EQ(BuildPrompt(item, PromptStyle::kVlmEvalKit),
            "Hint: It is small.\n"
            "Question: What colour is the circle?\n"
            "Options:\nA. red\nB. green\n"
            "Please select the correct answer from the options above. \n");
  item.hint.clear();
  item.options.clear();
  EXPECT_EQ(BuildPrompt(item, PromptStyle::kVlmEvalKit),
            "Question: What colour is the circle?\n");
}

// The synthetic TSV asked inline is the very text the trainer trains on.
TEST(PromptTest, InlinePromptIsTheTrainersSyntheticQuestion) {
  const fs::path path =
      fs::temp_directory_path() /
      ("dcvlr_eval_synth." + std::to_string(::getpid()) + ".tsv");
  std::string error;
  ASSERT_TRUE(trainer::WriteSyntheticTsv(path.string(), "test", 5, 12, &error))
      << error;
  BenchmarkSpec spec;
  spec.name = "synthetic_shapes";
  spec.path = path.string();
  Benchmark b;
  ASSERT_TRUE(LoadBenchmark(spec, 32, 0, nullptr, &b, &error)) << error;
  fs::remove(path);
  ASSERT_EQ(b.items.size(), 12u);
  for (int i = 0; i < 12; ++i) {
    trainer::SyntheticExample ex = trainer::GenerateSynthetic("test", 5, i);
    EXPECT_EQ(BuildPrompt(b.items[i], PromptStyle::kInline), ex.Question());
    EXPECT_EQ(b.items[i].answer, ex.AnswerLetter());
    EXPECT_EQ(b.items[i].category, ex.category);
  }
}

}  // namespace
}  // namespace dcvlr::eval
