// Qwen-VL training rows; see qwen_data.h.
#include "worker/trainer/qwen_data.h"

#include "worker/trainer/qwen_chat.h"

namespace dcvlr::trainer {

bool LoadQwenDataset(const std::vector<DatasetSpec>& specs,
                     const CacheOptions& cache, const BpeTokenizer& tokenizer,
                     const QwenImageProcessorConfig& processor, int64_t max_len,
                     QwenDataset* out, std::string* error) {
  for (const DatasetSpec& spec : specs) {
    std::vector<std::string> files;
    if (!ResolveDatasetFiles(spec, cache, &files, error)) return false;
    auto add = [&](const std::string&, const std::string& question,
                   const std::string& answer, Image image, std::string* why) {
      int64_t h = 0, w = 0;
      if (!SmartResize(image.height, image.width, processor.factor(),
                       processor.min_pixels, processor.max_pixels, &h, &w, why))
        return false;
      QwenExample ex;
      ex.image = ResizeBicubic(image, static_cast<int>(w), static_cast<int>(h));
      const int64_t tokens = (h / processor.patch_size) *
                             (w / processor.patch_size) /
                             (processor.merge_size * processor.merge_size);
      std::vector<ChatMessage> messages(2);
      messages[0].role = "user";
      messages[0].is_string = false;
      messages[0].parts = {{ChatPart::kImage, ""}, {ChatPart::kText, question}};
      messages[1].role = "assistant";
      messages[1].content = answer;
      EncodedChat chat;
      if (!EncodeQwenChat(tokenizer, messages, {tokens}, &chat, why))
        return false;
      if (static_cast<int64_t>(chat.ids.size()) > max_len) {
        ++out->too_long;
        return true;
      }
      ex.ids = std::move(chat.ids);
      ex.target = std::move(chat.target);
      out->rows.push_back(std::move(ex));
      return true;
    };
    if (!ReadVisionRows(files, add, error)) return false;
  }
  return true;
}

}  // namespace dcvlr::trainer
