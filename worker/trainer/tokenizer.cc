// Byte tokenizer and chat template; see tokenizer.h.
#include "worker/trainer/tokenizer.h"

#include <algorithm>

namespace dcvlr::trainer {
namespace {
constexpr std::string_view kSpecialNames[] = {
    "<|pad|>",        "<|im_start|>",  "<|im_end|>",   "<|vision_start|>",
    "<|vision_end|>", "<|image_pad|>", "<|endoftext|>"};

void Append(std::vector<uint16_t>* out, std::string_view text) {
  for (unsigned char c : text) out->push_back(c);
}
}  // namespace

std::vector<uint16_t> ByteTokenizer::EncodeText(std::string_view text) const {
  std::vector<uint16_t> out;
  Append(&out, text);
  return out;
}

std::string ByteTokenizer::Decode(const std::vector<uint16_t>& ids) const {
  std::string out;
  for (uint16_t id : ids) {
    if (id < kNumByteTokens)
      out += static_cast<char>(id);
    else if (id - kNumByteTokens < int(std::size(kSpecialNames)))
      out += kSpecialNames[id - kNumByteTokens];
    else
      out += "<|" + std::to_string(id) + "|>";
  }
  return out;
}

int ByteTokenizer::TemplateOverhead() const {
  // <|im_start|>user\n <|vision_start|> pads <|vision_end|> ... <|im_end|>\n
  // <|im_start|>assistant\n ... <|im_end|>
  return 1 + 5 + 1 + image_tokens_ + 1 + 1 + 1 + 1 + 10 + 1;
}

EncodedExample ByteTokenizer::EncodeExample(std::string_view question,
                                            std::string_view answer,
                                            int max_len) const {
  EncodedExample ex;
  int budget = max_len - TemplateOverhead() - int(answer.size());
  if (budget < 0) budget = 0;
  if (int(question.size()) > budget) {
    question = question.substr(0, budget);
    ex.truncated = true;
  }
  auto& t = ex.tokens;
  t.push_back(kImStartId);
  Append(&t, "user\n");
  Append(&t, question);
  t.push_back(kVisionStartId);
  t.insert(t.end(), image_tokens_, kImagePadId);
  t.push_back(kVisionEndId);
  t.push_back(kImEndId);
  Append(&t, "\n");
  t.push_back(kImStartId);
  Append(&t, "assistant\n");
  ex.answer_start = int(t.size());
  Append(&t, answer);
  t.push_back(kImEndId);
  if (int(t.size()) > max_len) {  // an answer longer than the whole budget
    t.resize(max_len);
    ex.truncated = true;
  }
  return ex;
}

}  // namespace dcvlr::trainer
