#include "coordinator/lifecycle.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace dcvlr {

using v1::JobState;

bool IsLegalTransition(JobState from, JobState to) {
  switch (from) {
    case v1::JOB_STATE_PENDING:
      return to == v1::JOB_STATE_SCHEDULED || to == v1::JOB_STATE_CANCELLED;
    case v1::JOB_STATE_SCHEDULED:
      return to == v1::JOB_STATE_RUNNING || to == v1::JOB_STATE_PREEMPTED ||
             to == v1::JOB_STATE_FAILED || to == v1::JOB_STATE_CANCELLED ||
             to == v1::JOB_STATE_SUCCEEDED || to == v1::JOB_STATE_PENDING;
    case v1::JOB_STATE_RUNNING:
      return to == v1::JOB_STATE_SUCCEEDED || to == v1::JOB_STATE_FAILED ||
             to == v1::JOB_STATE_CANCELLED || to == v1::JOB_STATE_PREEMPTED ||
             to == v1::JOB_STATE_PENDING;
    case v1::JOB_STATE_PREEMPTED:
      return to == v1::JOB_STATE_PENDING || to == v1::JOB_STATE_FAILED;
    default:
      return false;  // terminal states stay
  }
}

AttemptOutcome ClassifyAttempt(const v1::Job& job, const v1::Attempt& attempt) {
  if (job.cancel_requested()) return AttemptOutcome::kCancelled;
  if (attempt.timed_out()) return AttemptOutcome::kFailed;
  if (attempt.node_lost()) return AttemptOutcome::kPreempted;
  if (attempt.exit_code() == 0 && attempt.signal() == 0) {
    return AttemptOutcome::kSucceeded;
  }
  if (attempt.exit_code() == contract::kExitRequeue ||
      !attempt.stop_reason().empty()) {
    return AttemptOutcome::kPreempted;
  }
  return AttemptOutcome::kFailed;
}

NextStep DecideNext(const v1::Job& job, const v1::Attempt& attempt,
                    AttemptOutcome outcome, int64_t now_ms,
                    double max_backoff_s, double jitter) {
  const v1::RetryPolicy& retry = job.spec().retry();
  const bool attempts_left = attempt.number() < retry.max_attempts();
  const bool ended_by_cluster =
      attempt.node_lost() ||
      (!attempt.stop_reason().empty() && !attempt.timed_out());
  const double backoff_s =
      ended_by_cluster
          ? 0
          : std::min(max_backoff_s,
                     retry.backoff_s() *
                         std::pow(2.0, std::max(0, attempt.number() - 1))) *
                (0.8 + 0.4 * jitter);
  const int64_t not_before = now_ms + static_cast<int64_t>(backoff_s * 1000);
  switch (outcome) {
    case AttemptOutcome::kSucceeded:
      return {v1::JOB_STATE_SUCCEEDED, "all processes exited 0"};
    case AttemptOutcome::kCancelled:
      return {v1::JOB_STATE_CANCELLED,
              absl::StrCat("cancelled by ", job.cancelled_by())};
    case AttemptOutcome::kPreempted:
      if (!attempts_left) {
        return {v1::JOB_STATE_FAILED,
                absl::StrCat(attempt.reason(), "; all ", retry.max_attempts(),
                             " attempts used")};
      }
      return {v1::JOB_STATE_PENDING,
              absl::StrCat(attempt.reason(), "; requeued"), not_before};
    case AttemptOutcome::kFailed: {
      const int failures = job.failures() + 1;
      if (failures <= retry.on_failure() && attempts_left) {
        return {v1::JOB_STATE_PENDING,
                absl::StrCat(attempt.reason(), "; retry ", failures, " of ",
                             retry.on_failure()),
                not_before, true};
      }
      return {v1::JOB_STATE_FAILED, attempt.reason(), 0, true};
    }
  }
  return {v1::JOB_STATE_FAILED, "unknown outcome"};
}

}  // namespace dcvlr
