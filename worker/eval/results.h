// Predictions, their scores and dcvlr-eval's output files: per benchmark
// `<name>_predictions.tsv` and `<name>_predictions.json`, and
// `dcvlr_scoring_summary.json` shaped like the DCVLR standalone scorer's.
// Torch-free; used by the evaluator and by `dcvlr-eval score`.
#ifndef DCVLR_WORKER_EVAL_RESULTS_H_
#define DCVLR_WORKER_EVAL_RESULTS_H_

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/eval/score.h"

namespace dcvlr::eval {

struct PredictionRow {
  std::string index;
  std::string question;
  Options options;
  std::string answer;
  std::string category;
  std::string prediction;
  ScoreResult score;  // filled by ScoreRows
};

struct Tally {
  int64_t total = 0;
  int64_t hits = 0;
  double accuracy() const { return total > 0 ? double(hits) / total : 0.0; }
};

struct BenchmarkScore {
  std::string name;
  std::string path;  // the benchmark TSV (or the predictions file scored)
  Tally overall;
  std::map<std::string, Tally> categories;  // empty without a category column
  std::map<std::string, int64_t> stages;    // rows decided by each stage
};

// Scores every row in place and tallies them.
BenchmarkScore ScoreRows(const std::string& name, const std::string& path,
                         bool has_category, std::vector<PredictionRow>* rows);

// Writes <dir>/<name>_predictions.tsv (index, question, option columns,
// answer, prediction, category if any) and <dir>/<name>_predictions.json
// (one object per row with its score), each atomically.
bool WritePredictions(const std::string& dir, const std::string& name,
                      const std::vector<char>& option_columns,
                      bool has_category, const std::vector<PredictionRow>& rows,
                      std::string* error);

// Reads a predictions TSV (columns index, answer, prediction, options A..,
// optional question and category). Errors name file, line and column.
bool ReadPredictionsTsv(const std::string& path,
                        std::vector<PredictionRow>* rows, bool* has_category,
                        std::string* error);

// {"benchmark_results": {name: {total_samples, hits, accuracy, categories,
// stage_breakdown, file_path}}, "overall_statistics": {total_benchmarks,
// total_samples, total_hits, overall_accuracy}}; overall is the micro-average.
nlohmann::json SummaryJson(const std::vector<BenchmarkScore>& scores);

// Appends, one JSON object per line: per benchmark eval_accuracy/<name>,
// eval_hits/<name>, eval_total/<name>; then {"eval_accuracy": overall}.
bool AppendMetrics(const std::string& path,
                   const std::vector<BenchmarkScore>& scores,
                   std::string* error);

// "benchmark NAME samples=N hits=H accuracy=A" and per category lines.
std::string BenchmarkReport(const BenchmarkScore& score);
// Micro-average over benchmarks.
Tally Overall(const std::vector<BenchmarkScore>& scores);

bool WriteFileAtomically(const std::string& path, const std::string& content,
                         std::string* error);

// JSON text that never throws on invalid UTF-8 (model output is raw bytes).
std::string DumpJson(const nlohmann::json& j, int indent);

}  // namespace dcvlr::eval

#endif  // DCVLR_WORKER_EVAL_RESULTS_H_
