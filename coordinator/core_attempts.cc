// The core's agent side: agents' sessions and reports, and the attempt
// state machine (placed, ordered to start, started, stopped, exited,
// finished). See core.h.
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "coordinator/core.h"
#include "coordinator/lifecycle.h"

namespace dcvlr {
namespace {

// Why an attempt counted as preempted, as a metric label.
std::string PreemptionReason(const v1::Attempt& attempt) {
  if (attempt.node_lost()) return "node_lost";
  const std::string& why = attempt.stop_reason();
  if (why.rfind("preempted", 0) == 0) return "priority";
  if (why.rfind("evicted", 0) == 0) return "drain";
  if (why.empty() && attempt.exit_code() == contract::kExitRequeue) {
    return "requeue_exit";
  }
  return "stopped";
}

std::string Describe(const std::string& node, const std::vector<int>& gpus) {
  if (gpus.empty()) return node;
  return absl::StrCat(node, "[", absl::StrJoin(gpus, ","), "]");
}

}  // namespace

// ---------------------------------------------------------------- sessions

absl::StatusOr<int64_t> Core::RegisterAgent(
    const v1::RegisterRequest& request, const std::string& peer_host,
    std::shared_ptr<AgentChannel> channel) {
  if (request.name().empty()) {
    return absl::InvalidArgumentError("agent registered without a name");
  }
  absl::ReleasableMutexLock lock(&mu_);
  if (const NodeEntry* live = nodes_.Find(request.name());
      live != nullptr && live->channel != nullptr &&
      Now() - live->last_seen_ms < 3 * options_.heartbeat_interval_ms) {
    return absl::AlreadyExistsError(absl::StrCat(
        "node ", request.name(), " is registered by a live agent at ",
        live->info.address(), " (heard from ", Now() - live->last_seen_ms,
        " ms ago): a second agent of the same name is refused; stop the "
        "other or give this one another --name"));
  }
  NodeEntry& node =
      nodes_.Register(request, peer_host, std::move(channel), Now());
  commit_.Node(node.info);
  // The ack goes first on the new stream, not after the pending batch: it
  // records no change, and every later message to this agent is queued
  // after it.
  node.channel->Send(MakeAck(request));
  const int64_t session = node.session;

  // Exits the agent could not report while it was away.
  for (const v1::AttemptUpdate& update : request.finished()) {
    if (absl::Status s = ApplyUpdate(request.name(), session, update);
        !s.ok()) {
      LOG(WARNING) << "node=" << request.name() << " refused: " << s;
    }
  }
  std::set<AttemptKey> running;
  for (const v1::RunningAttempt& r : request.running()) {
    running.insert({r.job_id(), r.attempt()});
  }
  Reconcile(request.name(), running);
  Wake();
  // A failed write is logged by the writer and retried by Tick(); the
  // agent's running attempts go on meanwhile.
  const GroupCommit::Ticket ticket = commit_.TakeTicket();
  lock.Release();
  AwaitDurable(ticket).IgnoreError();
  return session;
}

v1::CoordinatorMessage Core::MakeAck(const v1::RegisterRequest& request) const {
  v1::CoordinatorMessage message;
  v1::RegisterAck* ack = message.mutable_ack();
  ack->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  MetricHistory* history = options_.metric_history;
  auto metrics_offset = [&](const std::string& job_id, int attempt) {
    v1::MetricsOffset* offset = ack->add_metrics_offsets();
    offset->set_job_id(job_id);
    offset->set_attempt(attempt);
    offset->set_offset(history->Offset(job_id, attempt));
  };
  for (const v1::RunningAttempt& r : request.running()) {
    for (const auto& [rank, size] : logs_->Sizes(r.job_id(), r.attempt())) {
      v1::LogOffset* offset = ack->add_log_offsets();
      offset->set_job_id(r.job_id());
      offset->set_attempt(r.attempt());
      offset->set_rank(rank);
      offset->set_offset(size);
    }
    if (history != nullptr) metrics_offset(r.job_id(), r.attempt());
  }
  if (history != nullptr) {
    // Ended attempts may still have metrics lines to relay.
    for (const v1::AttemptUpdate& update : request.finished()) {
      metrics_offset(update.job_id(), update.attempt());
    }
  }
  return message;
}

void Core::Reconcile(const std::string& name,
                     const std::set<AttemptKey>& running) {
  NodeEntry& node = *nodes_.Find(name);
  // Attempts we think run here but the agent does not have: gone.
  std::vector<AttemptKey> vanished;
  for (const auto& [key, gpus] : node.holds) {
    if (!running.count(key)) vanished.push_back(key);
  }
  LoseAttempts(
      name, vanished,
      absl::StrCat("processes on ", name, " gone when its agent reconnected"));
  // Attempts the agent runs that are not current: fence them off.
  for (const AttemptKey& key : running) {
    if (ActiveJob(key) == nullptr) {
      // Hold nothing new: the GPUs free up when the agent reports the exit.
      node.holds.try_emplace(key);
      SendStop(name, key, 0, "stale attempt");
    }
  }
}

void Core::OnHeartbeat(const std::string& name, int64_t session) {
  absl::MutexLock lock(&mu_);
  NodeEntry* node = nodes_.Current(name, session);
  if (node == nullptr) return;
  node->last_seen_ms = Now();
  if (node->channel != nullptr) {
    v1::CoordinatorMessage pong;
    pong.mutable_heartbeat()->set_time_ms(Now());
    node->channel->Send(pong);
  }
}

void Core::OnActivity(const std::string& name, int64_t session) {
  absl::MutexLock lock(&mu_);
  if (NodeEntry* node = nodes_.Current(name, session)) {
    node->last_seen_ms = Now();
  }
}

void Core::OnAgentDisconnected(const std::string& name, int64_t session) {
  absl::MutexLock lock(&mu_);
  if (nodes_.Disconnect(name, session)) Wake();
}

absl::Status Core::OnAttemptUpdate(const std::string& name, int64_t session,
                                   const v1::AttemptUpdate& update) {
  GroupCommit::Ticket ticket;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    status = ApplyUpdate(name, session, update);
    ticket = commit_.TakeTicket();
  }
  AwaitDurable(ticket).IgnoreError();  // as in RegisterAgent
  return status;
}

