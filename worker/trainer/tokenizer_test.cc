// Byte tokenizer and chat template.
#include "worker/trainer/tokenizer.h"

#include <gtest/gtest.h>

namespace dcvlr::trainer {
namespace {

TEST(TokenizerTest, RendersQwenChatTemplateWithImagePlaceholders) {
  ByteTokenizer tok(/*image_tokens=*/4);
  EncodedExample ex = tok.EncodeExample("Q?", "B", 96);
  EXPECT_EQ(tok.Decode(ex.tokens),
            "<|im_start|>user\nQ?<|vision_start|><|image_pad|><|image_pad|><|"
            "image_pad|>"
            "<|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\nB<|"
            "im_end|>");
  EXPECT_FALSE(ex.truncated);
  EXPECT_EQ(int(ex.tokens.size()), tok.TemplateOverhead() + 2 + 1);
}

TEST(TokenizerTest, LossCoversAnswerAndClosingTokenOnly) {
  ByteTokenizer tok(16);
  EncodedExample ex = tok.EncodeExample("How many?", "C", 96);
  std::vector<uint16_t> scored(ex.tokens.begin() + ex.answer_start,
                               ex.tokens.end());
  EXPECT_EQ(tok.Decode(scored), "C<|im_end|>");
  // Everything before is prompt: the last prompt token is the newline after
  // the assistant role.
  EXPECT_EQ(ex.tokens[ex.answer_start - 1], '\n');
}

TEST(TokenizerTest, CutsQuestionNeverAnswer) {
  ByteTokenizer tok(16);
  std::string question(200, 'x');
  EncodedExample ex = tok.EncodeExample(question, "answer", 96);
  EXPECT_TRUE(ex.truncated);
  EXPECT_EQ(ex.tokens.size(), 96u);
  std::vector<uint16_t> scored(ex.tokens.begin() + ex.answer_start,
                               ex.tokens.end());
  EXPECT_EQ(tok.Decode(scored), "answer<|im_end|>");
}

TEST(TokenizerTest, BytesRoundTrip) {
  ByteTokenizer tok(16);
  std::string text = "caf\xc3\xa9 \x01\xff";
  EXPECT_EQ(tok.Decode(tok.EncodeText(text)), text);
}

}  // namespace
}  // namespace dcvlr::trainer
