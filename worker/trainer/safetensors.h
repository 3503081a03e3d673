// safetensors files (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header size, a JSON header mapping tensor names to
// {dtype, shape, data_offsets} plus optional "__metadata__" strings, then the
// raw little-endian data. Hugging Face tools load what this writes.
#ifndef DCVLR_WORKER_TRAINER_SAFETENSORS_H_
#define DCVLR_WORKER_TRAINER_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace dcvlr::trainer {

struct TensorView {
  std::string name;
  std::string dtype;  // "F32", "BF16", "I64", "U8", ...
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes `tensors` (in the given order) to `path` and fsyncs it. False on IO
// error, with a message.
bool WriteSafetensors(const std::string& path,
                      const std::vector<TensorView>& tensors,
                      const std::map<std::string, std::string>& metadata,
                      std::string* error);

// A file mapped read-only into memory (so that ranks reading the same
// checkpoint share the page cache rather than each holding a copy); views
// point into the mapping, which lives as long as any copy of `mapping`.
struct SafetensorsFile {
  std::shared_ptr<const uint8_t> mapping;
  size_t size = 0;
  std::map<std::string, TensorView> tensors;
  std::map<std::string, std::string> metadata;
};

bool ReadSafetensors(const std::string& path, SafetensorsFile* out,
                     std::string* error);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_SAFETENSORS_H_