absl::Status Core::CheckPlaced(const std::string& node,
                               const std::string& job_id, int attempt,
                               int rank) const {
  absl::ReaderMutexLock lock(&mu_);
  return CheckPlacedLocked(node, job_id, attempt, rank);
}

absl::Status Core::CheckPlacedLocked(const std::string& node,
                                     const std::string& job_id, int attempt,
                                     int rank) const {
  const v1::Job* job = jobs_.Find(job_id);
  if (job == nullptr || attempt < 1 || attempt > job->attempts_size()) {
    return absl::NotFoundError(
        absl::StrCat("no attempt ", attempt, " of job '", job_id, "'"));
  }
  const v1::Attempt& a = job->attempts(attempt - 1);
  const int per_node = std::max(1, job->spec().resources().procs_per_node());
  for (int node_rank = 0; node_rank < a.placements_size(); ++node_rank) {
    if (a.placements(node_rank).node() != node) continue;
    // A node's ranks; a node whose processes could not start logs why as
    // its node rank.
    if (rank < 0 || rank == node_rank || (rank / per_node == node_rank)) {
      return absl::OkStatus();
    }
    return absl::PermissionDeniedError(
        absl::StrCat("rank ", rank, " of job ", job_id, " attempt ", attempt,
                     " is not one of node ", node, "'s"));
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "job ", job_id, " attempt ", attempt, " was not placed on node ", node));
}

