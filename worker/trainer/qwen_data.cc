// Qwen-VL training rows; see qwen_data.h.
#include "worker/trainer/qwen_data.h"

#include <algorithm>

#include "worker/trainer/qwen_chat.h"

namespace dcvlr::trainer {
namespace {

// Python's str.strip() for ASCII whitespace.
std::string Strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) + 1 - a);
}

}  // namespace

bool LoadQwenDataset(const std::vector<DatasetSpec>& specs,
                     const CacheOptions& cache, const BpeTokenizer& tokenizer,
                     const QwenImageProcessorConfig& processor, int64_t max_len,
                     QwenDataset* out, std::string* error) {
  for (const DatasetSpec& spec : specs) {
    std::vector<std::string> files;
    if (!ResolveDatasetFiles(spec, cache, &files, error)) return false;
    auto add = [&](const std::string&, VisionRow row, std::string* why) {
      QwenExample ex;
      std::vector<int64_t> tokens;
      // Each image at its processed size, and the tokens it will take.
      auto place = [&](const Image& image) {
        int64_t h = 0, w = 0;
        if (!SmartResize(image.height, image.width, processor.factor(),
                         processor.min_pixels, processor.max_pixels, &h, &w,
                         why))
          return false;
        ex.images.push_back(
            ResizeBicubic(image, static_cast<int>(w), static_cast<int>(h)));
        tokens.push_back((h / processor.patch_size) *
                         (w / processor.patch_size) /
                         (processor.merge_size * processor.merge_size));
        return true;
      };
      std::vector<ChatMessage> messages;
      if (!row.messages.empty()) {
        messages = std::move(row.messages);
        for (const Image& image : row.images)
          if (!place(image)) return false;
      } else {
        // As Oumi's hf_vision builds it: an optional system message, the
        // user's image then question, the answer; texts stripped.
        if (!place(row.image)) return false;
        if (!Strip(row.system).empty())
          messages.push_back({"system", true, Strip(row.system), {}});
        ChatMessage user{"user", false, "", {}};
        user.parts = {{ChatPart::kImage, ""},
                      {ChatPart::kText, Strip(row.question)}};
        messages.push_back(std::move(user));
        messages.push_back({"assistant", true, Strip(row.answer), {}});
      }
      EncodedChat chat;
      if (!EncodeQwenChat(tokenizer, messages, tokens, &chat, why))
        return false;
      if (std::count(chat.target.begin(), chat.target.end(), 1) == 0) {
        *why = "the conversation has no assistant turn to train on";
        return false;
      }
      if (static_cast<int64_t>(chat.ids.size()) > max_len) {
        ++out->too_long;
        return true;
      }
      ex.ids = std::move(chat.ids);
      ex.target = std::move(chat.target);
      out->rows.push_back(std::move(ex));
      return true;
    };
    if (!ReadVisionRows(files, ColumnsOf(spec), add, error)) return false;
  }
  return true;
}

}  // namespace dcvlr::trainer
