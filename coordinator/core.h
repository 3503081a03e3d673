// The coordinator's core: applies clients' requests, agents' reports and
// the scheduling policy's decisions to the cluster's state, and keeps that
// state durable.
//
// It coordinates parts that each own one concern:
//   JobTable        every job, the live index, lookups by id and name
//                   (job_table.h);
//   NodeRegistry    agents' sessions (the fencing epochs), liveness and GPU
//                   holds (node_registry.h);
//   ResolveSpec, SubmitLimiter
//                   a job file checked and resolved against the cluster,
//                   and the submit limits (submission.h);
//   BuildSchedulerInput, QueueView
//                   the snapshot a pass decides on and the queue it shows
//                   (scheduler_snapshot.h);
//   GroupCommit     durability: changes batched and written by one thread
//                   with the mutex released (group_commit.h).
// core.cc holds the client API, recovery and the periodic work;
// core_attempts.cc the agents' sessions and the attempt state machine.
//
// It knows nothing of gRPC: the services translate requests into calls here
// and agents are reached through the AgentChannel interface. Time comes from
// an injected clock, so tests drive it with a fake clock and call Tick()
// themselves.
//
// Thread-safety: every public method is safe to call from any thread; one
// mutex guards all state.
//
// Durability: a change is made in memory under the mutex and its record
// joins GroupCommit's pending batch; the method releases the mutex and
// waits until that batch is durable. A method returns (and a client is
// answered) only once its changes are durable; the jobs of a submit join
// the job table only then. Orders to agents leave only once the change
// that calls for them is durable.
//
// A failed write is sticky: the core turns read-only for clients (submit,
// cancel and drain are refused with UNAVAILABLE), no scheduling pass places
// or preempts, and Tick() retries the write; agent reports are still
// applied and join the kept batch, so running jobs run on and no ended
// state is lost. The first write that succeeds ends it.
#ifndef DCVLR_COORDINATOR_CORE_H_
#define DCVLR_COORDINATOR_CORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/job_file.h"
#include "coordinator/agent_channel.h"
#include "coordinator/benchmarks.h"
#include "coordinator/cluster_config.h"
#include "coordinator/fair_share.h"
#include "coordinator/group_commit.h"
#include "coordinator/job_table.h"
#include "coordinator/log_store.h"
#include "coordinator/metric_history.h"
#include "coordinator/node_registry.h"
#include "coordinator/principal.h"
#include "coordinator/scheduler.h"
#include "coordinator/store.h"
#include "coordinator/submission.h"
#include "dcvlr/v1/agent.pb.h"
#include "dcvlr/v1/client.pb.h"

