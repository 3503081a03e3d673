// The packed shard cache: hf_vision JSONL rows converted once into one
// memory-mapped file per dataset (tokens, loss start, resized RGB image),
// keyed by a hash of the input bytes and everything the conversion depends
// on. One process per machine builds it (the others wait for the file to
// appear, which the builder makes atomic with a rename).
#ifndef DCVLR_WORKER_TRAINER_DATA_CACHE_H_
#define DCVLR_WORKER_TRAINER_DATA_CACHE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "worker/trainer/config.h"
#include "worker/trainer/image.h"
#include "worker/trainer/presets.h"
#include "worker/trainer/qwen_chat.h"

namespace dcvlr::trainer {

// A read-only view of one shard file. Thread-compatible; the mapping lives
// as long as the object.
class Shard {
 public:
  static std::unique_ptr<Shard> Open(const std::string& path,
                                     std::string* error);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  int64_t size() const { return num_examples_; }
  int image_size() const { return image_size_; }
  const uint16_t* tokens(int64_t i) const;
  int length(int64_t i) const;
  int answer_start(int64_t i) const;
  // image_size * image_size * 3 bytes, HWC.
  const uint8_t* image(int64_t i) const;

 private:
  Shard() = default;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  int64_t num_examples_ = 0;
  int image_size_ = 0;
  const uint8_t* index_ = nullptr;
  const uint16_t* tokens_ = nullptr;
  const uint8_t* images_ = nullptr;
};

// Several shards seen as one indexable dataset.
class Dataset {
 public:
  void Add(std::unique_ptr<Shard> shard);
  int64_t size() const { return total_; }
  // The shard and local index holding global example `i`.
  const Shard& Locate(int64_t i, int64_t* local) const;

 private:
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<int64_t> starts_;
  int64_t total_ = 0;
};

// One hf_vision row: a question/answer pair with its image, or (for rows
// with "messages") a conversation and its images in order.
struct VisionRow {
  std::string question, answer;
  std::string system;  // empty: none given
  Image image;
  std::vector<ChatMessage> messages;  // non-empty for conversation rows
  std::vector<Image> images;          // a conversation's images
};

// Which keys of a row hold what. Empty names use the defaults: image from
// image / images / image_path, question from question / prompt / query,
// answer from answer / response / label (values other than strings as
// JSON). Named columns (Oumi's hf_vision image_column, question_column,
// answer_column, system_prompt_column) must be in every row and hold text
// (or null). `system_prompt` is a fixed system message.
struct VisionColumns {
  std::string image, question, answer, system;
  std::string system_prompt;
};
VisionColumns ColumnsOf(const DatasetSpec& spec);

struct CacheOptions {
  std::string cache_dir;
  bool builder = true;        // this process converts; others wait
  int wait_timeout_s = 1800;  // how long a non-builder waits
};

// Makes sure the shard for `files` exists (building it if this process is
// the builder) and returns its path. Rows that fail to parse are errors that
// name the file and line.
bool EnsureShard(const std::vector<std::string>& files,
                 const VisionColumns& columns, const ModelPreset& preset,
                 const CacheOptions& options, std::string* shard_path,
                 std::string* error);

// Resolves a dataset spec to its JSONL files, generating synthetic data into
// the cache first where the spec asks for it.
bool ResolveDatasetFiles(const DatasetSpec& spec, const CacheOptions& options,
                         std::vector<std::string>* files, std::string* error);

// Conversation rows, as Hugging Face chat data holds them:
//   {"messages": [{"role": "user", "content": [{"type": "image", "image": X},
//                 {"type": "text", "text": "..."}]}, {"role": "assistant",
//                 ...}]}
// where X is anything an image value may be (base64, data URL, path,
// {bytes|path}); an image part without one takes the next entry of the
// row's "images" list instead (the LLaVA / ShareGPT layout).
//
// Calls `fn` for each row of hf_vision JSONL `files`. `where` is
// "FILE:LINE: "; a row that fails to parse, or that `fn` refuses (returning
// false with a reason), stops the read with an error naming its file and
// line (and the column).
using VisionRowFn = std::function<bool(const std::string& where, VisionRow row,
                                       std::string* error)>;
bool ReadVisionRows(const std::vector<std::string>& files,
                    const VisionColumns& columns, const VisionRowFn& fn,
                    std::string* error);

// ResolveDatasetFiles + EnsureShard + Open for every spec.
bool LoadDataset(const std::vector<DatasetSpec>& specs,
                 const ModelPreset& preset, const CacheOptions& options,
                 Dataset* out, std::string* error);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_DATA_CACHE_H_