absl::Status Core::ApplyUpdate(const std::string& name, int64_t session,
                               const v1::AttemptUpdate& update) {
  NodeEntry* node = nodes_.Current(name, session);
  if (node == nullptr) return absl::OkStatus();  // a stale stream: fenced
  node->last_seen_ms = Now();
  if (absl::Status s =
          CheckPlacedLocked(name, update.job_id(), update.attempt(), -1);
      !s.ok()) {
    // Whatever runs there unplaced must not run: the stop goes only to the
    // node that claims it.
    if (update.phase() == v1::AttemptUpdate::PHASE_STARTED) {
      SendStop(name, {update.job_id(), update.attempt()}, 0, "stale attempt");
    }
    return s;
  }
  VLOG(1) << "node=" << name << " job=" << update.job_id()
          << " attempt=" << update.attempt() << " reports "
          << v1::AttemptUpdate::Phase_Name(update.phase());
  const AttemptKey key{update.job_id(), update.attempt()};
  v1::Job* job = ActiveJob(key);
  switch (update.phase()) {
    case v1::AttemptUpdate::PHASE_EXITED:
      ReleaseHold(name, key);
      if (job == nullptr) return absl::OkStatus();
      NodeExited(*job, name, update.exit_code(), update.signal(),
                 /*lost=*/false, update.message());
      break;
    case v1::AttemptUpdate::PHASE_CHECKPOINT:
      if (job == nullptr) return absl::OkStatus();
      CurrentAttempt(*job)->set_last_checkpoint_ms(Now());
      CurrentAttempt(*job)->set_last_checkpoint_step(update.checkpoint_step());
      break;
    case v1::AttemptUpdate::PHASE_STARTED:
      if (job == nullptr) {
        // Fencing: whatever is not the current attempt must not run.
        SendStop(name, key, 0, "stale attempt");
        return absl::OkStatus();
      }
      if (Lists(CurrentAttempt(*job)->started_nodes(), name)) {
        return absl::OkStatus();
      }
      NodeStarted(*job, name, update.master_port());
      break;
    default:
      return absl::OkStatus();
  }
  Commit(*job);
  return absl::OkStatus();
}

// ---------------------------------------------------------------- attempts

v1::Job* Core::ActiveJob(const AttemptKey& key) {
  v1::Job* job = jobs_.Find(key.job_id);
  if (job == nullptr || job->attempt() != key.attempt ||
      !IsActive(job->state())) {
    return nullptr;
  }
  return job;
}

void Core::PlaceAttempt(v1::Job& job, const Placement& placement, int64_t now) {
  const int number = job.attempt() + 1;
  job.set_attempt(number);
  v1::Attempt* attempt = job.add_attempts();
  attempt->set_number(number);
  attempt->set_scheduled_ms(now);
  std::vector<std::string> where;
  for (const NodePlacement& p : placement.nodes) {
    v1::Placement* out = attempt->add_placements();
    out->set_node(p.node);
    for (int gpu : p.gpus) out->add_gpus(gpu);
    nodes_.Hold(p.node, {job.id(), number}, p.gpus);
    where.push_back(Describe(p.node, p.gpus));
  }
  attempt->set_master_addr(
      nodes_.Find(placement.nodes[0].node)->info.address());
  SetState(job, v1::JOB_STATE_SCHEDULED, "");
  AddEvent(job, v1::EVENT_TYPE_SCHEDULED,
           absl::StrCat("attempt ", number, " on ", absl::StrJoin(where, " ")));
  VLOG(1) << "job=" << job.id() << " attempt=" << number << " placed on "
          << absl::StrJoin(where, " ");
  // Node rank 0 first: the others once it reports its rendezvous port.
  SendStart(job, *attempt, 0);
}

