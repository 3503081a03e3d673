// The trainer's configuration: the job file's `model`, `data` and `training`
// sections as JSON, in Oumi's vocabulary.
//
// YAML-to-JSON converters leave some numbers as strings ("3e-4"), so numeric
// keys accept numeric strings. Unknown keys are reported as warnings (Oumi
// configs carry many keys this trainer ignores); a value of the wrong type is
// an error naming its key path.
#ifndef DCVLR_WORKER_TRAINER_CONFIG_H_
#define DCVLR_WORKER_TRAINER_CONFIG_H_

#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/trainer/presets.h"

namespace dcvlr::trainer {

struct DatasetSpec {
  std::string name;                // "hf_vision" or "synthetic_shapes"
  std::vector<std::string> files;  // hf_vision: JSONL paths, made absolute
  std::string split = "train";     // synthetic_shapes: "train" or "test"
  int64_t num_samples = 2000;      // synthetic_shapes
  uint64_t seed = 1234;            // synthetic_shapes
  // hf_vision: Oumi's column names (empty: the default keys, see
  // data_cache.h) and a system prompt, static or from a column.
  std::string image_column, question_column, answer_column;
  std::string system_prompt, system_prompt_column;
};

struct TrainingConfig {
  double learning_rate = 3e-4;
  int64_t max_steps = -1;  // > 0 overrides num_train_epochs
  double num_train_epochs = 1.0;
  int per_device_train_batch_size = 8;
  int per_device_eval_batch_size = 0;  // 0: same as train
  int gradient_accumulation_steps = 1;
  int64_t warmup_steps = -1;  // < 0: use warmup_ratio
  double warmup_ratio = 0.0;
  double max_grad_norm = 1.0;  // <= 0 disables clipping
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  std::string lr_scheduler_type = "cosine";  // cosine | linear | constant
  double min_lr_ratio = 0.0;  // floor of the decay, as a fraction of the peak
  uint64_t seed = 42;
  int64_t logging_steps = 10;
  int64_t save_steps = 0;        // 0: only the final checkpoint
  int64_t eval_steps = 0;        // 0: only the final evaluation
  int save_total_limit = 3;      // checkpoints kept (keep-last-K); 0 keeps all
  int64_t eval_max_samples = 0;  // 0: the whole validation split
  std::string output_dir = "output";
  std::string mixed_precision_dtype =
      "auto";                      // auto (bf16 on CUDA) | none | bf16
  int num_threads = 0;             // intra-op threads per rank; 0: 1 on CPU
  bool pad_to_max_length = false;  // false: pad each batch to its longest row
  double ddp_bucket_cap_mb =
      0;  // gradient bucket size; 0: 1 on CPU, 25 on CUDA
  bool save_final_model =
      true;  // false skips the final checkpoint (benchmarks)
};

struct TrainerConfig {
  ModelPreset model;
  // Set when model.model_name is a directory holding a Hugging Face
  // config.json (absolute): the run trains that Qwen2-VL / Qwen2.5-VL
  // checkpoint (or, without weights, a fresh one of its architecture), and
  // `model` only gives max_seq_len (model_max_length, default 2048).
  std::string hf_model_dir;
  std::vector<DatasetSpec> train;
  std::vector<DatasetSpec> validation;
  TrainingConfig training;
  std::string config_dir;  // the config file's directory, for relative paths
};

// Parses a config document. Returns false with `error` set (naming the key
// path) on a bad value; unknown keys append to `warnings`.
bool ParseConfig(const nlohmann::json& doc, const std::string& config_dir,
                 TrainerConfig* out, std::string* error,
                 std::vector<std::string>* warnings);

// Reads and parses a config file.
bool LoadConfigFile(const std::string& path, TrainerConfig* out,
                    std::string* error, std::vector<std::string>* warnings);

// The command line dcvlr-train and dcvlr-eval share: `--config FILE` (or
// `--config=FILE`) and `--help`.
enum class ConfigArgs {
  kRun,        // *config_path is set
  kHelpShown,  // usage went to stdout
  kBad,        // an unknown argument or no --config; usage went to stderr
};
ConfigArgs ParseConfigArgs(int argc, char** argv, const char* program,
                           void (*usage)(FILE*), std::string* config_path);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_CONFIG_H_
