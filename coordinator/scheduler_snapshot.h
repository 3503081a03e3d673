// Between the core's tables and the scheduling policy: the snapshot a pass
// decides on, and the queue view (`dcvlrctl queue`) made from a pass that
// explained its decisions.
#ifndef DCVLR_COORDINATOR_SCHEDULER_SNAPSHOT_H_
#define DCVLR_COORDINATOR_SCHEDULER_SNAPSHOT_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "coordinator/cluster_config.h"
#include "coordinator/fair_share.h"
#include "coordinator/job_table.h"
#include "coordinator/node_registry.h"
#include "coordinator/scheduler.h"
#include "dcvlr/v1/client.pb.h"

namespace dcvlr {

// The stop grace of `job`: its own, or the cluster's default.
double StopGrace(const v1::Job& job, const ClusterConfig& config);

// The scheduler's view at `now_ms`:
//   running  every scheduled or running attempt, with the placements of its
//            nodes that have not exited and whether it is being stopped;
//   queue    the pending jobs that may start now (not backing off, every
//            dependency succeeded), oldest first;
//   nodes    the ready, undrained nodes with their free GPUs (those no
//            attempt holds) and GPU topology, when the queue is not empty
//            (a pass over an empty queue decides nothing).
// `explain` is left to the caller.
SchedulerInput BuildSchedulerInput(int64_t now_ms,
                                   std::shared_ptr<const ClusterConfig> config,
                                   Usage usage, const JobTable& jobs,
                                   const NodeRegistry& nodes);

// The ready, undrained nodes as the policy sees them.
std::vector<NodeSnapshot> SchedulableNodes(const NodeRegistry& nodes);

// The queue as an explaining pass left it: every job still pending in its
// order with its reason (which also becomes the job's reason, without a
// store write: reasons are for people), and each user's fair share with the
// GPUs the user holds now.
v1::GetQueueResponse QueueView(const SchedulerInput& input,
                               const SchedulerDecisions& decisions,
                               JobTable& jobs, const NodeRegistry& nodes);

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_SCHEDULER_SNAPSHOT_H_
