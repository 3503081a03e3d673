// Training rows for Hugging Face Qwen-VL checkpoints: hf_vision rows (with
// Oumi's column names and system prompt) in Qwen2-VL's chat format.
#include "worker/trainer/qwen_data.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace dcvlr::trainer {
namespace {

namespace fs = std::filesystem;

// The tiny checkpoint's tokenizer and image processor, and a scratch
// directory for rows and their images.
class QwenData : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string model =
        std::string(DCVLR_CONFIGS) + "/models/qwen2_5-vl-tiny";
    std::string error;
    tok_ = BpeTokenizer::Load(model, &error);
    ASSERT_NE(tok_, nullptr) << error;
    ASSERT_TRUE(LoadQwenImageProcessorConfig(model, &processor_, &error))
        << error;
    dir_ = fs::temp_directory_path() /
           ("qwen_data_test." + std::to_string(::getpid()) + "." +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A flat grey PNG of width x height at dir_/name.
  void WritePng(const std::string& name, int width, int height) {
    Image img{width, height,
              std::vector<uint8_t>(size_t(width) * height * 3, 128)};
    auto png = EncodePng(img);
    std::ofstream(dir_ / name, std::ios::binary)
        .write(reinterpret_cast<const char*>(png.data()), png.size());
  }

  std::unique_ptr<BpeTokenizer> tok_;
  QwenImageProcessorConfig processor_;
  fs::path dir_;
};

TEST_F(QwenData, OumiRowsBecomeChatsWithTheAnswerAsTarget) {
  std::string error;
  WritePng("a.png", 40, 30);
  std::ofstream(dir_ / "rows.jsonl") << nlohmann::json{{"image", "a.png"},
                                                       {"problem", " Which?\n"},
                                                       {"solution", "B\n"}}
                                            .dump()
                                     << "\n";
  DatasetSpec spec;
  spec.name = "hf_vision";
  spec.files = {(dir_ / "rows.jsonl").string()};
  spec.image_column = "image";
  spec.question_column = "problem";
  spec.answer_column = "solution";
  spec.system_prompt = "Think.";
  CacheOptions cache{(dir_ / "cache").string(), true};
  QwenDataset data;
  ASSERT_TRUE(
      LoadQwenDataset({spec}, cache, *tok_, processor_, 1024, &data, &error))
      << error;
  ASSERT_EQ(data.rows.size(), 1u);
  const QwenExample& ex = data.rows[0];
  // 40x30 is below min_pixels (3136): smart_resize scales it up to 84x56,
  // 6x4 patches, 6 merged tokens.
  ASSERT_EQ(ex.images.size(), 1u);
  EXPECT_EQ(ex.images[0].width, 84);
  EXPECT_EQ(ex.images[0].height, 56);
  EXPECT_EQ(std::count(ex.ids.begin(), ex.ids.end(), 262u), 6);
  std::string want =
      "<|im_start|>system\nThink.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
      "<|image_pad|><|image_pad|><|image_pad|><|image_pad|><|image_pad|>"
      "<|image_pad|><|vision_end|>Which?"
      "<|im_end|>\n<|im_start|>assistant\nB<|im_end|>\n";
  EXPECT_EQ(tok_->Decode(ex.ids), want);
  std::vector<uint32_t> targets;
  for (size_t i = 0; i < ex.ids.size(); ++i)
    if (ex.target[i]) targets.push_back(ex.ids[i]);
  EXPECT_EQ(tok_->Decode(targets), "B<|im_end|>");

  QwenDataset short_rows;
  ASSERT_TRUE(LoadQwenDataset({spec}, cache, *tok_, processor_, 20, &short_rows,
                              &error));
  EXPECT_TRUE(short_rows.rows.empty());
  EXPECT_EQ(short_rows.too_long, 1);
}

// Conversation rows: images inline or from the row's "images" list, every
// assistant turn a target, and errors naming the row.
TEST_F(QwenData, MessagesRowsTrainOnEveryAssistantTurn) {
  std::string error;
  WritePng("a.png", 56, 56);
  std::ofstream(dir_ / "rows.jsonl") << nlohmann::json::parse(R"({"messages": [
      {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "Q1"}]},
      {"role": "assistant", "content": "A1"},
      {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q2"}]},
      {"role": "assistant", "content": [{"type": "text", "text": "A2"}]}],
    "images": ["a.png"]})")
                                            .dump()
                                     << "\n";
  DatasetSpec spec;
  spec.name = "hf_vision";
  spec.files = {(dir_ / "rows.jsonl").string()};
  CacheOptions cache{(dir_ / "cache").string(), true};
  QwenDataset data;
  ASSERT_TRUE(
      LoadQwenDataset({spec}, cache, *tok_, processor_, 1024, &data, &error))
      << error;
  ASSERT_EQ(data.rows.size(), 1u);
  const QwenExample& ex = data.rows[0];
  EXPECT_EQ(ex.images.size(), 2u);
  EXPECT_EQ(std::count(ex.ids.begin(), ex.ids.end(), 262u), 8);  // 4 per image
  std::vector<uint32_t> targets;
  for (size_t i = 0; i < ex.ids.size(); ++i)
    if (ex.target[i]) targets.push_back(ex.ids[i]);
  EXPECT_EQ(tok_->Decode(targets), "A1<|im_end|>A2<|im_end|>");

  // A second image part with no data and no "images" entry left.
  std::ofstream(dir_ / "bad.jsonl") << nlohmann::json::parse(R"({"messages": [
      {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "image"}]},
      {"role": "assistant", "content": "x"}]})")
                                           .dump()
                                    << "\n";
  spec.files = {(dir_ / "bad.jsonl").string()};
  QwenDataset bad;
  EXPECT_FALSE(
      LoadQwenDataset({spec}, cache, *tok_, processor_, 1024, &bad, &error));
  EXPECT_NE(error.find("bad.jsonl:1: image 1 has no data"), std::string::npos)
      << error;
}

}  // namespace
}  // namespace dcvlr::trainer
