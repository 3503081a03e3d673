#include "coordinator/lifecycle.h"

#include "gtest/gtest.h"

namespace dcvlr {
namespace {

v1::Job JobWithRetry(int max_attempts, int on_failure, double backoff_s) {
  v1::Job job;
  job.mutable_spec()->mutable_retry()->set_max_attempts(max_attempts);
  job.mutable_spec()->mutable_retry()->set_on_failure(on_failure);
  job.mutable_spec()->mutable_retry()->set_backoff_s(backoff_s);
  return job;
}

v1::Attempt Ended(int number, int exit_code, int signal = 0) {
  v1::Attempt attempt;
  attempt.set_number(number);
  attempt.set_exit_code(exit_code);
  attempt.set_signal(signal);
  attempt.set_reason("why");
  return attempt;
}

TEST(LifecycleTest, TerminalStatesHaveNoWayOut) {
  for (auto terminal : {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED,
                        v1::JOB_STATE_CANCELLED}) {
    for (int to = 0; to <= 7; ++to) {
      EXPECT_FALSE(IsLegalTransition(terminal, v1::JobState(to)));
    }
  }
  EXPECT_TRUE(
      IsLegalTransition(v1::JOB_STATE_PENDING, v1::JOB_STATE_SCHEDULED));
  EXPECT_FALSE(IsLegalTransition(v1::JOB_STATE_PENDING, v1::JOB_STATE_RUNNING));
  EXPECT_TRUE(
      IsLegalTransition(v1::JOB_STATE_RUNNING, v1::JOB_STATE_PREEMPTED));
  EXPECT_TRUE(
      IsLegalTransition(v1::JOB_STATE_PREEMPTED, v1::JOB_STATE_PENDING));
  EXPECT_FALSE(
      IsLegalTransition(v1::JOB_STATE_PREEMPTED, v1::JOB_STATE_RUNNING));
}

TEST(LifecycleTest, ClassifiesExits) {
  v1::Job job;
  EXPECT_EQ(ClassifyAttempt(job, Ended(1, 0)), AttemptOutcome::kSucceeded);
  EXPECT_EQ(ClassifyAttempt(job, Ended(1, 3)), AttemptOutcome::kFailed);
  EXPECT_EQ(ClassifyAttempt(job, Ended(1, -1, 9)), AttemptOutcome::kFailed);
  EXPECT_EQ(ClassifyAttempt(job, Ended(1, 75)), AttemptOutcome::kPreempted);
  v1::Attempt stopped = Ended(1, -1, 15);
  stopped.set_stop_reason("drained");
  EXPECT_EQ(ClassifyAttempt(job, stopped), AttemptOutcome::kPreempted);
  v1::Attempt lost = Ended(1, -1);
  lost.set_node_lost(true);
  EXPECT_EQ(ClassifyAttempt(job, lost), AttemptOutcome::kPreempted);
  job.set_cancel_requested(true);
  EXPECT_EQ(ClassifyAttempt(job, Ended(1, 0)), AttemptOutcome::kCancelled);
}

TEST(LifecycleTest, PreemptionRequeuesWithDoublingBackoffUntilAttemptsSpent) {
  v1::Job job = JobWithRetry(3, 0, 5);
  NextStep first =
      DecideNext(job, Ended(1, 75), AttemptOutcome::kPreempted, 1000, 300);
  EXPECT_EQ(first.state, v1::JOB_STATE_PENDING);
  EXPECT_EQ(first.not_before_ms, 1000 + 5000);
  NextStep second =
      DecideNext(job, Ended(2, 75), AttemptOutcome::kPreempted, 1000, 300);
  EXPECT_EQ(second.not_before_ms, 1000 + 10000);
  NextStep capped =
      DecideNext(job, Ended(2, 75), AttemptOutcome::kPreempted, 1000, 7);
  EXPECT_EQ(capped.not_before_ms, 1000 + 7000);
  NextStep last =
      DecideNext(job, Ended(3, 75), AttemptOutcome::kPreempted, 1000, 300);
  EXPECT_EQ(last.state, v1::JOB_STATE_FAILED);
}

TEST(LifecycleTest, BackoffIsJitteredByTwentyPercent) {
  v1::Job job = JobWithRetry(3, 0, 10);
  EXPECT_EQ(DecideNext(job, Ended(1, 75), AttemptOutcome::kPreempted, 0, 300, 0)
                .not_before_ms,
            8000);
  EXPECT_EQ(
      DecideNext(job, Ended(1, 75), AttemptOutcome::kPreempted, 0, 300, 0.999)
          .not_before_ms,
      11996);
}

TEST(LifecycleTest, AttemptsTheCoordinatorStoppedRequeueWithoutBackoff) {
  v1::Job job = JobWithRetry(3, 0, 60);
  v1::Attempt evicted = Ended(1, 75);
  evicted.set_stop_reason("evicted");
  NextStep next =
      DecideNext(job, evicted, AttemptOutcome::kPreempted, 500, 300);
  EXPECT_EQ(next.state, v1::JOB_STATE_PENDING);
  EXPECT_EQ(next.not_before_ms, 500);
}

TEST(LifecycleTest, LostNodeRequeuesWithoutBackoff) {
  v1::Job job = JobWithRetry(3, 0, 60);
  v1::Attempt lost = Ended(2, -1);
  lost.set_node_lost(true);
  NextStep next = DecideNext(job, lost, AttemptOutcome::kPreempted, 500, 300);
  EXPECT_EQ(next.state, v1::JOB_STATE_PENDING);
  EXPECT_EQ(next.not_before_ms, 500);
}

TEST(LifecycleTest, UserFailuresRetryOnlyOnFailureTimes) {
  v1::Job job = JobWithRetry(5, 1, 0);
  NextStep first =
      DecideNext(job, Ended(1, 3), AttemptOutcome::kFailed, 0, 300);
  EXPECT_EQ(first.state, v1::JOB_STATE_PENDING);
  EXPECT_TRUE(first.counts_as_failure);
  job.set_failures(1);
  NextStep second =
      DecideNext(job, Ended(2, 3), AttemptOutcome::kFailed, 0, 300);
  EXPECT_EQ(second.state, v1::JOB_STATE_FAILED);
  v1::Job no_retry = JobWithRetry(5, 0, 0);
  EXPECT_EQ(
      DecideNext(no_retry, Ended(1, 1), AttemptOutcome::kFailed, 0, 300).state,
      v1::JOB_STATE_FAILED);
}

}  // namespace
}  // namespace dcvlr
