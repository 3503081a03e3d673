// dcvlr-eval: the evaluator.
//
//   dcvlr-eval --config FILE.json
//       Evaluates a dcvlr-train checkpoint on VLMEvalKit-style TSV
//       benchmarks as one rank (torchrun's environment gives the rank and
//       world); exits 0 when done, 75 after SIGTERM, 2 on a bad config, 1 on
//       other errors (bad checkpoint or TSV).
//   dcvlr-eval score --predictions FILE.tsv [--name NAME] [--output FILE]
//       Scores an existing predictions TSV.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/process_contract.h"
#include "worker/eval/config.h"
#include "worker/eval/evaluator.h"
#include "worker/eval/results.h"
#include "worker/trainer/config.h"

namespace {

using namespace dcvlr::eval;

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

void Usage(FILE* out) {
  fprintf(
      out,
      "usage: dcvlr-eval --config FILE.json\n"
      "       dcvlr-eval score --predictions FILE.tsv [--name NAME] "
      "[--output SUMMARY.json]\n"
      "\n"
      "--config: evaluate a dcvlr-train checkpoint on VLMEvalKit-style TSV\n"
      "  benchmarks, greedy decoding; one process per rank (torchrun's\n"
      "  RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT). The config:\n"
      "    {\"model\": {\"checkpoint\": DIR},\n"
      "     \"benchmarks\": [{\"name\": N, \"path\": F.tsv, "
      "\"prompt\": \"auto\"}],\n"
      "     \"output_dir\": DIR, \"batch_size\": 32, \"max_new_tokens\": 16,\n"
      "     \"seed\": 0}\n"
      "  Writes <output_dir>/<name>_predictions.{tsv,json} and\n"
      "  dcvlr_scoring_summary.json; appends metrics to "
      "$DCVLR_METRICS_FILE.\n"
      "  Exit: 0 done, 1 error, 2 bad config, 75 stopped by SIGTERM.\n"
      "score: re-score a predictions TSV (columns index, answer,\n"
      "  prediction, options A.., optional category); prints accuracy per\n"
      "  category and overall, and with --output writes a summary JSON.\n"
      "See worker/eval/README.md.\n");
}

int Score(int argc, char** argv) {
  std::string predictions, name, output;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      Usage(stdout);
      return kExitOk;
    }
    if (i + 1 >= argc) {
      fprintf(stderr, "dcvlr-eval score: %s needs a value\n", a.c_str());
      return kExitBadConfig;
    }
    std::string v = argv[++i];
    if (a == "--predictions")
      predictions = v;
    else if (a == "--name")
      name = v;
    else if (a == "--output")
      output = v;
    else {
      fprintf(stderr, "dcvlr-eval score: unknown argument %s\n", a.c_str());
      return kExitBadConfig;
    }
  }
  if (predictions.empty()) {
    Usage(stderr);
    return kExitBadConfig;
  }
  if (name.empty()) {
    name = std::filesystem::path(predictions).stem().string();
    const std::string suffix = "_predictions";
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      name.resize(name.size() - suffix.size());
  }
  std::vector<PredictionRow> rows;
  bool has_category = false;
  std::string error;
  if (!ReadPredictionsTsv(predictions, &rows, &has_category, &error)) {
    fprintf(stderr, "dcvlr-eval score: %s\n", error.c_str());
    return kExitError;
  }
  std::vector<BenchmarkScore> scores = {
      ScoreRows(name, predictions, has_category, &rows)};
  fputs(BenchmarkReport(scores[0]).c_str(), stdout);
  if (!output.empty() &&
      !WriteFileAtomically(output, DumpJson(SummaryJson(scores), 2) + "\n",
                           &error)) {
    fprintf(stderr, "dcvlr-eval score: %s\n", error.c_str());
    return kExitError;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "score") == 0) return Score(argc, argv);
  std::string config_path;
  switch (dcvlr::trainer::ParseConfigArgs(argc, argv, "dcvlr-eval", Usage,
                                          &config_path)) {
    case dcvlr::trainer::ConfigArgs::kHelpShown:
      return kExitOk;
    case dcvlr::trainer::ConfigArgs::kBad:
      return kExitBadConfig;
    case dcvlr::trainer::ConfigArgs::kRun:
      break;
  }
  // A signal only raises a flag: the ranks agree to stop after their
  // current batch and exit 75.
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  // A launcher may have blocked them; the agent's stop must still arrive.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_UNBLOCK, &stop_signals, nullptr);

  EvalConfig config;
  std::string error;
  std::vector<std::string> warnings;
  const char* rank = std::getenv(dcvlr::contract::kRank);
  const bool leader = !rank || std::atoi(rank) == 0;
  if (!LoadEvalConfigFile(config_path, &config, &error, &warnings)) {
    fprintf(stderr, "dcvlr-eval: config error: %s\n", error.c_str());
    return kExitBadConfig;
  }
  if (leader)
    for (const auto& w : warnings)
      fprintf(stderr, "dcvlr-eval: warning: %s: %s\n", config_path.c_str(),
              w.c_str());
  try {
    return RunEvaluation(config, g_stop);
  } catch (const std::exception& e) {
    fprintf(stderr, "dcvlr-eval: error: %s\n", e.what());
    return kExitError;
  }
}