namespace dcvlr {

// What the core reports as it happens, for monitoring (counters and
// histograms that a snapshot cannot reconstruct). Called with the core's
// lock held: implementations must be quick and must not call the core.
class CoreObserver {
 public:
  virtual ~CoreObserver() = default;
  // One scheduling pass over a non-empty queue took `seconds`.
  virtual void OnSchedulePass(double seconds) = 0;
  // A job's first attempt started running `seconds` after its submission.
  virtual void OnJobRunning(double seconds) = 0;
  // An attempt ended as preempted; `reason` is one of node_lost, priority,
  // drain, requeue_exit (exit code 75), stopped.
  virtual void OnPreemption(const std::string& reason) = 0;
  // A job went back to the queue: a preemption reason, or "failure".
  virtual void OnRequeue(const std::string& reason) = 0;
};

// The cluster at one moment, for exporters (coordinator/metrics.h).
struct ClusterSnapshot {
  int64_t now_ms = 0;
  // False while store writes fail (the core is read-only for clients).
  bool store_healthy = true;
  struct Node {
    std::string name;
    v1::NodeState state = v1::NODE_STATE_UNSPECIFIED;  // DRAINED if drained
    std::string address;
    std::string metrics_address;  // HOST:PORT, host filled in; or empty
    int gpus_total = 0;
    std::map<int, std::string> gpu_jobs;  // GPU index -> job id holding it
  };
  std::vector<Node> nodes;
  std::map<v1::JobState, int> jobs_by_state;
  struct Pending {
    int jobs = 0;
    int gpus = 0;
    int64_t oldest_submit_ms = 0;
  };
  std::map<std::pair<std::string, int>, Pending> pending;  // (user, priority)
  struct JobLabels {
    std::string id;
    std::string name;
    std::string user;
    v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
    int attempt = 0;
    int failures = 0;
  };
  // SCHEDULED and RUNNING jobs, and pending jobs that have run before.
  std::vector<JobLabels> active;
  // The most recently submitted jobs that ended, newest first (bounded by
  // the Snapshot() argument).
  std::vector<JobLabels> recently_ended;
};

struct CoreOptions {
  // Milliseconds since the epoch.
  std::function<int64_t()> now_ms;
  // Uniform in [0, 1), for retry jitter; default: a fixed midpoint.
  std::function<double()> random;
  // A node silent (or disconnected) this long is lost, and its attempts are
  // requeued.
  // Must exceed an agent's lease plus its stop grace plus one heartbeat
  // interval, so that a cut-off agent has stopped its processes before they
  // are placed elsewhere (4 s + 2 s + 1 s < 8 s by default).
  int64_t node_timeout_ms = 8000;
  int64_t heartbeat_interval_ms = 1000;
  double max_backoff_s = 300;
  // Grace given to processes stopped because a peer node failed.
  double peer_failure_grace_s = 10;
  // A directory every node mounts (a shared file system). When set, a job
  // without checkpoint_dir gets <checkpoint_root>/<job id>, so that every
  // attempt, on whichever node, resumes from the same checkpoints.
  std::string checkpoint_root;
  // How often the fair-share usage is written to the store (with a pass's
  // charge, at most this often): a restart forgets at most this much of it.
  int64_t usage_save_interval_ms = 60000;
  // Users, groups, shares, quotas, preemption; null: the defaults (equal
  // shares, no quotas, no preemption).
  std::shared_ptr<const ClusterConfig> cluster_config;
  // Job metric history (not owned; may be null): agents' relay offsets go
  // into their registration acks, and ended jobs are reported to it.
  MetricHistory* metric_history = nullptr;
  // Not owned; may be null.
  CoreObserver* observer = nullptr;
  // A monotonic clock in nanoseconds, for measuring scheduling passes; null:
  // not measured.
  std::function<int64_t()> steady_ns;
  // The benchmarks eval jobs may name.
  BenchmarkRegistry benchmarks = DefaultBenchmarks();
  // A scheduling pass explains the queue (orders every pending job and gives
  // each its reason, which costs about as much as deciding) only when this
  // long passed since the last explanation; Queue() and GetJob() of a
  // pending job explain a pass that did not, from its own snapshot. 0:
  // every pass explains.
  int64_t explain_interval_ms = 1000;
};

// What a submitted file became: one job per YAML document.
struct SubmitResult {
  std::vector<v1::Job> jobs;
  std::vector<std::string> warnings;
};

// An audit record of `who` doing `action` to `target`: "ok" or the
// refusal. Its time is set when it joins a batch.
v1::AuditRecord MakeAuditRecord(const Principal& who, const std::string& action,
                                const std::string& target,
                                const absl::Status& outcome);

class Core {
 public:
  Core(CoreOptions options, std::unique_ptr<Store> store, LogStore* logs,
       std::unique_ptr<SchedulingPolicy> policy);
  // Writes what is still pending (one try) and stops the writer.
  ~Core();

  // Loads jobs, nodes and fair-share usage from the store. Nodes start
  // disconnected: their agents have node_timeout_ms to reconnect before
  // their attempts count as lost. Usage decays over the time the
  // coordinator was down, but that time is not charged to anyone.
  absl::Status Recover();

