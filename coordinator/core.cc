#include "coordinator/core.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_file.h"
#include "common/names.h"
#include "coordinator/lifecycle.h"
#include "coordinator/scheduler_snapshot.h"

namespace dcvlr {

Core::Core(CoreOptions options, std::unique_ptr<Store> store, LogStore* logs,
           std::unique_ptr<SchedulingPolicy> policy)
    : options_(std::move(options)),
      logs_(logs),
      policy_(std::move(policy)),
      store_(std::move(store)),
      commit_(store_.get(), &mu_,
              [this](std::vector<v1::Job>& submitted, bool ok)
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                    OnWritten(submitted, ok);
                  }) {
  absl::MutexLock lock(&mu_);
  config_ = options_.cluster_config != nullptr
                ? options_.cluster_config
                : std::make_shared<const ClusterConfig>();
  ledger_.set_half_life_s(config_->fair_share_half_life_s);
  benchmarks_ = options_.benchmarks;
  absl::MutexLock roles(&roles_mu_);
  roles_ = config_;
}

Core::~Core() { commit_.Stop(); }

void Core::SetBenchmarks(BenchmarkRegistry benchmarks) {
  absl::MutexLock lock(&mu_);
  benchmarks_ = std::move(benchmarks);
}

bool Core::IsAdmin(const Principal& who) const {
  std::shared_ptr<const ClusterConfig> config;
  {
    absl::ReaderMutexLock lock(&roles_mu_);
    config = roles_;
  }
  return config->IsAdmin(who.user, who.uid, who.groups);
}

void Core::SetClusterConfig(std::shared_ptr<const ClusterConfig> config) {
  absl::MutexLock lock(&mu_);
  config_ = config != nullptr ? std::move(config)
                              : std::make_shared<const ClusterConfig>();
  {
    absl::MutexLock roles(&roles_mu_);
    roles_ = config_;
  }
  ledger_.set_half_life_s(config_->fair_share_half_life_s);
  Wake();
}

v1::GetQueueResponse Core::Queue() {
  absl::MutexLock lock(&mu_);
  ExplainLastPass();
  return queue_;
}

absl::Status Core::Recover() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<v1::Job>> jobs = store_->LoadJobs();
  if (!jobs.ok()) return jobs.status();
  absl::StatusOr<std::vector<v1::Node>> nodes = store_->LoadNodes();
  if (!nodes.ok()) return nodes.status();
  absl::StatusOr<Usage> usage = store_->LoadUsage();
  if (!usage.ok()) return usage.status();
  ledger_.Restore(*std::move(usage));
  // Agents get a full node timeout from now to come back.
  for (v1::Node& info : *nodes) nodes_.Restore(std::move(info), Now());
  for (v1::Job& job : *jobs) {
    // GPUs of running attempts stay held until their agents report.
    if (IsActive(job.state()) && job.attempts_size() > 0) {
      const v1::Attempt& attempt = *job.attempts().rbegin();
      for (const v1::Placement& p : attempt.placements()) {
        if (Lists(attempt.exited_nodes(), p.node())) continue;
        nodes_.Hold(p.node(), {job.id(), attempt.number()},
                    std::vector<int>(p.gpus().begin(), p.gpus().end()));
      }
    }
    jobs_.Add(std::move(job));
  }
  Wake();
  return absl::OkStatus();
}

// ---------------------------------------------------------------- changes

void Core::AddEvent(v1::Job& job, v1::EventType type,
                    const std::string& message) {
  v1::JobEvent* event = job.add_events();
  event->set_time_ms(Now());
  event->set_attempt(job.attempt());
  event->set_type(type);
  event->set_message(message);
}

void Core::SetState(v1::Job& job, v1::JobState state,
                    const std::string& reason) {
  jobs_.SetState(job, state, reason);
  if (IsTerminal(state)) {
    job.set_end_time_ms(Now());
    if (options_.metric_history != nullptr) {
      options_.metric_history->JobEnded(job.id());
    }
  }
}

void Core::Commit(v1::Job& job) {
  job.set_version(jobs_.NextVersion());
  commit_.Job(job);
  Wake();
}

