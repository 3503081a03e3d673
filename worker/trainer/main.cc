// dcvlr-train: the native trainer.
//
//   dcvlr-train --config FILE.json
//       Trains as one rank (torchrun's environment gives the rank and world);
//       exits 0 when done, 75 after a SIGTERM-triggered checkpoint, 2 on a bad
//       config, 1 on other errors.
//   dcvlr-train gen-synthetic --out DIR [--train N] [--test M] [--seed S]
//   [--tsv FILE]
//       Writes the synthetic shapes dataset as DIR/train.jsonl and
//       DIR/test.jsonl, and optionally the test split as a VLMEvalKit TSV.
//   dcvlr-train hf-export ... / hf-forward ... / tokenize ...
//       Hugging Face checkpoints and tokenizers: see hf_commands.h.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "worker/trainer/config.h"
#include "worker/trainer/hf_commands.h"
#include "worker/trainer/synthetic.h"
#include "worker/trainer/trainer.h"

namespace {

using namespace dcvlr::trainer;

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

void Usage(FILE* out) {
  fprintf(out,
          "usage: dcvlr-train --config FILE.json\n"
          "       dcvlr-train gen-synthetic --out DIR [--train N] [--test M] "
          "[--seed S] "
          "[--tsv FILE]\n"
          "       dcvlr-train hf-export --model DIR --out DIR [--dtype "
          "bf16|f16|f32] [--max-shard-size BYTES]\n"
          "       dcvlr-train hf-forward --model DIR --inputs FILE --out FILE "
          "[--device D] [--dtype f32|bf16] [--adamw-step]\n"
          "       dcvlr-train tokenize --tokenizer PATH < lines\n");
}

bool ParseInt(const char* s, long long* out) {
  char* end = nullptr;
  *out = std::strtoll(s, &end, 10);
  return *s && *end == '\0';
}

int GenSynthetic(int argc, char** argv) {
  std::string out, tsv;
  long long train = 2000, test = 500, seed = 1234;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) {
      fprintf(stderr, "dcvlr-train gen-synthetic: %s needs a value\n",
              a.c_str());
      return kExitBadConfig;
    }
    const char* v = argv[++i];
    bool ok = true;
    if (a == "--out")
      out = v;
    else if (a == "--tsv")
      tsv = v;
    else if (a == "--train")
      ok = ParseInt(v, &train) && train >= 0;
    else if (a == "--test")
      ok = ParseInt(v, &test) && test >= 0;
    else if (a == "--seed")
      ok = ParseInt(v, &seed);
    else
      ok = false;
    if (!ok) {
      fprintf(stderr, "dcvlr-train gen-synthetic: bad argument %s %s\n",
              a.c_str(), v);
      return kExitBadConfig;
    }
  }
  if (out.empty() && tsv.empty()) {
    Usage(stderr);
    return kExitBadConfig;
  }
  std::string error;
  if (!out.empty() &&
      (!WriteSyntheticJsonl(out + "/train.jsonl", "train", seed, train,
                            &error) ||
       !WriteSyntheticJsonl(out + "/test.jsonl", "test", seed, test, &error))) {
    fprintf(stderr, "dcvlr-train gen-synthetic: %s\n", error.c_str());
    return kExitError;
  }
  if (!tsv.empty() && !WriteSyntheticTsv(tsv, "test", seed, test, &error)) {
    fprintf(stderr, "dcvlr-train gen-synthetic: %s\n", error.c_str());
    return kExitError;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "gen-synthetic") == 0)
    return GenSynthetic(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "hf-export") == 0)
    return HfExportMain(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "hf-forward") == 0)
    return HfForwardMain(argc, argv);
  if (argc >= 2 && std::strcmp(argv[1], "tokenize") == 0)
    return TokenizeMain(argc, argv);
  std::string config_path;
  switch (ParseConfigArgs(argc, argv, "dcvlr-train", Usage, &config_path)) {
    case ConfigArgs::kHelpShown:
      return kExitOk;
    case ConfigArgs::kBad:
      return kExitBadConfig;
    case ConfigArgs::kRun:
      break;
  }
  TrainerConfig config;
  std::string error;
  std::vector<std::string> warnings;
  const char* rank = std::getenv(dcvlr::contract::kRank);
  const bool leader = !rank || std::atoi(rank) == 0;
  if (!LoadConfigFile(config_path, &config, &error, &warnings)) {
    fprintf(stderr, "dcvlr-train: config error: %s\n", error.c_str());
    return kExitBadConfig;
  }
  if (leader)
    for (const auto& w : warnings)
      fprintf(stderr, "dcvlr-train: warning: %s\n", w.c_str());

  // SIGTERM (the agent's stop, or a preemption) and SIGINT only raise a flag;
  // the loop finishes its step, checkpoints and exits 75.
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  try {
    return RunTraining(config, RunPaths::FromEnvironment(config), g_stop);
  } catch (const std::exception& e) {
    fprintf(stderr, "dcvlr-train: error: %s\n", e.what());
    return kExitError;
  }
}
