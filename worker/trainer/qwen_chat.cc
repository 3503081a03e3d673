// Qwen2-VL chat format; see qwen_chat.h.
#include "worker/trainer/qwen_chat.h"

#include <nlohmann/json.hpp>

namespace dcvlr::trainer {
namespace {

constexpr char kImage[] = "<|vision_start|><|image_pad|><|vision_end|>";
constexpr char kVideo[] = "<|vision_start|><|video_pad|><|vision_end|>";

// One message's body (what follows "<|im_start|>ROLE\n"), up to but not
// including <|im_end|>.
std::string Body(const ChatMessage& m, bool add_vision_id, int* images,
                 int* videos) {
  if (m.is_string) return m.content;
  std::string s;
  for (const ChatPart& p : m.parts) {
    if (p.kind == ChatPart::kImage) {
      ++*images;
      if (add_vision_id) s += "Picture " + std::to_string(*images) + ": ";
      s += kImage;
    } else if (p.kind == ChatPart::kVideo) {
      ++*videos;
      if (add_vision_id) s += "Video " + std::to_string(*videos) + ": ";
      s += kVideo;
    } else {
      s += p.text;
    }
  }
  return s;
}

}  // namespace

bool ParseChatMessages(const nlohmann::json& messages,
                       std::vector<ChatMessage>* out, std::string* error) {
  if (!messages.is_array()) {
    *error = "messages: want a list of {role, content}";
    return false;
  }
  out->clear();
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      *error = where + ".role: missing or not a string";
      return false;
    }
    ChatMessage msg;
    msg.role = m["role"].get<std::string>();
    const auto& c = m.contains("content") ? m["content"] : nlohmann::json();
    if (c.is_string()) {
      msg.content = c.get<std::string>();
    } else if (c.is_array()) {
      msg.is_string = false;
      for (size_t j = 0; j < c.size(); ++j) {
        const auto& p = c[j];
        if (!p.is_object()) {
          *error = where + ".content[" + std::to_string(j) + "]: not an object";
          return false;
        }
        const std::string type = p.value("type", "");
        ChatPart part;
        if (type == "image" || p.contains("image") || p.contains("image_url")) {
          part.kind = ChatPart::kImage;
        } else if (type == "video" || p.contains("video")) {
          part.kind = ChatPart::kVideo;
        } else if (p.contains("text")) {
          if (!p["text"].is_string()) {
            *error = where + ".content[" + std::to_string(j) +
                     "].text: not a string";
            return false;
          }
          part.text = p["text"].get<std::string>();
        } else {
          continue;  // the template renders nothing for it
        }
        msg.parts.push_back(std::move(part));
      }
    } else {
      *error = where + ".content: want a string or a list of parts";
      return false;
    }
    out->push_back(std::move(msg));
  }
  return true;
}

std::string RenderQwenChat(const std::vector<ChatMessage>& messages,
                           bool add_generation_prompt, bool add_vision_id) {
  std::string s;
  int images = 0, videos = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (i == 0 && m.role != "system")
      s += std::string("<|im_start|>system\n") + kQwenDefaultSystemPrompt +
           "<|im_end|>\n";
    s += "<|im_start|>" + m.role + "\n";
    s += Body(m, add_vision_id, &images, &videos);
    s += "<|im_end|>\n";
  }
  if (add_generation_prompt) s += "<|im_start|>assistant\n";
  return s;
}

bool EncodeQwenChat(const BpeTokenizer& tokenizer,
                    const std::vector<ChatMessage>& messages,
                    const std::vector<int64_t>& image_tokens, EncodedChat* out,
                    std::string* error) {
  const auto pad = tokenizer.TokenId("<|image_pad|>");
  if (!pad) {
    *error = "the tokenizer has no <|image_pad|> token";
    return false;
  }
  out->ids.clear();
  out->target.clear();
  out->images = 0;
  auto append = [&](const std::string& text, bool target) {
    for (uint32_t id : tokenizer.Encode(text)) {
      if (id == *pad) {
        if (out->images >= static_cast<int64_t>(image_tokens.size())) {
          ++out->images;
          continue;
        }
        out->ids.insert(out->ids.end(), image_tokens[out->images], *pad);
        out->target.insert(out->target.end(), image_tokens[out->images], 0);
        ++out->images;
        continue;
      }
      out->ids.push_back(id);
      out->target.push_back(target ? 1 : 0);
    }
  };
  int images = 0, videos = 0;
  std::string pending;  // rendered text not yet tokenized
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (i == 0 && m.role != "system")
      pending += std::string("<|im_start|>system\n") +
                 kQwenDefaultSystemPrompt + "<|im_end|>\n";
    pending += "<|im_start|>" + m.role + "\n";
    std::string body = Body(m, false, &images, &videos);
    if (m.role == "assistant") {
      append(pending, false);
      pending.clear();
      append(body + "<|im_end|>", true);
      pending = "\n";
    } else {
      pending += body + "<|im_end|>\n";
    }
  }
  append(pending, false);
  if (videos) {
    *error = "videos are not supported";
    return false;
  }
  if (out->images != static_cast<int64_t>(image_tokens.size())) {
    *error = "the conversation has " + std::to_string(out->images) +
             " images, the data " + std::to_string(image_tokens.size());
    return false;
  }
  return true;
}

}  // namespace dcvlr::trainer
