// Training rows for Hugging Face Qwen-VL models: each hf_vision row becomes
// a conversation (user: the image, then the question; assistant: the
// answer; or the row's own "messages", every assistant turn a target) in
// Qwen2-VL's chat format, tokenized with the checkpoint's
// tokenizer.json, with its image resized by the image processor's
// smart_resize and as many <|image_pad|> tokens as the image has merged
// patches. Rows are held in memory (resized images as 8-bit RGB);
// normalisation and patching happen per batch. Torch-free.
#ifndef DCVLR_WORKER_TRAINER_QWEN_DATA_H_
#define DCVLR_WORKER_TRAINER_QWEN_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "worker/trainer/bpe_tokenizer.h"
#include "worker/trainer/config.h"
#include "worker/trainer/data_cache.h"
#include "worker/trainer/image.h"
#include "worker/trainer/qwen_image_processor.h"

namespace dcvlr::trainer {

struct QwenExample {
  std::vector<uint32_t> ids;
  std::vector<uint8_t> target;  // 1 on the answers' tokens
  std::vector<Image> images;    // in order, already at their processed size
};

struct QwenDataset {
  std::vector<QwenExample> rows;
  int64_t too_long = 0;  // rows left out: longer than max_len tokens
};

bool LoadQwenDataset(const std::vector<DatasetSpec>& specs,
                     const CacheOptions& cache, const BpeTokenizer& tokenizer,
                     const QwenImageProcessorConfig& processor, int64_t max_len,
                     QwenDataset* out, std::string* error);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_QWEN_DATA_H_
