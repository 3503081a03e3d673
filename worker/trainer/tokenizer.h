// Byte-level tokenizer with Qwen2-VL's chat template.
//
// Ids 0..255 are bytes; specials follow. An example renders as
//   <|im_start|>user\nQUESTION<|vision_start|><|image_pad|>*N<|vision_end|><|im_end|>\n
//   <|im_start|>assistant\nANSWER<|im_end|>
// and the loss covers ANSWER and its closing <|im_end|> only. The question
// comes before the image (Qwen2-VL's template follows the message's content
// order, and both orders occur): the image tokens can then attend to the
// question, and the answer sits at a fixed distance from the image whatever
// the question's length, which small models learn much faster from.
#ifndef DCVLR_WORKER_TRAINER_TOKENIZER_H_
#define DCVLR_WORKER_TRAINER_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dcvlr::trainer {

inline constexpr int kPadId = 256;
inline constexpr int kImStartId = 257;
inline constexpr int kImEndId = 258;
inline constexpr int kVisionStartId = 259;
inline constexpr int kVisionEndId = 260;
inline constexpr int kImagePadId = 261;
inline constexpr int kEndOfTextId = 262;
inline constexpr int kNumByteTokens = 256;

struct EncodedExample {
  std::vector<uint16_t> tokens;
  // Index of the first token the loss covers; the loss runs to the end.
  int answer_start = 0;
  bool truncated = false;  // the question was cut to fit max_len
};

class ByteTokenizer {
 public:
  explicit ByteTokenizer(int image_tokens) : image_tokens_(image_tokens) {}

  std::vector<uint16_t> EncodeText(std::string_view text) const;
  // Bytes back to text; special tokens render as their names.
  std::string Decode(const std::vector<uint16_t>& ids) const;

  // Renders the chat template for one (image, question, answer) row. If the
  // result would exceed max_len, the question's tail is cut: the answer and
  // the template are never truncated.
  EncodedExample EncodeExample(std::string_view question,
                               std::string_view answer, int max_len) const;

  // Tokens around the question and after it, for sizing checks.
  int TemplateOverhead() const;

 private:
  int image_tokens_;
};

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_TOKENIZER_H_
