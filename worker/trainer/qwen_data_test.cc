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

TEST(QwenData, OumiRowsBecomeChatsWithTheAnswerAsTarget) {
  const std::string model =
      std::string(DCVLR_CONFIGS) + "/models/qwen2_5-vl-tiny";
  std::string error;
  auto tok = BpeTokenizer::Load(model, &error);
  ASSERT_NE(tok, nullptr) << error;
  QwenImageProcessorConfig processor;
  ASSERT_TRUE(LoadQwenImageProcessorConfig(model, &processor, &error)) << error;

  fs::path dir = fs::temp_directory_path() /
                 ("qwen_data_test." + std::to_string(::getpid()));
  fs::create_directories(dir);
  Image img{40, 30, std::vector<uint8_t>(40 * 30 * 3, 128)};
  auto png = EncodePng(img);
  std::ofstream(dir / "a.png", std::ios::binary)
      .write(reinterpret_cast<const char*>(png.data()), png.size());
  std::ofstream(dir / "rows.jsonl") << nlohmann::json{{"image", "a.png"},
                                                      {"problem", " Which?\n"},
                                                      {"solution", "B\n"}}
                                           .dump()
                                    << "\n";
  DatasetSpec spec;
  spec.name = "hf_vision";
  spec.files = {(dir / "rows.jsonl").string()};
  spec.image_column = "image";
  spec.question_column = "problem";
  spec.answer_column = "solution";
  spec.system_prompt = "Think.";
  CacheOptions cache{(dir / "cache").string(), true};
  QwenDataset data;
  ASSERT_TRUE(
      LoadQwenDataset({spec}, cache, *tok, processor, 1024, &data, &error))
      << error;
  ASSERT_EQ(data.rows.size(), 1u);
  const QwenExample& ex = data.rows[0];
  // 40x30 is below min_pixels (3136): smart_resize scales it up to 84x56,
  // 6x4 patches, 6 merged tokens.
  EXPECT_EQ(ex.image.width, 84);
  EXPECT_EQ(ex.image.height, 56);
  EXPECT_EQ(std::count(ex.ids.begin(), ex.ids.end(), 262u), 6);
  std::string want =
      "<|im_start|>system\nThink.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
      "<|image_pad|><|image_pad|><|image_pad|><|image_pad|><|image_pad|>"
      "<|image_pad|><|vision_end|>Which?"
      "<|im_end|>\n<|im_start|>assistant\nB<|im_end|>\n";
  EXPECT_EQ(tok->Decode(ex.ids), want);
  std::vector<uint32_t> targets;
  for (size_t i = 0; i < ex.ids.size(); ++i)
    if (ex.target[i]) targets.push_back(ex.ids[i]);
  EXPECT_EQ(tok->Decode(targets), "B<|im_end|>");

  QwenDataset short_rows;
  ASSERT_TRUE(
      LoadQwenDataset({spec}, cache, *tok, processor, 20, &short_rows, &error));
  EXPECT_TRUE(short_rows.rows.empty());
  EXPECT_EQ(short_rows.too_long, 1);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dcvlr::trainer
