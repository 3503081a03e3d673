// Victim selection for checkpoint-aware preemption (LabPolicy step 4c).
// Internal to LabPolicy; lives for one pass and is not thread-safe.
#ifndef DCVLR_COORDINATOR_SCHEDULER_VICTIMS_H_
#define DCVLR_COORDINATOR_SCHEDULER_VICTIMS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "coordinator/scheduler.h"
#include "coordinator/scheduler_book.h"

namespace dcvlr {

class VictimFinder {
 public:
  // `gpus` GPUs of `node` held by running attempt `attempt` (its index in
  // the input).
  struct Holding {
    int node;
    int attempt;
    int gpus;
  };
  struct Choice {
    std::vector<int> nodes;    // where the job goes, `count` of them
    std::vector<int> victims;  // running attempts to stop
  };

  // `aged_priority[i]`: running attempt i's priority plus the aging it had
  // when it started (see LabPolicy).
  void Init(const SchedulerInput& input, int node_count,
            const std::vector<Holding>& holdings,
            std::vector<double> aged_priority);

  // Victims whose stop (by `stop_by_ms`) lets a job of `count` nodes ×
  // `gpus` GPUs, `priority` and queue tier `tier` start on `count` nodes
  // and keep them:
  //   1. Candidates: attempts not stopping, of priority below `priority`
  //      and aged priority below `tier`, i.e. that ranked below the job
  //      when they started (else a requeued victim that aging ranks above
  //      the job would take its GPUs back, and be preempted again).
  //   2. Per node: the fewest GPUs it has free from stop_by_ms on without
  //      the candidates' own releases; the shortfall is covered by the
  //      subset of its candidates that loses the least work (GPU-seconds
  //      since the last checkpoint), then has the fewest members.
  //   3. The `count` cheapest nodes (free ones cost nothing).
  //   4. Victims made redundant by a multi-node victim are dropped, the
  //      costliest first.
  // nullopt when no choice lets the job fit: then nothing is preempted.
  std::optional<Choice> Choose(const ClusterBook& book, int count, int gpus,
                               int priority, int tier,
                               int64_t stop_by_ms) const;

  // Records that `attempt` was told to stop and frees its GPUs in `book`
  // at `stop_by_ms`.
  void MarkStopping(ClusterBook* book, int attempt, int64_t stop_by_ms);

 private:
  bool Candidate(int attempt, int priority, int tier) const {
    return !stopping_[attempt] && priority_[attempt] < priority &&
           aged_priority_[attempt] < tier;
  }

  std::vector<int> node_gpus_;  // total per node
  std::vector<std::vector<Holding>> by_node_;
  std::vector<std::vector<Holding>> by_attempt_;
  std::vector<bool> stopping_;
  std::vector<int> priority_;
  std::vector<double> aged_priority_;
  std::vector<double> lost_gpu_s_;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_SCHEDULER_VICTIMS_H_