void Core::NodeStarted(v1::Job& job, const std::string& node, int master_port) {
  v1::Attempt* attempt = CurrentAttempt(job);
  attempt->add_started_nodes(node);
  if (attempt->placements(0).node() == node && master_port > 0) {
    attempt->set_master_port(master_port);
    // Node rank 0 has its rendezvous port: the others may start now.
    for (int rank = 1; rank < attempt->placements_size(); ++rank) {
      if (!job.cancel_requested() && attempt->stop_reason().empty()) {
        SendStart(job, *attempt, rank);
      }
    }
  }
  if (attempt->started_nodes_size() != attempt->placements_size() ||
      job.state() != v1::JOB_STATE_SCHEDULED) {
    return;
  }
  attempt->set_started_ms(Now());
  SetState(job, v1::JOB_STATE_RUNNING, "");
  if (options_.observer != nullptr && attempt->number() == 1) {
    options_.observer->OnJobRunning(
        static_cast<double>(Now() - job.submit_time_ms()) / 1000.0);
  }
  std::vector<std::string> where;
  for (const auto& p : attempt->placements()) {
    where.push_back(Describe(p.node(), {p.gpus().begin(), p.gpus().end()}));
  }
  AddEvent(job, v1::EVENT_TYPE_STARTED,
           absl::StrCat("running on ", absl::StrJoin(where, " ")));
}

void Core::SendStart(v1::Job& job, v1::Attempt& attempt, int node_rank) {
  const v1::Placement& placement = attempt.placements(node_rank);
  v1::CoordinatorMessage message;
  v1::StartAttempt* start = message.mutable_start();
  start->set_job_id(job.id());
  start->set_attempt(attempt.number());
  start->set_user(job.user());
  *start->mutable_spec() = job.spec();
  start->set_node_rank(node_rank);
  start->set_num_nodes(attempt.placements_size());
  start->set_master_addr(attempt.master_addr());
  start->set_master_port(attempt.master_port());
  start->mutable_gpus()->CopyFrom(placement.gpus());
  attempt.add_ordered_nodes(placement.node());
  // With no channel the order is lost with the node; the node timeout
  // requeues the attempt.
  const NodeEntry* node = nodes_.Find(placement.node());
  commit_.Send(node != nullptr ? node->channel : nullptr, std::move(message));
}

void Core::SendStop(const std::string& name, const AttemptKey& key,
                    double grace_s, const std::string& reason) {
  const NodeEntry* node = nodes_.Find(name);
  if (node == nullptr || node->channel == nullptr) return;
  v1::CoordinatorMessage message;
  v1::StopAttempt* stop = message.mutable_stop();
  stop->set_job_id(key.job_id);
  stop->set_attempt(key.attempt);
  stop->set_grace_s(grace_s);
  stop->set_reason(reason);
  VLOG(1) << "job=" << key.job_id << " attempt=" << key.attempt
          << " stop ordered on " << name << " (" << reason << ")";
  commit_.Send(node->channel, std::move(message));
}

void Core::StopAttempt(v1::Job& job, double grace_s, const std::string& reason,
                       bool record) {
  v1::Attempt* attempt = CurrentAttempt(job);
  if (attempt == nullptr) return;
  if (record && attempt->stop_reason().empty()) {
    attempt->set_stop_reason(reason);
  }
  if (attempt->stop_ms() == 0) attempt->set_stop_ms(Now());
  for (const std::string& node : attempt->ordered_nodes()) {
    if (!Lists(attempt->exited_nodes(), node)) {
      SendStop(node, {job.id(), attempt->number()}, grace_s, reason);
    }
  }
}

void Core::NodeExited(v1::Job& job, const std::string& node, int exit_code,
                      int signal, bool lost, const std::string& message) {
  v1::Attempt* attempt = CurrentAttempt(job);
  if (attempt == nullptr || Lists(attempt->exited_nodes(), node)) return;
  attempt->add_exited_nodes(node);
  const bool failed = lost || exit_code != 0 || signal != 0;
  if (failed && attempt->reason().empty()) {
    // The first failure explains the attempt.
    attempt->set_exit_code(exit_code);
    attempt->set_signal(signal);
    attempt->set_node_lost(lost);
    std::string why =
        lost ? message
        : signal != 0
            ? absl::StrCat("killed by signal ", signal, " on ", node)
            : absl::StrCat("exited with code ", exit_code, " on ", node);
    if (!lost && !message.empty()) absl::StrAppend(&why, " (", message, ")");
    attempt->set_reason(why);
    AddEvent(job, v1::EVENT_TYPE_EXITED, why);
    // Peers of a failed node cannot go on (their collectives would hang).
    if (attempt->placements_size() > 1) {
      // A stop given only because a peer failed is not a preemption.
      const bool preempts = lost || exit_code == contract::kExitRequeue;
      StopAttempt(job, options_.peer_failure_grace_s,
                  absl::StrCat("peer on ", node, " ended"), preempts);
    }
  } else if (!failed) {
    AddEvent(job, v1::EVENT_TYPE_EXITED,
             absl::StrCat("processes on ", node, " exited 0"));
  }
  FinishAttemptIfDone(job);
}

