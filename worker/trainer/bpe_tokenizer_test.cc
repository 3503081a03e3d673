// The byte-level BPE tokenizer against golden ids from Hugging Face's
// tokenizers.js on Qwen's tokenizer files (testdata/qwen_tokenizer,
// made by make_golden.mjs).
#include "worker/trainer/bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

namespace dcvlr::trainer {
namespace {

const std::string kDir = std::string(DCVLR_TESTDATA) + "/qwen_tokenizer";

const BpeTokenizer& Qwen() {
  static const BpeTokenizer* tok = [] {
    std::string error;
    auto t = BpeTokenizer::Load(kDir, &error);
    EXPECT_NE(t, nullptr) << error;
    return t.release();
  }();
  return *tok;
}

struct Golden {
  std::string text;
  std::vector<uint32_t> ids;
};

std::vector<Golden> ReadGolden() {
  std::ifstream in(kDir + "/golden.jsonl");
  std::vector<Golden> out;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    out.push_back({j["text"], j["ids"].get<std::vector<uint32_t>>()});
  }
  return out;
}

std::string Join(const std::vector<uint32_t>& ids) {
  std::string s;
  for (uint32_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return s;
}

TEST(BpeTokenizer, MatchesTokenizersJsOnEveryGoldenString) {
  const auto golden = ReadGolden();
  ASSERT_GE(golden.size(), 300u);
  int mismatches = 0;
  for (const Golden& g : golden) {
    std::vector<uint32_t> got = Qwen().Encode(g.text);
    if (got != g.ids && ++mismatches <= 10)
      ADD_FAILURE() << nlohmann::json(g.text).dump() << "\n  got  " << Join(got)
                    << "\n  want " << Join(g.ids);
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(BpeTokenizer, DecodeInvertsEncodeOnNormalisedText) {
  for (const Golden& g : ReadGolden()) {
    // Texts that NFC changes decode to their normal form instead.
    if (g.text.find("\xcc\x81") != std::string::npos ||    // U+0301
        g.text.find("\xcc\x8a") != std::string::npos ||    // U+030A
        g.text.find("\xe2\x84\xab") != std::string::npos)  // U+212B
      continue;
    EXPECT_EQ(Qwen().Decode(g.ids), g.text);
  }
  std::vector<uint32_t> ids = Qwen().Encode("<|im_start|>hi<|im_end|>");
  EXPECT_EQ(Qwen().Decode(ids, /*skip_special=*/true), "hi");
}

TEST(BpeTokenizer, QwenSpecialTokensHaveTheirIds) {
  EXPECT_EQ(Qwen().TokenId("<|image_pad|>"), 151655u);
  EXPECT_EQ(Qwen().TokenId("<|vision_start|>"), 151652u);
  EXPECT_EQ(Qwen().TokenId("<|vision_end|>"), 151653u);
  EXPECT_EQ(Qwen().TokenId("<|im_end|>"), 151645u);
  EXPECT_EQ(Qwen().TokenId("<|endoftext|>"), 151643u);
  EXPECT_EQ(Qwen().Encode("<|image_pad|><|image_pad|>"),
            (std::vector<uint32_t>{151655, 151655}));
  EXPECT_FALSE(Qwen().TokenId("<|no such token|>").has_value());
  EXPECT_GT(Qwen().vocab_size(), 151655u);
}

TEST(BpeTokenizer, InvalidUtf8IsReplacedNotFatal) {
  std::vector<uint32_t> ids = Qwen().Encode(std::string("a\xff\xfe b", 5));
  EXPECT_EQ(Qwen().Decode(ids), "a\xef\xbf\xbd\xef\xbf\xbd b");
}

TEST(BpeTokenizer, UnsupportedFilesAreErrorsNamingTheKey) {
  char tmpl[] = "/tmp/bpe_test.XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  auto load = [&](const std::string& text) {
    std::ofstream(dir + "/tokenizer.json") << text;
    std::string error;
    EXPECT_EQ(BpeTokenizer::Load(dir, &error), nullptr);
    return error;
  };
  EXPECT_NE(load("{\"model\": {\"type\": \"WordPiece\"}}").find("model.type"),
            std::string::npos);
  EXPECT_NE(load("{\"model\": ").find("not valid JSON"), std::string::npos);
  std::string e = load(
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, "
      "\"normalizer\": {\"type\": \"NFKC\"}, \"pre_tokenizer\": {\"type\": "
      "\"ByteLevel\"}}");
  EXPECT_NE(e.find("normalizer.type"), std::string::npos) << e;
  e = load(
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": [7]}, "
      "\"pre_tokenizer\": {\"type\": \"ByteLevel\"}}");
  EXPECT_NE(e.find("model.merges[0]"), std::string::npos) << e;
  std::string missing;
  EXPECT_EQ(BpeTokenizer::Load(dir + "/nope.json", &missing), nullptr);
  EXPECT_NE(missing.find("nope.json: cannot open"), std::string::npos);
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace dcvlr::trainer
