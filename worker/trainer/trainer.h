// The training loop: data, model, optimizer, gradient reduction, metrics,
// evaluation and checkpoints, for one rank.
#ifndef DCVLR_WORKER_TRAINER_TRAINER_H_
#define DCVLR_WORKER_TRAINER_TRAINER_H_

#include <atomic>
#include <string>

#include "common/process_contract.h"
#include "worker/trainer/config.h"

namespace dcvlr::trainer {

// Exit codes of dcvlr-train: the process contract's. kExitRequeue: stopped
// by SIGTERM, checkpointed.
using contract::kExitBadConfig;
using contract::kExitError;
using contract::kExitOk;
using contract::kExitRequeue;

// Where a run reads and writes, from the agent's environment with fallbacks
// for runs by hand.
struct RunPaths {
  std::string output_dir;  // DCVLR_OUTPUT_DIR, else training.output_dir
  std::string
      checkpoint_dir;  // DCVLR_CHECKPOINT_DIR, else <output_dir>/checkpoints
  std::string
      metrics_file;       // DCVLR_METRICS_FILE, else <output_dir>/metrics.jsonl
  std::string cache_dir;  // DCVLR_CACHE_DIR, else <output_dir>/cache
  std::string job_id;     // DCVLR_JOB_ID, for log lines

  static RunPaths FromEnvironment(const TrainerConfig& config);
};

// Sets the BLAS library's own thread count (ATen's does not reach
// OpenBLAS), when the loaded BLAS has such a call.
void SetBlasThreads(int n);

// Runs training to the end (or until `stop` is set, after which every rank
// finishes its step, a checkpoint is committed and kExitRequeue returned).
// Returns one of the exit codes above.
int RunTraining(const TrainerConfig& config, const RunPaths& paths,
                const std::atomic<bool>& stop);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_TRAINER_H_
