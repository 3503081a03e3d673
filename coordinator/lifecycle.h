// The job state machine (docs/architecture.md "The job lifecycle") as pure
// functions: which transitions are legal, how an ended attempt is
// classified, and what the job does next.
#ifndef DCVLR_COORDINATOR_LIFECYCLE_H_
#define DCVLR_COORDINATOR_LIFECYCLE_H_

#include <algorithm>
#include <cstdint>
#include <string>

#include "common/process_contract.h"
#include "dcvlr/v1/job.pb.h"

namespace dcvlr {

bool IsLegalTransition(v1::JobState from, v1::JobState to);

// SCHEDULED or RUNNING: the job has an attempt that holds GPUs.
inline bool IsActive(v1::JobState state) {
  return state == v1::JOB_STATE_SCHEDULED || state == v1::JOB_STATE_RUNNING;
}

// The job's latest attempt, or null before its first.
inline v1::Attempt* CurrentAttempt(v1::Job& job) {
  if (job.attempts_size() == 0) return nullptr;
  return job.mutable_attempts(job.attempts_size() - 1);
}

// Whether a node list of an attempt (ordered, started, exited) names `node`.
inline bool Lists(const google::protobuf::RepeatedPtrField<std::string>& nodes,
                  const std::string& node) {
  return std::find(nodes.begin(), nodes.end(), node) != nodes.end();
}

enum class AttemptOutcome {
  kSucceeded,
  kCancelled,
  // Stopped by the coordinator, node lost, or exit 75: not the user's fault.
  kPreempted,
  kFailed,
};

// Classifies an attempt whose nodes have all exited.
//   1. A cancel the user asked for wins: CANCELLED. Running over the time
//      limit is a failure.
//   2. A lost node means the attempt did not get to finish: preempted.
//   3. Every node exited 0: succeeded.
//   4. Exit 75, or a stop order the coordinator gave: preempted.
//   5. Anything else is the user's failure.
AttemptOutcome ClassifyAttempt(const v1::Job& job, const v1::Attempt& attempt);

struct NextStep {
  v1::JobState state;  // SUCCEEDED, FAILED, CANCELLED or PENDING (requeue)
  std::string reason;
  int64_t not_before_ms = 0;  // for PENDING: when the next attempt may start
  bool counts_as_failure = false;
};

// What the job does after an attempt with `outcome`. Preemptions requeue
// while attempts remain; user failures requeue only `retry.on_failure` times.
// The backoff doubles per attempt from retry.backoff_s up to `max_backoff_s`
// and is spread by +-20% with `jitter` (uniform in [0, 1)) so that jobs that
// failed together do not return together. An attempt that lost its node or
// that the coordinator stopped (drain, preemption) is requeued at once: the
// cluster, not the job, ended it.
NextStep DecideNext(const v1::Job& job, const v1::Attempt& attempt,
                    AttemptOutcome outcome, int64_t now_ms,
                    double max_backoff_s, double jitter = 0.5);

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_LIFECYCLE_H_
