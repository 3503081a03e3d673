// The evaluation run for one rank: load the checkpoint and the benchmarks,
// decode this rank's share of the items, merge every rank's predictions on
// rank 0, score them and write the outputs (see README.md).
//
// Items are cut into batches of batch_size in file order, and batch k runs
// on rank k % world_size: every batch holds the same items whatever the
// world size, so predictions do not depend on it.
#ifndef DCVLR_WORKER_EVAL_EVALUATOR_H_
#define DCVLR_WORKER_EVAL_EVALUATOR_H_

#include <atomic>

#include "common/process_contract.h"
#include "worker/eval/config.h"

namespace dcvlr::eval {

// Exit codes: the process contract's. kExitError: bad checkpoint, bad TSV,
// IO; kExitBadConfig: bad config file or arguments; kExitRequeue: stopped
// by SIGTERM/SIGINT.
using contract::kExitBadConfig;
using contract::kExitError;
using contract::kExitOk;
using contract::kExitRequeue;

// Runs to the end, or returns kExitRequeue soon after `stop` becomes true
// (on every rank: ranks agree on stopping after each batch).
int RunEvaluation(const EvalConfig& config, const std::atomic<bool>& stop);

}  // namespace dcvlr::eval

#endif  // DCVLR_WORKER_EVAL_EVALUATOR_H_