namespace {

// What a client hears while store writes fail: UNAVAILABLE with the
// store's error.
absl::Status ReadOnly(const absl::Status& store_error) {
  if (store_error.ok()) return store_error;
  return absl::UnavailableError(absl::StrCat(
      "the coordinator is read-only until its state store accepts writes "
      "again (running jobs go on): ",
      store_error.message()));
}

}  // namespace

absl::Status Core::CheckWritable() const { return ReadOnly(commit_.error()); }

absl::Status Core::AwaitDurable(const GroupCommit::Ticket& ticket) {
  return ReadOnly(GroupCommit::Await(ticket));
}

void Core::OnWritten(std::vector<v1::Job>& submitted, bool ok) {
  // Written or dropped, the submitted jobs are no longer in flight.
  for (const v1::Job& job : submitted) limiter_.Finish(job.user(), 1);
  if (!ok) return;
  for (v1::Job& job : submitted) jobs_.Add(std::move(job));
  if (!submitted.empty()) Wake();
}

absl::Status Core::StoreStatus() const {
  absl::ReaderMutexLock lock(&mu_);
  return commit_.error();
}

// ---------------------------------------------------------------- client API

absl::StatusOr<v1::Job> Core::Submit(const Principal& who,
                                     const std::string& source_name,
                                     const std::string& source, bool dry_run) {
  absl::StatusOr<SubmitResult> result =
      SubmitFile(who, source_name, source, dry_run);
  if (!result.ok()) return result.status();
  if (result->jobs.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": ", result->jobs.size(),
                     " YAML documents; one job was expected here"));
  }
  return result->jobs.front();
}

absl::StatusOr<SubmitResult> Core::ResolveFile(
    const Principal& who, const std::string& source_name,
    const std::vector<ParsedJobFile>& files) {
  const std::string& user = who.user;
  const int max_priority = config_->MaxPriority(user);
  SubmitResult result;
  std::vector<std::string> errors;
  // The cluster config's shared root wins over the flag's.
  const std::string& root = !config_->checkpoint_root.empty()
                                ? config_->checkpoint_root
                                : options_.checkpoint_root;
  int64_t seq = jobs_.next_seq();
  for (const ParsedJobFile& file : files) {
    v1::Job job;
    *job.mutable_spec() = file.spec;
    const SubmitContext context{jobs_, nodes_, benchmarks_, result.jobs, user};
    if (absl::Status s = ResolveSpec(file, context, *job.mutable_spec());
        !s.ok()) {
      errors.push_back(std::string(s.message()));
      continue;
    }
    if (!who.admin && job.spec().priority() > max_priority) {
      errors.push_back(absl::StrCat(
          file.Where("priority"), ": ", job.spec().priority(), " is above ",
          max_priority, ", the most user ", user,
          " may ask (max_priority in the cluster config; an admin may "
          "raise it)"));
      continue;
    }
    result.warnings.insert(result.warnings.end(), file.warnings.begin(),
                           file.warnings.end());
    job.set_user(user);
    job.set_source_name(source_name);
    job.set_state(v1::JOB_STATE_PENDING);
    job.set_submit_time_ms(Now());
    // Ids are what they will be, so that later documents can name the job.
    job.set_id(absl::StrCat("j-", seq++));
    if (job.spec().checkpoint_dir().empty() && !root.empty()) {
      job.mutable_spec()->set_checkpoint_dir(absl::StrCat(root, "/", job.id()));
    }
    result.jobs.push_back(std::move(job));
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  }
  return result;
}

v1::AuditRecord MakeAuditRecord(const Principal& who, const std::string& action,
                                const std::string& target,
                                const absl::Status& outcome) {
  v1::AuditRecord record;
  record.set_principal(who.user);
  record.set_method(who.method);
  record.set_peer(who.peer);
  record.set_action(action);
  record.set_target(target);
  record.set_outcome(
      outcome.ok() ? "ok"
                   : absl::StrCat(absl::StatusCodeToString(outcome.code()),
                                  ": ", outcome.message()));
  return record;
}

void Core::Audit(v1::AuditRecord record) {
  absl::MutexLock lock(&mu_);
  AuditLocked(std::move(record));
}

void Core::AuditLocked(v1::AuditRecord record) {
  if (record.time_ms() == 0) record.set_time_ms(Now());
  commit_.Audit(std::move(record));
}

