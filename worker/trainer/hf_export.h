// Writes a QwenVlModel as a Hugging Face checkpoint directory that
// transformers' from_pretrained loads: config.json in the Hub's layout,
// the weights under their Hub names in safetensors shards of at most
// `max_shard_bytes` with model.safetensors.index.json (one
// model.safetensors when they fit in one), and the tokenizer and
// processor files copied from `assets_dir` when given.
//
// The directory appears whole or not at all: everything is written to
// DIR.partial, fsynced and renamed to DIR, which must not exist yet.
#ifndef DCVLR_WORKER_TRAINER_HF_EXPORT_H_
#define DCVLR_WORKER_TRAINER_HF_EXPORT_H_

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

#include "worker/trainer/qwen_vl_model.h"

namespace dcvlr::trainer {

struct HfExportOptions {
  at::ScalarType dtype = at::kBFloat16;  // kBFloat16, kHalf or kFloat
  int64_t max_shard_bytes = int64_t{5} << 30;
  std::string assets_dir;  // tokenizer/processor files to copy; "" for none
};

// The files copied from assets_dir when present there.
extern const char* const kHfAssetFiles[];

bool ExportHfCheckpoint(const QwenVlModel& model, const std::string& dir,
                        const HfExportOptions& options, std::string* error);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_HF_EXPORT_H_
