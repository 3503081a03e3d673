// dcvlr-eval's configuration: the JSON file the agent writes (see README.md).
// Torch-free.
#ifndef DCVLR_WORKER_EVAL_CONFIG_H_
#define DCVLR_WORKER_EVAL_CONFIG_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dcvlr::eval {

// How a benchmark row becomes the user turn's text.
enum class PromptStyle {
  // VLMEvalKit's multiple-choice prompt: "Hint: ...\n" "Question: ...\n"
  // "Options:\nA. ...\n" "Please select the correct answer from the options
  // above. \n".
  kVlmEvalKit,
  // The trainer's synthetic-data format: "QUESTION A:opt B:opt C:opt D:opt",
  // the exact text the synthetic_shapes rows carry when trained on.
  kInline,
};

// A benchmark that dcvlr-eval writes itself, as a VLMEvalKit TSV, before
// reading it like any other: the trainer's synthetic shapes generator.
struct SyntheticSource {
  std::string split = "test";  // train | test
  int64_t num_samples = 400;
  int64_t seed = 7;
};

struct BenchmarkSpec {
  std::string name;  // [A-Za-z0-9_.-]+, unique; names output files and metrics
  // The TSV. For a synthetic benchmark, where it is written: the output
  // dir's <name>_benchmark.tsv (filled in once the output dir is known).
  std::string path;
  bool synthetic = false;
  SyntheticSource source;
  PromptStyle prompt = PromptStyle::kVlmEvalKit;
};

struct EvalConfig {
  std::string checkpoint;  // a checkpoint root or one step-N directory
  std::vector<BenchmarkSpec> benchmarks;
  std::string output_dir;  // empty: DCVLR_OUTPUT_DIR, else the cwd
  int batch_size = 32;
  int max_new_tokens = 16;
  int64_t seed = 0;
  int num_threads = 0;         // intra-op threads; 0: 1 on CPU, 4 on CUDA
  std::string dtype = "auto";  // auto (bf16 on CUDA, fp32 on CPU), fp32, bf16
  int64_t max_samples = 0;     // > 0: only the first N rows of each benchmark
};

// Parses a config object. Relative `checkpoint` and benchmark paths resolve
// against `base_dir` (the config file's directory). Errors name the key path
// (e.g. "benchmarks[1].path: expected a string"); unknown keys are warnings.
bool ParseEvalConfig(const nlohmann::json& j, const std::string& base_dir,
                     EvalConfig* out, std::string* error,
                     std::vector<std::string>* warnings);

// Reads and parses a config file; JSON syntax errors name line and column.
bool LoadEvalConfigFile(const std::string& path, EvalConfig* out,
                        std::string* error, std::vector<std::string>* warnings);

}  // namespace dcvlr::eval

#endif  // DCVLR_WORKER_EVAL_CONFIG_H_