absl::StatusOr<SubmitResult> Core::SubmitFile(const Principal& who,
                                              const std::string& source_name,
                                              const std::string& source,
                                              bool dry_run,
                                              const JobFileOptions& options) {
  absl::StatusOr<SubmitResult> result =
      DoSubmitFile(who, source_name, source, dry_run, options);
  // A stored submission is audited in its own batch.
  if (!result.ok() && !dry_run) {
    Audit(MakeAuditRecord(who, "submit", source_name, result.status()));
  }
  return result;
}

absl::StatusOr<SubmitResult> Core::DoSubmitFile(const Principal& who,
                                                const std::string& source_name,
                                                const std::string& source,
                                                bool dry_run,
                                                const JobFileOptions& options) {
  const std::string& user = who.user;
  if (user.empty()) return absl::InvalidArgumentError("no user given");
  absl::StatusOr<std::vector<ParsedJobFile>> files =
      ParseJobFiles(source_name, source, options);
  if (!files.ok()) return files.status();

  absl::ReleasableMutexLock lock(&mu_);
  if (!dry_run) {
    if (absl::Status s = CheckWritable(); !s.ok()) return s;
  }
  absl::StatusOr<SubmitResult> result = ResolveFile(who, source_name, *files);
  if (!result.ok()) return result.status();
  if (dry_run) {
    for (v1::Job& job : result->jobs) job.clear_id();
    return result;
  }
  const int64_t count = static_cast<int64_t>(result->jobs.size());
  if (absl::Status s =
          limiter_.Admit(*config_, user, count, jobs_.LiveCount(user), Now());
      !s.ok()) {
    return s;
  }
  const int64_t version = jobs_.NextVersion();
  for (v1::Job& job : result->jobs) {
    AddEvent(job, v1::EVENT_TYPE_SUBMITTED,
             absl::StrCat("submitted by ", user, " from ", source_name));
    job.set_version(version);
  }
  jobs_.AdvanceSeq(jobs_.next_seq() + count);
  // Acknowledge only what is durable: the jobs join the table once their
  // batch is written (and are dropped if it fails, their audit record too).
  std::vector<std::string> ids;
  for (const v1::Job& job : result->jobs) ids.push_back(job.id());
  v1::AuditRecord audit = MakeAuditRecord(
      who, "submit",
      absl::StrCat(absl::StrJoin(ids, ","), " from ", source_name),
      absl::OkStatus());
  audit.set_time_ms(Now());
  commit_.Submitted(result->jobs, std::move(audit));
  const GroupCommit::Ticket ticket = commit_.TakeTicket();
  lock.Release();
  if (absl::Status s = AwaitDurable(ticket); !s.ok()) return s;
  return result;
}

absl::StatusOr<v1::Job> Core::GetJob(const std::string& ref,
                                     const std::string& user) {
  {
    absl::ReaderMutexLock lock(&mu_);
    const v1::Job* job = jobs_.Resolve(ref, user);
    if (job == nullptr) {
      return absl::NotFoundError(absl::StrCat("no job '", ref, "'"));
    }
    if (job->state() != v1::JOB_STATE_PENDING || !unexplained_) return *job;
  }
  // A pending job's reason comes from the last pass's explanation.
  absl::MutexLock lock(&mu_);
  ExplainLastPass();
  const v1::Job* job = jobs_.Resolve(ref, user);
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("no job '", ref, "'"));
  }
  return *job;
}

std::vector<v1::Job> Core::ListJobs(const v1::ListJobsRequest& request,
                                    std::string* next_page_token,
                                    size_t max_bytes) const {
  absl::ReaderMutexLock lock(&mu_);
  return jobs_.List(request, next_page_token, max_bytes);
}

absl::StatusOr<v1::Job> Core::Cancel(const std::string& ref,
                                     const Principal& who) {
  absl::StatusOr<v1::Job> job = DoCancel(ref, who);
  if (!job.ok()) Audit(MakeAuditRecord(who, "cancel", ref, job.status()));
  return job;
}

