// Qwen2-VL's chat format (the chat template Qwen2-VL and Qwen2.5-VL
// ship): ChatML turns, the default system prompt when the conversation has
// none, images as <|vision_start|><|image_pad|><|vision_end|> where they
// occur in a message, and training labels on the assistant's tokens only.
// Torch-free.
#ifndef DCVLR_WORKER_TRAINER_QWEN_CHAT_H_
#define DCVLR_WORKER_TRAINER_QWEN_CHAT_H_

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "worker/trainer/bpe_tokenizer.h"

namespace dcvlr::trainer {

inline constexpr char kQwenDefaultSystemPrompt[] =
    "You are a helpful assistant.";

struct ChatPart {
  enum Kind { kText, kImage, kVideo };
  Kind kind = kText;
  std::string text;
};

struct ChatMessage {
  std::string role;
  // A message's content is a string or a list of parts, as in the
  // template; `parts` is used when is_string is false.
  bool is_string = true;
  std::string content;
  std::vector<ChatPart> parts;
};

// Messages as Hugging Face / OpenAI chat data spells them: a list of
// {"role", "content"} where content is a string or a list of parts
// ({"type": "text", "text"}, {"type": "image", ...}, {"image": ...},
// {"type": "image_url", ...}, {"type": "video", ...}; others are ignored, as
// the template ignores them). Errors name the index and key.
bool ParseChatMessages(const nlohmann::json& messages,
                       std::vector<ChatMessage>* out, std::string* error);

// The template's text for `messages`.
std::string RenderQwenChat(const std::vector<ChatMessage>& messages,
                           bool add_generation_prompt,
                           bool add_vision_id = false);

struct EncodedChat {
  std::vector<uint32_t> ids;
  // 1 where ids[i] is a training target: the assistant's content and its
  // closing <|im_end|>.
  std::vector<uint8_t> target;
  int64_t images = 0;
};

// Renders and tokenizes `messages`, each image's <|image_pad|> repeated
// image_tokens[i] times (its merged patch count). Each assistant answer
// (with its <|im_end|>) is tokenized apart from what precedes it, so that
// its tokens are the same wherever it sits. False when the images and
// image_tokens disagree, or a special token is missing.
bool EncodeQwenChat(const BpeTokenizer& tokenizer,
                    const std::vector<ChatMessage>& messages,
                    const std::vector<int64_t>& image_tokens, EncodedChat* out,
                    std::string* error);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_QWEN_CHAT_H_
