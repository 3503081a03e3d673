// Benchmarks in VLMEvalKit's TSV layout, and the prompts built from them.
//
// Columns: `index`, `image` (base64 PNG/PPM, or JPEG where built with
// libjpeg; or a value of at most 64 characters naming another row's `index`
// whose image it shares), `question`, options `A`, `B`, ... (an empty cell
// is an absent option), `answer`, and optionally `category` and `hint`.
// Torch-free.
#ifndef DCVLR_WORKER_EVAL_BENCHMARK_H_
#define DCVLR_WORKER_EVAL_BENCHMARK_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "worker/eval/config.h"
#include "worker/eval/score.h"
#include "worker/trainer/image.h"

namespace dcvlr::eval {

struct BenchmarkItem {
  std::string index;
  std::string question;
  std::string hint;  // empty when absent
  Options options;   // present options only
  std::string answer;
  std::string category;  // empty when the TSV has no category column
  int64_t line = 0;      // where the row starts in the TSV (1-based)
  trainer::Image image;  // resized to the model's input; empty unless kept
};

struct Benchmark {
  BenchmarkSpec spec;
  std::vector<char> option_columns;  // A, B, ... as the header has them
  bool has_category = false;
  bool has_hint = false;
  std::vector<BenchmarkItem> items;
};

// Reads `spec.path`. Every row's image is decoded (so a broken one fails on
// every rank alike), resized to image_size x image_size and kept only where
// keep_image(row) says so. `max_rows` > 0 reads only the first rows. Errors
// name the file, the line and the column.
bool LoadBenchmark(const BenchmarkSpec& spec, int image_size, int64_t max_rows,
                   const std::function<bool(int64_t row)>& keep_image,
                   Benchmark* out, std::string* error);

// Decodes one image cell's bytes (PNG, PPM, JPEG when available).
bool DecodeBenchmarkImage(const std::vector<uint8_t>& bytes,
                          trainer::Image* out, std::string* error);

// The user turn's text for an item (see PromptStyle).
std::string BuildPrompt(const BenchmarkItem& item, PromptStyle style);

}  // namespace dcvlr::eval

#endif  // DCVLR_WORKER_EVAL_BENCHMARK_H_