absl::StatusOr<v1::Job> Core::DoCancel(const std::string& ref,
                                       const Principal& who) {
  const std::string& user = who.user;
  absl::ReleasableMutexLock lock(&mu_);
  if (absl::Status s = CheckWritable(); !s.ok()) return s;
  v1::Job* job = jobs_.Resolve(ref, user);
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("no job '", ref, "'"));
  }
  if (!who.Owns(job->user())) {
    return absl::PermissionDeniedError(
        absl::StrCat("job ", job->id(), " is ", job->user(), "'s; ", user,
                     " may cancel only their own jobs"));
  }
  if (IsTerminal(job->state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job->id(), " already ended ", JobStateName(job->state())));
  }
  if (job->cancel_requested()) return *job;
  AuditLocked(MakeAuditRecord(who, "cancel", job->id(), absl::OkStatus()));
  job->set_cancel_requested(true);
  job->set_cancelled_by(user);
  if (IsActive(job->state())) {
    // CANCELLED once the agents report the processes gone.
    AddEvent(*job, v1::EVENT_TYPE_CANCELLED,
             absl::StrCat("cancel requested by ", user, "; stopping"));
    job->set_reason("cancelling");
    StopAttempt(*job, job->spec().grace_s(),
                absl::StrCat("cancelled by ", user));
    FinishAttemptIfDone(*job);
  } else {
    SetState(*job, v1::JOB_STATE_CANCELLED,
             absl::StrCat("cancelled by ", user));
    AddEvent(*job, v1::EVENT_TYPE_CANCELLED, job->reason());
  }
  Commit(*job);
  const v1::Job out = *job;
  const GroupCommit::Ticket ticket = commit_.TakeTicket();
  lock.Release();
  if (absl::Status s = AwaitDurable(ticket); !s.ok()) return s;
  return out;
}

absl::StatusOr<v1::Job> Core::AwaitChange(const std::string& id,
                                          int64_t version,
                                          absl::Duration timeout) const {
  absl::ReaderMutexLock lock(&mu_);
  auto changed = [this, &id, version]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    const v1::Job* job = jobs_.Find(id);
    return job == nullptr || job->version() > version;
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  const v1::Job* job = jobs_.Find(id);
  if (job == nullptr) return absl::NotFoundError("no job " + id);
  return *job;
}

ClusterSnapshot Core::Snapshot(size_t ended_jobs) const {
  absl::ReaderMutexLock lock(&mu_);
  ClusterSnapshot out;
  out.now_ms = Now();
  out.store_healthy = commit_.error().ok();
  for (const auto& [name, node] : nodes_.nodes()) {
    ClusterSnapshot::Node& n = out.nodes.emplace_back();
    n.name = name;
    n.state = node.shown_state();
    n.address = node.info.address();
    n.metrics_address = node.info.metrics_address();
    n.gpus_total = node.info.gpus_size();
    for (const auto& [key, gpus] : node.holds) {
      for (int gpu : gpus) n.gpu_jobs[gpu] = key.job_id;
    }
  }
  auto labels = [](const v1::Job& job) {
    return ClusterSnapshot::JobLabels{job.id(),      job.spec().name(),
                                      job.user(),    job.state(),
                                      job.attempt(), job.failures()};
  };
  out.jobs_by_state = jobs_.ended_by_state();
  for (const v1::Job* job : jobs_.RecentlyEnded(ended_jobs)) {
    out.recently_ended.push_back(labels(*job));
  }
  for (auto it = jobs_.live().rbegin(); it != jobs_.live().rend(); ++it) {
    const v1::Job& job = *it->second;
    ++out.jobs_by_state[job.state()];
    if (IsActive(job.state()) ||
        (job.state() == v1::JOB_STATE_PENDING && job.attempt() > 0)) {
      out.active.push_back(labels(job));
    }
    if (job.state() == v1::JOB_STATE_PENDING) {
      ClusterSnapshot::Pending& p =
          out.pending[{job.user(), job.spec().priority()}];
      ++p.jobs;
      p.gpus += job.spec().resources().nodes() *
                job.spec().resources().gpus_per_node();
      if (p.oldest_submit_ms == 0 ||
          job.submit_time_ms() < p.oldest_submit_ms) {
        p.oldest_submit_ms = job.submit_time_ms();
      }
    }
  }
  return out;
}

std::vector<v1::Node> Core::ListNodes() const {
  absl::ReaderMutexLock lock(&mu_);
  return nodes_.List();
}