  // ---- Client API ----
  // Every document of the file is checked, then all are stored in one
  // transaction (or, with `dry_run`, none). A document may name the jobs of
  // earlier documents in `after:` and `model.from`.
  // The jobs are `who`'s: names in the file resolve within their jobs, a
  // priority above their max_priority is refused (not an admin's), and
  // their quotas and submit limits apply.
  absl::StatusOr<SubmitResult> SubmitFile(const Principal& who,
                                          const std::string& source_name,
                                          const std::string& source,
                                          bool dry_run,
                                          const JobFileOptions& options = {});
  // The same, for a user who is not an admin.
  absl::StatusOr<SubmitResult> SubmitFile(const std::string& user,
                                          const std::string& source_name,
                                          const std::string& source,
                                          bool dry_run,
                                          const JobFileOptions& options = {}) {
    return SubmitFile(Principal::User(user), source_name, source, dry_run,
                      options);
  }
  // SubmitFile for a file of one job.
  absl::StatusOr<v1::Job> Submit(const Principal& who,
                                 const std::string& source_name,
                                 const std::string& source, bool dry_run);
  // The same, for a user who is not an admin.
  absl::StatusOr<v1::Job> Submit(const std::string& user,
                                 const std::string& source_name,
                                 const std::string& source, bool dry_run) {
    return Submit(Principal::User(user), source_name, source, dry_run);
  }
  // `ref` is what `user` means by it (JobTable::Resolve): a job id, a name
  // of their own jobs, or OWNER/NAME. A pending job's reason is as of the
  // last scheduling pass (see Queue()).
  absl::StatusOr<v1::Job> GetJob(const std::string& ref,
                                 const std::string& user = "");
  // Newest first, from below request.page_token (a job id; empty: the
  // newest). Stops at request.limit jobs, or once the jobs taken reach
  // `max_bytes` serialized (at least one is taken); `next_page_token` then
  // gets the last job's id.
  std::vector<v1::Job> ListJobs(const v1::ListJobsRequest& request,
                                std::string* next_page_token = nullptr,
                                size_t max_bytes = SIZE_MAX) const;
  // Refused (PERMISSION_DENIED) for another user's job unless `who` is an
  // admin.
  absl::StatusOr<v1::Job> Cancel(const std::string& ref, const Principal& who);
  absl::StatusOr<v1::Job> Cancel(const std::string& ref,
                                 const std::string& user) {
    return Cancel(ref, Principal::User(user));
  }
  // Waits until the job's version passes `version` or `timeout` passes, and
  // returns the job as it is then.
  absl::StatusOr<v1::Job> AwaitChange(const std::string& id, int64_t version,
                                      absl::Duration timeout) const;
  std::vector<v1::Node> ListNodes() const;
  // With `evict`, the attempts on a drained node are stopped and requeued.
  // Whether `who` may is the caller's to decide; the change is audited as
  // theirs.
  absl::StatusOr<v1::Node> SetDrained(
      const std::string& node, bool drained, bool evict = false,
      const Principal& who = Principal::User("coordinator", true));

  // Adds `record` to the audit trail (its time set now if unset), durable
  // with the next batch; for what is refused or done outside the core
  // (authentication, registrations, reloads). Submits, cancels and drains
  // audit themselves, in the batch of their change.
  void Audit(v1::AuditRecord record);

  // ---- Agent API ----
  // Registers (or re-registers) an agent. Sends the RegisterAck, and any
  // stop orders that reconciling its running attempts calls for, on
  // `channel`. Returns the session id that later calls must give.
  // ALREADY_EXISTS while another agent holds the name: its stream is open
  // and it was heard from within three heartbeat intervals. (An agent that
  // restarted or reconnected finds its old stream closed, or silent, and
  // takes over.)
  absl::StatusOr<int64_t> RegisterAgent(const v1::RegisterRequest& request,
                                        const std::string& peer_host,
                                        std::shared_ptr<AgentChannel> channel);
  // Records a sign of life and answers it on the node's channel.
  void OnHeartbeat(const std::string& node, int64_t session);
  // Records a sign of life without answering it (log chunks).
  void OnActivity(const std::string& node, int64_t session);
  // Refused (and not applied) unless the attempt was placed on `node`:
  // NOT_FOUND for an attempt the coordinator does not know,
  // PERMISSION_DENIED for one placed elsewhere.
  absl::Status OnAttemptUpdate(const std::string& node, int64_t session,
                               const v1::AttemptUpdate& update);
  // OK if attempt `attempt` of `job_id` was placed on `node` and, for
  // `rank` >= 0, `rank` is one of that node's ranks (a log's); else the
  // refusal as OnAttemptUpdate gives it.
  absl::Status CheckPlaced(const std::string& node, const std::string& job_id,
                           int attempt, int rank = -1) const;
  void OnAgentDisconnected(const std::string& node, int64_t session);

