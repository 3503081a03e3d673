// Images, base64, the synthetic generator and the shard cache.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "worker/trainer/base64.h"
#include "worker/trainer/data_cache.h"
#include "worker/trainer/image.h"
#include "worker/trainer/synthetic.h"
#include "worker/trainer/test_util.h"
#include "worker/trainer/tokenizer.h"

namespace dcvlr::trainer {
namespace {

namespace fs = std::filesystem;
using ::dcvlr::trainer::testing::ReadAll;

fs::path TempDir(const std::string& name) {
  fs::path p =
      fs::temp_directory_path() / (name + "." + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

TEST(ImageTest, PngRoundTrip) {
  Image img{5, 3, {}};
  for (int i = 0; i < 5 * 3 * 3; ++i) img.rgb.push_back(uint8_t(i * 17));
  Image back;
  std::string error;
  ASSERT_TRUE(DecodeImage(EncodePng(img), &back, &error)) << error;
  EXPECT_EQ(back.width, 5);
  EXPECT_EQ(back.height, 3);
  EXPECT_EQ(back.rgb, img.rgb);
}

TEST(ImageTest, InflatesZlibDynamicHuffman) {
  // Made by Python's zlib.compress(level 9): a dynamic-Huffman block.
  std::string z = ReadAll(fs::path(DCVLR_TESTDATA) / "squares.zlib");
  std::string expected;
  for (int i = 0; i < 3000; ++i) expected += std::to_string(i * i % 997) + ",";
  std::vector<uint8_t> out;
  std::string error;
  ASSERT_TRUE(ZlibInflate(reinterpret_cast<const uint8_t*>(z.data()), z.size(),
                          &out, &error))
      << error;
  EXPECT_EQ(std::string(out.begin(), out.end()), expected);
}

TEST(ImageTest, InflatesZlibFixedHuffman) {
  const uint8_t z[] = {
      0x78, 0x01, 0x4b, 0x4c, 0x4a, 0x4e, 0x44,
      0x45, 0x00, 0x41, 0x7c, 0x06, 0xe5};  // "abc" * 6, level 1
  std::vector<uint8_t> out;
  std::string error;
  ASSERT_TRUE(ZlibInflate(z, sizeof(z), &out, &error)) << error;
  EXPECT_EQ(std::string(out.begin(), out.end()), "abcabcabcabcabcabc");
}

TEST(ImageTest, ResizeAveragesIntegerFactors) {
  Image img{2, 2, {0, 0, 0, 100, 100, 100, 200, 200, 200, 100, 100, 100}};
  Image small = Resize(img, 1, 1);
  EXPECT_EQ(small.rgb, (std::vector<uint8_t>{100, 100, 100}));
}

TEST(Base64Test, RoundTripsAllLengths) {
  for (int n = 0; n < 10; ++n) {
    std::vector<uint8_t> v;
    for (int i = 0; i < n; ++i) v.push_back(uint8_t(250 - 31 * i));
    auto back = Base64Decode(Base64Encode(v));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, v);
  }
  EXPECT_EQ(Base64Encode({'M', 'a'}), "TWE=");
  EXPECT_FALSE(Base64Decode("ab$c").has_value());
}

TEST(SyntheticTest, DeterministicAndSplitsDiffer) {
  SyntheticExample a = GenerateSynthetic("train", 7, 3),
                   b = GenerateSynthetic("train", 7, 3);
  EXPECT_EQ(a.image.rgb, b.image.rgb);
  EXPECT_EQ(a.Question(), b.Question());
  int same = 0, categories[4] = {};
  for (int i = 0; i < 200; ++i) {
    SyntheticExample tr = GenerateSynthetic("train", 7, i),
                     te = GenerateSynthetic("test", 7, i);
    same += tr.image.rgb == te.image.rgb && tr.Question() == te.Question();
    ASSERT_GE(tr.answer, 0);
    ASSERT_LT(tr.answer, 4);
    for (int c = 0; c < 4; ++c)
      categories[c] +=
          tr.category == std::vector<std::string>{"color", "count", "position",
                                                  "comparison"}[c];
  }
  EXPECT_LT(same, 10);
  for (int c : categories) EXPECT_GT(c, 20);
}

TEST(SyntheticTest, QuestionsFitTinyVlmWithoutTruncation) {
  ByteTokenizer tok(16);
  for (int i = 0; i < 500; ++i) {
    SyntheticExample ex = GenerateSynthetic("train", 1, i);
    EXPECT_FALSE(
        tok.EncodeExample(ex.Question(), ex.AnswerText(), 96).truncated)
        << ex.Question();
  }
}

TEST(ShardCacheTest, BuildsOnceAndReadsBack) {
  fs::path dir = TempDir("shard_test");
  std::string error;
  ASSERT_TRUE(
      WriteSyntheticJsonl((dir / "d.jsonl").string(), "train", 5, 20, &error))
      << error;
  ModelPreset preset;
  ASSERT_TRUE(FindPreset("tiny-vlm", &preset));
  CacheOptions options{(dir / "cache").string(), true};
  std::string path1, path2;
  ASSERT_TRUE(EnsureShard({(dir / "d.jsonl").string()}, {}, preset, options,
                          &path1, &error))
      << error;
  auto mtime = fs::last_write_time(path1);
  ASSERT_TRUE(EnsureShard({(dir / "d.jsonl").string()}, {}, preset, options,
                          &path2, &error));
  EXPECT_EQ(path1, path2);
  EXPECT_EQ(fs::last_write_time(path2), mtime)
      << "a cached shard must not be rebuilt";
  auto shard = Shard::Open(path1, &error);
  ASSERT_TRUE(shard) << error;
  ASSERT_EQ(shard->size(), 20);
  ByteTokenizer tok(preset.image_tokens());
  for (int i = 0; i < 20; ++i) {
    SyntheticExample ex = GenerateSynthetic("train", 5, i);
    EncodedExample enc =
        tok.EncodeExample(ex.Question(), ex.AnswerText(), preset.max_seq_len);
    ASSERT_EQ(shard->length(i), int(enc.tokens.size()));
    EXPECT_EQ(shard->answer_start(i), enc.answer_start);
    EXPECT_TRUE(
        std::equal(enc.tokens.begin(), enc.tokens.end(), shard->tokens(i)));
    EXPECT_EQ(
        std::memcmp(shard->image(i), ex.image.rgb.data(), ex.image.rgb.size()),
        0);
  }
  fs::remove_all(dir);
}

TEST(ShardCacheTest, ImagePathsRelativeToTheFileAndResize) {
  fs::path dir = TempDir("shard_paths");
  fs::create_directories(dir / "imgs");
  Image big{64, 64, std::vector<uint8_t>(64 * 64 * 3, 90)};
  auto png = EncodePng(big);
  std::ofstream(dir / "imgs" / "a.png", std::ios::binary)
      .write(reinterpret_cast<const char*>(png.data()), png.size());
  std::ofstream(dir / "rows.jsonl") << nlohmann::json{{"image", "imgs/a.png"},
                                                      {"question", "q"},
                                                      {"answer", "a"}}
                                           .dump()
                                    << "\n";
  ModelPreset preset;
  FindPreset("tiny-vlm", &preset);
  std::string path, error;
  ASSERT_TRUE(EnsureShard({(dir / "rows.jsonl").string()}, {}, preset,
                          {(dir / "cache").string(), true}, &path, &error))
      << error;
  auto shard = Shard::Open(path, &error);
  ASSERT_TRUE(shard);
  EXPECT_EQ(shard->image_size(), 32);
  EXPECT_EQ(shard->image(0)[0], 90);
  fs::remove_all(dir);
}

TEST(ShardCacheTest, BadRowNamesFileAndLine) {
  fs::path dir = TempDir("shard_bad");
  std::ofstream(dir / "rows.jsonl")
      << "{\"question\": \"q\", \"answer\": \"a\", \"image\": \"x\"}\n"
      << "not json\n";
  ModelPreset preset;
  FindPreset("tiny-vlm", &preset);
  std::string path, error;
  EXPECT_FALSE(EnsureShard({(dir / "rows.jsonl").string()}, {}, preset,
                           {(dir / "cache").string(), true}, &path, &error));
  EXPECT_NE(error.find("rows.jsonl:1:"), std::string::npos) << error;
  // Conversation rows are for checkpoint directories, not presets.
  std::ofstream(dir / "chat.jsonl")
      << R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})"
      << "\n";
  EXPECT_FALSE(EnsureShard({(dir / "chat.jsonl").string()}, {}, preset,
                           {(dir / "cache").string(), true}, &path, &error));
  EXPECT_NE(error.find("chat.jsonl:1: conversation rows"), std::string::npos)
      << error;
  fs::remove_all(dir);
}

// Oumi's hf_vision column names: the starter kit's problem / solution
// rows read like question / answer rows, and a named column a row lacks is
// an error naming it.
TEST(ShardCacheTest, OumiColumnNamesSelectTheKeys) {
  fs::path dir = TempDir("shard_columns");
  Image img{32, 32, std::vector<uint8_t>(32 * 32 * 3, 70)};
  auto png = EncodePng(img);
  std::ofstream(dir / "a.png", std::ios::binary)
      .write(reinterpret_cast<const char*>(png.data()), png.size());
  std::ofstream(dir / "default.jsonl") << nlohmann::json{{"image", "a.png"},
                                                         {"question", "Which?"},
                                                         {"answer", "B"}}
                                              .dump()
                                       << "\n";
  std::ofstream(dir / "oumi.jsonl") << nlohmann::json{{"picture", "a.png"},
                                                      {"problem", "Which?"},
                                                      {"solution", "B"},
                                                      {"answer", "ignored"}}
                                           .dump()
                                    << "\n";
  ModelPreset preset;
  FindPreset("tiny-vlm", &preset);
  CacheOptions options{(dir / "cache").string(), true};
  VisionColumns columns{"picture", "problem", "solution", "", ""};
  std::string p1, p2, error;
  ASSERT_TRUE(EnsureShard({(dir / "default.jsonl").string()}, {}, preset,
                          options, &p1, &error))
      << error;
  ASSERT_TRUE(EnsureShard({(dir / "oumi.jsonl").string()}, columns, preset,
                          options, &p2, &error))
      << error;
  auto a = Shard::Open(p1, &error), b = Shard::Open(p2, &error);
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->length(0), b->length(0));
  EXPECT_TRUE(
      std::equal(a->tokens(0), a->tokens(0) + a->length(0), b->tokens(0)));

  columns.question = "query_text";
  EXPECT_FALSE(EnsureShard({(dir / "oumi.jsonl").string()}, columns, preset,
                           options, &p2, &error));
  EXPECT_NE(error.find(
                "oumi.jsonl:1: column 'query_text' (question_column) is not in "
                "the row; it has: answer, picture, problem, solution"),
            std::string::npos)
      << error;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dcvlr::trainer
