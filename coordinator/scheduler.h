// Scheduling policy: a pure function from a snapshot of the cluster to
// placement decisions. It does no IO and reads no clock; the coordinator core
// builds the snapshot and applies the decisions.
#ifndef DCVLR_COORDINATOR_SCHEDULER_H_
#define DCVLR_COORDINATOR_SCHEDULER_H_

#include <cstdint>
#include <string>
#include <vector>

namespace dcvlr {

struct PendingJob {
  std::string id;
  int priority = 50;
  int64_t seq = 0;  // submission order
  int nodes = 1;
  int gpus_per_node = 0;
};

struct NodeSnapshot {
  std::string name;
  int total_gpus = 0;
  std::vector<int> free_gpus;  // indices, ascending
};

struct SchedulerInput {
  std::vector<PendingJob> queue;  // any order
  std::vector<NodeSnapshot> nodes;  // schedulable nodes only
  int64_t now_ms = 0;
};

struct NodePlacement {
  std::string node;
  std::vector<int> gpus;
};

struct Placement {
  std::string job_id;
  std::vector<NodePlacement> nodes;  // index = node rank
};

struct Waiting {
  std::string job_id;
  std::string reason;
};

struct SchedulerDecisions {
  std::vector<Placement> placements;
  std::vector<Waiting> waiting;
};

class SchedulingPolicy {
 public:
  virtual ~SchedulingPolicy() = default;
  virtual SchedulerDecisions Schedule(const SchedulerInput& input) const = 0;
};

// First fit, in order of priority (high first) then submission:
//   1. Sort the queue by (priority desc, seq asc).
//   2. For each job, take the first `nodes` distinct nodes (in snapshot
//      order) that each have `gpus_per_node` free GPUs, lowest indices first.
//   3. If fewer such nodes exist the job waits; nothing is placed partially.
class FirstFitPolicy : public SchedulingPolicy {
 public:
  SchedulerDecisions Schedule(const SchedulerInput& input) const override;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_SCHEDULER_H_