  // Whether the cluster config makes `who` an admin (uid 0 always is).
  bool IsAdmin(const Principal& who) const;

  // Replaces the cluster config (SIGHUP); takes effect at the next pass.
  void SetClusterConfig(std::shared_ptr<const ClusterConfig> config);
  // Replaces the benchmark list (SIGHUP); applies to later submissions.
  void SetBenchmarks(BenchmarkRegistry benchmarks);
  // The queue as of the last scheduling pass that explained it (as_of_ms):
  // its order, every pending job's reason and the fair shares. When the
  // last pass did not explain (CoreOptions::explain_interval_ms), it is
  // explained here from the snapshot it decided on, with the same
  // decisions, so the view is always that of the last pass; GPUs in use
  // per user are counted now. Job reasons shown by ListJobs() may be as old
  // as the last explanation.
  v1::GetQueueResponse Queue();
  // Nodes, GPUs, jobs and the queue now, with at most `ended_jobs` of the
  // most recent ended jobs.
  ClusterSnapshot Snapshot(size_t ended_jobs = 0) const;
  // OK, or the error of the last store write while writes fail (read-only).
  absl::Status StoreStatus() const;

  // Charges usage up to now and writes it to the store at once (a clean
  // shutdown), instead of waiting for usage_save_interval_ms.
  absl::Status SaveUsage();

  // Periodic work: lost nodes, time limits, usage, backoff expiry,
  // dependencies, a scheduling pass. Returns true if something changed.
  bool Tick();

  // Blocks until something may have made Tick() worth calling, or
  // `timeout` passes.
  void AwaitWork(absl::Duration timeout);

 private:
  int64_t Now() const { return options_.now_ms(); }