absl::StatusOr<v1::Node> Core::SetDrained(const std::string& name, bool drained,
                                          bool evict, const Principal& who) {
  const std::string action =
      drained ? (evict ? "drain --evict" : "drain") : "undrain";
  {
    absl::ReleasableMutexLock lock(&mu_);
    absl::Status refused = CheckWritable();
    NodeEntry* node = refused.ok() ? nodes_.Find(name) : nullptr;
    if (refused.ok() && node == nullptr) {
      refused = absl::NotFoundError(absl::StrCat("no node '", name, "'"));
    }
    AuditLocked(MakeAuditRecord(who, action, name, refused));
    if (!refused.ok()) return refused;
    node->info.set_drained(drained);
    commit_.Node(node->info);
    Wake();
    if (drained && evict) {
      std::vector<AttemptKey> held;
      for (const auto& [key, gpus] : node->holds) held.push_back(key);
      for (const AttemptKey& key : held) {
        v1::Job* job = ActiveJob(key);
        if (job == nullptr) continue;
        StopAttempt(*job, job->spec().grace_s(),
                    absl::StrCat("evicted from drained node ", name));
        Commit(*job);
      }
    }
    const GroupCommit::Ticket ticket = commit_.TakeTicket();
    lock.Release();
    if (absl::Status s = AwaitDurable(ticket); !s.ok()) return s;
  }
  for (v1::Node& node : ListNodes()) {
    if (node.name() == name) return node;
  }
  return absl::NotFoundError(name);
}

// ---------------------------------------------------------------- ticks

bool Core::LoseSilentNodes() {
  const std::vector<std::string> silent =
      nodes_.Silent(Now(), options_.node_timeout_ms);
  for (const std::string& name : silent) {
    NodeEntry& node = *nodes_.Find(name);
    LoseNode(node, node.state == v1::NODE_STATE_DISCONNECTED
                       ? "disconnected"
                       : "heartbeats stopped");
  }
  return !silent.empty();
}

bool Core::ResolveDependencies() {
  bool changed = false;
  for (v1::Job* live : jobs_.LiveJobs()) {
    v1::Job& job = *live;
    if (job.state() != v1::JOB_STATE_PENDING || job.spec().after_size() == 0) {
      continue;
    }
    for (const std::string& dep_id : job.spec().after()) {
      const v1::Job* dep = jobs_.Find(dep_id);
      if (dep == nullptr || !IsTerminal(dep->state()) ||
          dep->state() == v1::JOB_STATE_SUCCEEDED) {
        continue;
      }
      const std::string why = absl::StrCat("dependency ", dep_id, " ended ",
                                           JobStateName(dep->state()));
      SetState(job, v1::JOB_STATE_CANCELLED, why);
      AddEvent(job, v1::EVENT_TYPE_CANCELLED, why);
      Commit(job);
      changed = true;
      break;
    }
  }
  return changed;
}

absl::Status Core::SaveUsage() {
  GroupCommit::Ticket ticket;
  {
    absl::MutexLock lock(&mu_);
    ChargeUsage(/*save=*/true);
    ticket = commit_.TakeTicket(/*retry=*/true);
  }
  return AwaitDurable(ticket);
}

void Core::ChargeUsage(bool save) {
  const int64_t now = Now();
  if (last_charge_ms_ == 0) last_charge_ms_ = now;
  const int64_t elapsed = now - last_charge_ms_;
  ledger_.AdvanceTo(now);
  if (elapsed > 0) {
    for (const auto& [name, node] : nodes_.nodes()) {
      for (const auto& [key, gpus] : node.holds) {
        const v1::Job* job = jobs_.Find(key.job_id);
        if (job != nullptr && !gpus.empty()) {
          ledger_.Charge(job->user(), static_cast<double>(gpus.size()),
                         elapsed);
        }
      }
    }
  }
  last_charge_ms_ = now;
  if (!save && last_usage_save_ms_ != 0 &&
      now - last_usage_save_ms_ < options_.usage_save_interval_ms) {
    return;
  }
  last_usage_save_ms_ = now;
  commit_.SetUsage(ledger_.usage());
}

