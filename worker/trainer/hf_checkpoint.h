// The tensors of a Hugging Face checkpoint directory: model.safetensors, or
// the shards model.safetensors.index.json lists. Names are canonicalised to
// the layout the Hub's Qwen-VL files use ("model.layers.N...", "visual...",
// "lm_head.weight"); transformers' in-memory layout ("model.language_model.",
// "model.visual.") is accepted too. Torch-free.
#ifndef DCVLR_WORKER_TRAINER_HF_CHECKPOINT_H_
#define DCVLR_WORKER_TRAINER_HF_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "worker/trainer/safetensors.h"

namespace dcvlr::trainer {

struct HfCheckpoint {
  std::string dir;
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  // Canonical name -> the tensor (pointing into one of `files`).
  std::map<std::string, const TensorView*> tensors;
  // Canonical name -> the file it came from, for errors.
  std::map<std::string, std::string> source;
};

// "model.language_model.X" -> "model.X", "model.visual.X" -> "visual.X";
// other names unchanged.
std::string CanonicalTensorName(const std::string& name);

// Reads a checkpoint directory's file `name` (config.json,
// tokenizer.json, ...), or `path` itself when it is a file. Refuses files
// above `max_bytes`. `*file` is the path read, for the caller's errors;
// errors name it.
bool ReadCheckpointFile(const std::string& path, const char* name,
                        size_t max_bytes, std::string* file, std::string* text,
                        std::string* error);

// Bytes per element of a safetensors dtype ("F32", "BF16", ...); 0 if unknown.
size_t DtypeSize(const std::string& dtype);

// Reads every tensor of the checkpoint in `dir`. Errors name the file and
// the tensor: a shard the index lists but that is missing, a tensor whose
// byte size does not match its dtype and shape, a name in two shards, or
// an index entry whose shard does not hold it.
bool ReadHfCheckpoint(const std::string& dir, HfCheckpoint* out,
                      std::string* error);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_HF_CHECKPOINT_H_
