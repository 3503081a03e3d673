// Qwen2-VL's chat template against @huggingface/jinja's renderings
// (testdata/qwen_chat, made by make_golden.mjs), and the training encoding.
#include "worker/trainer/qwen_chat.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

namespace dcvlr::trainer {
namespace {

const std::string kData = DCVLR_TESTDATA;

TEST(QwenChat, RendersAsTheTemplateDoes) {
  std::ifstream in(kData + "/qwen_chat/golden.jsonl");
  int n = 0;
  for (std::string line; std::getline(in, line); ++n) {
    auto g = nlohmann::json::parse(line);
    std::vector<ChatMessage> messages;
    std::string error;
    ASSERT_TRUE(ParseChatMessages(g["messages"], &messages, &error)) << error;
    EXPECT_EQ(RenderQwenChat(messages, g["add_generation_prompt"],
                             g["add_vision_id"]),
              g["text"].get<std::string>())
        << line;
  }
  EXPECT_GE(n, 50);
}

TEST(QwenChat, BadMessagesNameWhere) {
  std::vector<ChatMessage> m;
  std::string error;
  EXPECT_FALSE(ParseChatMessages(nlohmann::json::parse(R"([{"content": "x"}])"),
                                 &m, &error));
  EXPECT_EQ(error, "messages[0].role: missing or not a string");
  EXPECT_FALSE(ParseChatMessages(
      nlohmann::json::parse(R"([{"role": "user", "content": [{"text": 3}]}])"),
      &m, &error));
  EXPECT_EQ(error, "messages[0].content[0].text: not a string");
}

TEST(QwenChat, EncodingExpandsImagesAndTargetsOnlyTheAnswer) {
  std::string error;
  auto tok = BpeTokenizer::Load(kData + "/qwen_tokenizer", &error);
  ASSERT_NE(tok, nullptr) << error;
  std::vector<ChatMessage> m;
  ASSERT_TRUE(ParseChatMessages(nlohmann::json::parse(R"([
      {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]},
      {"role": "assistant", "content": "B"}])"),
                                &m, &error));
  EncodedChat e;
  ASSERT_TRUE(EncodeQwenChat(*tok, m, {6}, &e, &error)) << error;
  // The same ids as tokenizing the rendered text with the pads expanded.
  std::string text = RenderQwenChat(m, false);
  const std::string pad = "<|image_pad|>";
  std::string expanded;
  for (int i = 0; i < 6; ++i) expanded += pad;
  text.replace(text.find(pad), pad.size(), expanded);
  EXPECT_EQ(e.ids, tok->Encode(text));
  // Targets: "B" and <|im_end|>, nothing else.
  std::vector<uint32_t> targets;
  for (size_t i = 0; i < e.ids.size(); ++i)
    if (e.target[i]) targets.push_back(e.ids[i]);
  EXPECT_EQ(targets, (std::vector<uint32_t>{*tok->TokenId("B"), 151645}));
  EXPECT_EQ(std::count(e.ids.begin(), e.ids.end(), 151655u), 6);

  EXPECT_FALSE(EncodeQwenChat(*tok, m, {6, 4}, &e, &error));
  EXPECT_NE(error.find("1 images, the data 2"), std::string::npos) << error;
}

}  // namespace
}  // namespace dcvlr::trainer