bool Core::EnforceTimeLimits() {
  const int64_t now = Now();
  bool changed = false;
  for (v1::Job* live : jobs_.LiveJobs()) {
    v1::Job& job = *live;
    if (!IsActive(job.state()) || job.spec().time_limit_s() <= 0) continue;
    v1::Attempt* attempt = CurrentAttempt(job);
    const int64_t limit_ms =
        static_cast<int64_t>(job.spec().time_limit_s() * 1000);
    if (attempt == nullptr || attempt->timed_out() ||
        now - attempt->scheduled_ms() < limit_ms) {
      continue;
    }
    attempt->set_timed_out(true);
    const std::string why = absl::StrCat("over its time limit of ",
                                         job.spec().time_limit_s(), " s");
    attempt->set_reason(why);
    AddEvent(job, v1::EVENT_TYPE_EXITED, absl::StrCat("stopping: ", why));
    StopAttempt(job, StopGrace(job, *config_), why, /*record=*/false);
    FinishAttemptIfDone(job);
    Commit(job);
    changed = true;
  }
  return changed;
}

bool Core::SchedulePass() {
  const int64_t now = Now();
  const int64_t began_ns = options_.steady_ns ? options_.steady_ns() : 0;
  SchedulerInput input =
      BuildSchedulerInput(now, config_, ledger_.usage(), jobs_, nodes_);
  if (input.queue.empty()) {
    queue_.Clear();
    queue_.set_as_of_ms(now);
    explained_ms_ = now;
    unexplained_.reset();
    return false;
  }
  input.explain = !explained_ms_ || options_.explain_interval_ms <= 0 ||
                  now - *explained_ms_ >= options_.explain_interval_ms;
  const SchedulerDecisions decisions = policy_->Schedule(input);
  const bool changed = ApplyDecisions(decisions, now);
  if (input.explain) {
    ShowQueue(input, decisions);
    unexplained_.reset();
  } else {
    unexplained_ = std::move(input);
  }
  if (options_.observer != nullptr && options_.steady_ns) {
    options_.observer->OnSchedulePass(
        static_cast<double>(options_.steady_ns() - began_ns) / 1e9);
  }
  return changed;
}

bool Core::ApplyDecisions(const SchedulerDecisions& decisions, int64_t now) {
  bool changed = false;
  for (const Preemption& preemption : decisions.preemptions) {
    v1::Job* job = ActiveJob({preemption.job_id, preemption.attempt});
    if (job == nullptr) continue;
    AddEvent(*job, v1::EVENT_TYPE_EXITED,
             absl::StrCat("preempted for ", preemption.for_job_id, ": ",
                          preemption.reason));
    StopAttempt(*job, StopGrace(*job, *config_),
                absl::StrCat("preempted for ", preemption.for_job_id));
    Commit(*job);
    changed = true;
  }
  for (const Placement& placement : decisions.placements) {
    v1::Job* job = jobs_.Find(placement.job_id);
    if (job == nullptr || placement.nodes.empty()) continue;
    PlaceAttempt(*job, placement, now);
    Commit(*job);
    changed = true;
  }
  return changed;
}

void Core::ExplainLastPass() {
  if (!unexplained_) return;
  SchedulerInput input = *std::move(unexplained_);
  unexplained_.reset();
  input.explain = true;
  // The policy is a pure function of its input: these are the decisions
  // the pass applied, now with the queue's order and reasons.
  ShowQueue(input, policy_->Schedule(input));
}

void Core::ShowQueue(const SchedulerInput& input,
                     const SchedulerDecisions& decisions) {
  explained_ms_ = input.now_ms;
  queue_ = QueueView(input, decisions, jobs_, nodes_);
}

bool Core::Tick() {
  absl::ReleasableMutexLock lock(&mu_);
  work_pending_ = false;
  bool changed = LoseSilentNodes();
  changed |= EnforceTimeLimits();
  ChargeUsage();
  // The audit trail keeps audit_retention of history; pruned hourly.
  if (Now() - last_audit_prune_ms_ >= 3600 * 1000) {
    last_audit_prune_ms_ = Now();
    commit_.PruneAudit(Now() -
                       static_cast<int64_t>(config_->audit_retention_s * 1000));
  }
  changed |= ResolveDependencies();
  // While the store fails, nothing is placed or preempted: those orders
  // could not leave anyway, and the queue may change before they could.
  if (commit_.error().ok()) changed |= SchedulePass();
  // Writes this tick's changes; retries a failed write.
  const GroupCommit::Ticket ticket = commit_.TakeTicket(/*retry=*/true);
  lock.Release();
  AwaitDurable(ticket).IgnoreError();
  return changed;
}

void Core::AwaitWork(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&work_pending_), timeout);
}

}  // namespace dcvlr