void Core::FinishAttemptIfDone(v1::Job& job) {
  v1::Attempt* attempt = CurrentAttempt(job);
  if (attempt == nullptr || !IsActive(job.state())) return;
  for (const std::string& node : attempt->ordered_nodes()) {
    if (!Lists(attempt->exited_nodes(), node)) return;
  }
  const bool all_ordered =
      attempt->ordered_nodes_size() == attempt->placements_size();
  // Nodes never told to start (node rank 0 ended first) hold GPUs too.
  for (const v1::Placement& p : attempt->placements()) {
    if (!Lists(attempt->ordered_nodes(), p.node())) {
      ReleaseHold(p.node(), {job.id(), attempt->number()});
    }
  }
  if (!all_ordered && attempt->reason().empty() && !job.cancel_requested()) {
    return;  // still waiting to start the others
  }
  attempt->set_ended_ms(Now());
  const AttemptOutcome outcome = ClassifyAttempt(job, *attempt);
  const NextStep next =
      DecideNext(job, *attempt, outcome, Now(), options_.max_backoff_s,
                 options_.random ? options_.random() : 0.5);
  if (next.counts_as_failure) job.set_failures(job.failures() + 1);
  job.set_exit_code(attempt->exit_code());
  if (outcome == AttemptOutcome::kPreempted) {
    job.set_state(v1::JOB_STATE_PREEMPTED);
  }
  if (options_.observer != nullptr) {
    const std::string why = outcome == AttemptOutcome::kPreempted
                                ? PreemptionReason(*attempt)
                                : "failure";
    if (outcome == AttemptOutcome::kPreempted) {
      options_.observer->OnPreemption(why);
    }
    if (next.state == v1::JOB_STATE_PENDING) options_.observer->OnRequeue(why);
  }
  SetState(job, next.state, next.reason);
  switch (next.state) {
    case v1::JOB_STATE_PENDING:
      job.set_not_before_ms(next.not_before_ms);
      AddEvent(job, v1::EVENT_TYPE_REQUEUED, next.reason);
      break;
    case v1::JOB_STATE_SUCCEEDED:
      AddEvent(job, v1::EVENT_TYPE_SUCCEEDED, next.reason);
      break;
    case v1::JOB_STATE_CANCELLED:
      AddEvent(job, v1::EVENT_TYPE_CANCELLED, next.reason);
      break;
    default:
      AddEvent(job, v1::EVENT_TYPE_FAILED, next.reason);
      break;
  }
}

void Core::ReleaseHold(const std::string& name, const AttemptKey& key) {
  if (nodes_.Release(name, key)) Wake();
}

void Core::LoseAttempts(const std::string& node,
                        const std::vector<AttemptKey>& keys,
                        const std::string& why) {
  for (const AttemptKey& key : keys) {
    if (v1::Job* job = ActiveJob(key)) {
      NodeExited(*job, node, -1, 0, /*lost=*/true, why);
      Commit(*job);
    }
    ReleaseHold(node, key);
  }
}

void Core::LoseNode(NodeEntry& node, const std::string& why) {
  const std::string name = node.info.name();
  LOG(WARNING) << "node=" << name << " lost: " << why;
  LoseAttempts(name, nodes_.MarkLost(node),
               absl::StrCat("node ", name, " lost (", why, ")"));
}

}  // namespace dcvlr