  // ---- changes (core.cc) ----
  void AddEvent(v1::Job& job, v1::EventType type, const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetState(v1::Job& job, v1::JobState state, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Bumps the job's version and adds its record to the pending batch.
  void Commit(v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Audit() with the mutex held.
  void AuditLocked(v1::AuditRecord record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Refuses a client's change while the store fails.
  absl::Status CheckWritable() const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Waits, without the mutex, until the ticket's changes are durable; a
  // failed write is the read-only error.
  static absl::Status AwaitDurable(const GroupCommit::Ticket& ticket);
  // GroupCommit's report of a written (or failed) batch.
  void OnWritten(std::vector<v1::Job>& submitted, bool ok)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The file's documents as jobs with ids, checked against the cluster.
  absl::StatusOr<SubmitResult> DoSubmitFile(const Principal& who,
                                            const std::string& source_name,
                                            const std::string& source,
                                            bool dry_run,
                                            const JobFileOptions& options)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<v1::Job> DoCancel(const std::string& ref, const Principal& who)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<SubmitResult> ResolveFile(
      const Principal& who, const std::string& source_name,
      const std::vector<ParsedJobFile>& files) ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // ---- periodic work (core.cc) ----
  // Nodes silent past the node timeout are lost; true if any.
  bool LoseSilentNodes() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ResolveDependencies() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops attempts that ran past their job's time_limit_s.
  bool EnforceTimeLimits() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Charges every user the GPU-seconds their attempts held since last time,
  // and queues the totals for the store every usage_save_interval_ms (or
  // now, with `save`).
  void ChargeUsage(bool save = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool SchedulePass() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Applies a pass's preemptions and placements; true if any.
  bool ApplyDecisions(const SchedulerDecisions& decisions, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes queue_ (and pending jobs' reasons) from a pass that explained.
  void ShowQueue(const SchedulerInput& input,
                 const SchedulerDecisions& decisions)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Explains the last pass if it did not explain itself.
  void ExplainLastPass() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Wake() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { work_pending_ = true; }

  // ---- agents and attempts (core_attempts.cc) ----
  // The RegisterAck for an agent: heartbeat interval, and where the relay
  // of each of its attempts' logs and metrics resumes.
  v1::CoordinatorMessage MakeAck(const v1::RegisterRequest& request) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // After a registration: attempts held here that the agent does not run
  // are lost; those it runs that are not current are stopped.
  void Reconcile(const std::string& node, const std::set<AttemptKey>& running)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ApplyUpdate(const std::string& node, int64_t session,
                           const v1::AttemptUpdate& update)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckPlacedLocked(const std::string& node,
                                 const std::string& job_id, int attempt,
                                 int rank) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // A node's processes of the current attempt started.
  void NodeStarted(v1::Job& job, const std::string& node, int master_port)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A new attempt of `job` on `placement`'s nodes, whose GPUs it holds.
  void PlaceAttempt(v1::Job& job, const Placement& placement, int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendStart(v1::Job& job, v1::Attempt& attempt, int node_rank)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendStop(const std::string& node, const AttemptKey& key, double grace_s,
                const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Orders every node of the current attempt that has not exited to stop.
  // With `record`, the stop makes the attempt count as preempted.
  void StopAttempt(v1::Job& job, double grace_s, const std::string& reason,
                   bool record = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records that the attempt's processes on `node` are gone.
  void NodeExited(v1::Job& job, const std::string& node, int exit_code,
                  int signal, bool lost, const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishAttemptIfDone(v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Releases `key`'s GPUs on `node`: the agent reported its processes gone.
  void ReleaseHold(const std::string& node, const AttemptKey& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The current attempt of each job `key` names that is still active on
  // `node` ended as lost (`why`); every hold is released.
  void LoseAttempts(const std::string& node,
                    const std::vector<AttemptKey>& keys, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LoseNode(NodeEntry& node, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job of `key` if `key` is its current, active attempt.
  v1::Job* ActiveJob(const AttemptKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoreOptions options_;
  LogStore* const logs_;
  const std::unique_ptr<SchedulingPolicy> policy_;

  mutable absl::Mutex mu_;
  // Used by Recover(), then only by the writer thread with mu_ released.
  const std::unique_ptr<Store> store_;

  JobTable jobs_ ABSL_GUARDED_BY(mu_);
  NodeRegistry nodes_ ABSL_GUARDED_BY(mu_);
  SubmitLimiter limiter_ ABSL_GUARDED_BY(mu_);
  bool work_pending_ ABSL_GUARDED_BY(mu_) = true;
  std::shared_ptr<const ClusterConfig> config_ ABSL_GUARDED_BY(mu_);
  BenchmarkRegistry benchmarks_ ABSL_GUARDED_BY(mu_);
  UsageLedger ledger_ ABSL_GUARDED_BY(mu_);
  int64_t last_charge_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_usage_save_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_audit_prune_ms_ ABSL_GUARDED_BY(mu_) = 0;
  v1::GetQueueResponse queue_ ABSL_GUARDED_BY(mu_);
  // When the last explanation was made (its pass's clock), if ever.
  std::optional<int64_t> explained_ms_ ABSL_GUARDED_BY(mu_);
  // The last pass's snapshot when that pass did not explain.
  std::optional<SchedulerInput> unexplained_ ABSL_GUARDED_BY(mu_);

  // The config as every call's authorization reads it, without mu_ (which
  // the scheduler holds for whole passes). Lock order: mu_, then roles_mu_.
  mutable absl::Mutex roles_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::shared_ptr<const ClusterConfig> roles_ ABSL_GUARDED_BY(roles_mu_);

  // Last: its writer thread reaches the members above through OnWritten.
  GroupCommit commit_;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_CORE_H_
