// Scheduling policy: a pure function from a snapshot of the cluster (queue,
// nodes, running attempts, usage, configuration, now) to decisions (place
// these jobs on these GPUs, preempt these attempts, hold these reservations).
// It does no IO and reads no clock; the coordinator core builds the snapshot
// and applies the decisions. The policy keeps no state between passes:
// reservations are recomputed each pass from the same inputs, so they hold
// as long as the inputs do. (A thread keeps the memory of its last pass's
// working arrays for the next one; no value carries over.)
#ifndef DCVLR_COORDINATOR_SCHEDULER_H_
#define DCVLR_COORDINATOR_SCHEDULER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/cluster_config.h"
#include "coordinator/fair_share.h"

namespace dcvlr {

// A job waiting to start. The first five fields are what the core has always
// filled; the rest default to "unknown".
struct PendingJob {
  std::string id;
  int priority = 50;  // 0..100
  int64_t seq = 0;    // submission order; the last tie-break
  int nodes = 1;
  int gpus_per_node = 0;
  // When it was submitted (aging counts from here; kept across requeues,
  // so that the queue in seq order is also in submit order); 0: unknown, no
  // aging.
  int64_t submit_ms = 0;
  // 0: none. Backfill trusts limits: the core must stop an attempt at
  // start + limit. A job without one is never backfilled ahead of a
  // reservation on the same node.
  int64_t time_limit_ms = 0;
  std::string user;   // "" counts as a user of its own
  std::string group;  // used only when the config names no group
  // (The fields a pass reads of every job come first, in as few cache
  // lines as they fit.)
};

struct NodeSnapshot {
  std::string name;
  int total_gpus = 0;
  std::vector<int> free_gpus;  // indices, ascending
  // Locality domain per GPU index (gpu_domain[i] for GPU i): GPUs with equal
  // values share the fast path (an NVLink island, else a NUMA node / PCIe
  // switch). Empty when the agent reports no topology.
  std::vector<int> gpu_domain;
};

struct NodePlacement {
  std::string node;
  std::vector<int> gpus;
  // The node's position in SchedulerInput::nodes when the caller knows it
  // (the policy fills it in its placements, so a caller that keeps its
  // snapshot between passes passes it back for free); -1: found by name.
  // A stale index (its node has another name) is found by name too.
  int node_index = -1;
};

// An attempt that holds GPUs (SCHEDULED or RUNNING, or stopping).
struct RunningAttempt {
  std::string job_id;
  int attempt = 0;
  std::string user;
  std::string group;
  int priority = 50;
  std::vector<NodePlacement> placements;
  int64_t submit_ms = 0;      // the PendingJob's submit_ms when it was placed
  int64_t started_ms = 0;     // when it was placed
  int64_t time_limit_ms = 0;  // 0: none (never ends by itself)
  int64_t last_checkpoint_ms = 0;  // last complete checkpoint; 0: none yet
  // A stop was already sent (preempted, cancelled, over its limit): its GPUs
  // come free by stop_deadline_ms (0: now + the default grace) and it is
  // never chosen as a victim again.
  bool stopping = false;
  int64_t stop_deadline_ms = 0;
};

struct SchedulerInput {
  // Any order; in (submit_ms, seq) order (the core's, when submit_ms is the
  // submission time) the pass takes time linear in the queue's length.
  std::vector<PendingJob> queue;
  std::vector<NodeSnapshot> nodes;  // schedulable nodes only
  int64_t now_ms = 0;
  std::vector<RunningAttempt> running;
  Usage usage;  // decayed GPU-seconds as of about now_ms (UsageLedger)
  // Null: ClusterConfig's defaults (equal shares, no quotas, no preemption).
  std::shared_ptr<const ClusterConfig> config;
  // Whether to explain the queue: order every pending job and give each its
  // reason for waiting (SchedulerDecisions::queue and reasons), which only
  // people read (`dcvlrctl queue`, `describe`). Without, the decisions are
  // the same (placements, preemptions, reservations, fair shares), and the
  // pass stops reading the ordered queue as soon as no later job can change
  // them.
  bool explain = true;
};

struct Placement {
  std::string job_id;
  std::vector<NodePlacement> nodes;  // index = node rank
};

// Stop this attempt (SIGTERM, grace, SIGKILL) and requeue its job; the
// attempt should be reported with stopping = true until its GPUs are free.
struct Preemption {
  std::string job_id;
  int attempt = 0;
  std::string for_job_id;  // the job that needs its GPUs
  std::string reason;      // for the victim's events
};

// `job_id` may start on `nodes` (gpus_per_node each) at start_ms; no job
// placed in this pass ends later than that on those nodes' reserved GPUs.
struct Reservation {
  std::string job_id;
  int64_t start_ms = 0;
  std::vector<std::string> nodes;
  int gpus_per_node = 0;
};

// One pending job in queue order, for `dcvlrctl queue` / `describe`. The
// indices refer to the input the decisions were made from, and to the
// decisions' own tables, so that a pass over a long queue copies no strings.
struct QueueEntry {
  int job = 0;                    // index into SchedulerInput::queue
  int account = 0;                // index into SchedulerDecisions::fair_shares
  double effective_priority = 0;  // priority + aging points
  int reason = -1;  // why it waits: index into reasons; -1: placed
};

struct SchedulerDecisions {
  std::vector<Placement> placements;
  std::vector<Preemption> preemptions;
  std::vector<Reservation> reservations;
  // Every pending job, in order; empty unless the input asked to explain.
  std::vector<QueueEntry> queue;
  // Distinct reasons for waiting ("waiting for 2 nodes with 8 free GPUs"),
  // shared by every job that waits for the same one; empty unless the input
  // asked to explain.
  std::vector<std::string> reasons;
  std::vector<FairShare> fair_shares;  // users with work, usage or config
};

class SchedulingPolicy {
 public:
  virtual ~SchedulingPolicy() = default;
  virtual SchedulerDecisions Schedule(const SchedulerInput& input) const = 0;
};

// The lab cluster's policy. Stateless and thread-compatible: Schedule() is
// const and may run concurrently on different inputs.
//
//   1. Accounts: each job's user belongs to the group the config names (else
//      the job's group, else "default"); fair-share factors come from the
//      usage (fair_share.h). GPUs in use per user and group come from the
//      running attempts.
//   2. Order: by tier, high first: the highest priority among pending jobs
//      that the job's priority plus aging (min(aging max, aging per hour ×
//      hours waited)) reaches, at least its own. So aging lifts a job into
//      higher priorities' tier without reordering it among its peers.
//      Within a tier: the user's fair-share factor, high first; then
//      submit time, then seq.
//   3. Cluster view: free GPUs per node now, and when GPUs come free later:
//      stopping attempts at their stop deadline, attempts with a time limit
//      at start + limit. A job without a time limit holds its GPUs forever.
//   4. Each job in order:
//      a. Quota: if its GPUs would take its user or group past max_gpus, it
//         waits ("waiting: group vision at quota 16/16 GPUs") and takes
//         nothing else in this pass.
//      b. Placement: `nodes` distinct nodes, all or nothing, chosen best-fit
//         (fewest free GPUs that suffice, so whole nodes stay whole), among
//         nodes where the job would not delay a reservation: it ends (now +
//         time limit) before the reserved start, or leaves enough GPUs
//         free for it. GPUs within a node: the fullest-fitting locality
//         domain, else the fewest domains, lowest indices first.
//      c. Otherwise, with preemption on, when the job would not start
//         within the default grace anyway: victims among running attempts
//         of strictly lower priority whose aged priority when they started
//         was below the job's tier, not already stopping, chosen per node
//         to lose the least work (GPU-seconds since their last checkpoint),
//         then to be fewest; nodes cheapest first; victims that turn out
//         redundant are dropped. Nothing is preempted unless the job fits
//         once they stop. Victims count as stopping for the rest of the pass.
//      d. A blocked job that preempted, or one of the first max_reservations
//         blocked jobs, reserves the nodes where it can start earliest;
//         later jobs (step b) must not delay it.
//   5. Unless asked to explain, the pass stops at the first job after
//      which no later one can change a decision: no reservation is left to
//      make, with preemption on no later job has a higher priority than a
//      running attempt that is not stopping, and for every shape (nodes,
//      GPUs per node) still waiting, neither its job with the shortest
//      time limit fits now (4b) nor do enough nodes come free for it
//      within the default grace (4d). Once no reservation is left to make
//      and no later job could preempt, the cluster only fills for the rest
//      of the pass, so a shape found unable to decide never will, and the
//      jobs of that shape are passed over. Decisions are then the same as
//      those of a pass that explains.
//   No loops: only attempts that rank below the job (lower priority, and
//   lower aged priority when they started) are preempted, so a requeued
//   victim cannot outrank the job and take its GPUs back; and a job whose
//   victims are stopping waits for them (its reservation covers their
//   GPUs) instead of choosing more.
class LabPolicy : public SchedulingPolicy {
 public:
  SchedulerDecisions Schedule(const SchedulerInput& input) const override;
};

// The name main.cc and core_test.cc use.
using FirstFitPolicy = LabPolicy;

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_SCHEDULER_H_
