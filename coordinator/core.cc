#include "coordinator/core.h"

#include <algorithm>
#include <atomic>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_file.h"
#include "common/names.h"
#include "coordinator/lifecycle.h"
#include "nlohmann/json.hpp"

namespace dcvlr {
namespace {

bool Contains(const google::protobuf::RepeatedPtrField<std::string>& list,
              const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

bool IsActive(v1::JobState state) {
  return state == v1::JOB_STATE_SCHEDULED || state == v1::JOB_STATE_RUNNING;
}

// An agent's metrics address with its host filled in: an empty or wildcard
// host means the node's own address.
std::string MetricsAddress(const std::string& reported,
                           const std::string& node_host) {
  if (reported.empty()) return "";
  const size_t colon = reported.rfind(':');
  if (colon == std::string::npos) return reported;
  const std::string host = reported.substr(0, colon);
  if (!host.empty() && host != "0.0.0.0" && host != "::" && host != "[::]") {
    return reported;
  }
  const bool v6 = node_host.find(':') != std::string::npos;
  return absl::StrCat(v6 ? "[" : "", node_host, v6 ? "]" : "",
                      reported.substr(colon));
}

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

Core::Core(CoreOptions options, std::unique_ptr<Store> store, LogStore* logs,
           std::unique_ptr<SchedulingPolicy> policy)
    : options_(std::move(options)),
      logs_(logs),
      policy_(std::move(policy)),
      store_(std::move(store)) {
  config_ = options_.cluster_config != nullptr
                ? options_.cluster_config
                : std::make_shared<const ClusterConfig>();
  ledger_.set_half_life_s(config_->fair_share_half_life_s);
  benchmarks_ = options_.benchmarks;
  writer_ = std::thread([this] { WriterLoop(); });
}

Core::~Core() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;  // the writer writes what is pending, once, and ends
  }
  writer_.join();
}

void Core::SetBenchmarks(BenchmarkRegistry benchmarks) {
  absl::MutexLock lock(&mu_);
  benchmarks_ = std::move(benchmarks);
}

void Core::SetClusterConfig(std::shared_ptr<const ClusterConfig> config) {
  absl::MutexLock lock(&mu_);
  config_ = config != nullptr ? std::move(config)
                              : std::make_shared<const ClusterConfig>();
  ledger_.set_half_life_s(config_->fair_share_half_life_s);
  work_pending_ = true;
}

v1::GetQueueResponse Core::Queue() {
  absl::MutexLock lock(&mu_);
  ExplainLastPass();
  return queue_;
}

double Core::GraceFor(const v1::Job& job) const {
  return job.spec().grace_s() > 0 ? job.spec().grace_s()
                                  : config_->default_grace_s;
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
  const int64_t now = Now();
  for (v1::Node& info : *nodes) {
    NodeEntry& node = nodes_[info.name()];
    node.info = std::move(info);
    node.state = v1::NODE_STATE_DISCONNECTED;
    // The agent gets a full node timeout from now to come back.
    node.last_seen_ms = now;
  }
  for (v1::Job& job : *jobs) {
    const int64_t seq = JobSeq(job.id());
    next_seq_ = std::max(next_seq_, seq + 1);
    version_ = std::max(version_, job.version());
    // GPUs of running attempts stay held until their agents report.
    if (IsActive(job.state()) && job.attempts_size() > 0) {
      const v1::Attempt& attempt = *job.attempts().rbegin();
      for (const v1::Placement& p : attempt.placements()) {
        if (Contains(attempt.exited_nodes(), p.node())) continue;
        NodeEntry& node = nodes_[p.node()];
        if (node.info.name().empty()) node.info.set_name(p.node());
        node.holds[{job.id(), attempt.number()}] =
            std::vector<int>(p.gpus().begin(), p.gpus().end());
      }
    }
    AddJob(seq, std::move(job));
  }
  work_pending_ = true;
  return absl::OkStatus();
}

// ---------------------------------------------------------------- lookups

v1::Job* Core::FindJob(const std::string& ref) {
  return const_cast<v1::Job*>(std::as_const(*this).FindJob(ref));
}

const v1::Job* Core::FindJob(const std::string& ref) const {
  if (int64_t seq = JobSeq(ref); seq >= 0) {
    auto it = jobs_.find(seq);
    return it == jobs_.end() ? nullptr : &it->second;
  }
  auto named = newest_by_name_.find(ref);
  if (named == newest_by_name_.end()) return nullptr;
  auto it = jobs_.find(named->second);
  return it == jobs_.end() ? nullptr : &it->second;
}

void Core::AddJob(int64_t seq, v1::Job job) {
  auto [it, inserted] = jobs_.emplace(seq, std::move(job));
  if (!inserted) return;
  v1::Job& added = it->second;
  if (IsTerminal(added.state())) {
    ++ended_by_state_[added.state()];
  } else {
    live_.emplace(seq, &added);
    ++live_by_user_[added.user()];
  }
  int64_t& newest = newest_by_name_[added.spec().name()];
  newest = std::max(newest, seq);
}

std::vector<v1::Job*> Core::LiveJobs() const {
  std::vector<v1::Job*> out;
  out.reserve(live_.size());
  for (const auto& [seq, job] : live_) out.push_back(job);
  return out;
}

v1::Attempt* Core::CurrentAttempt(v1::Job& job) {
  if (job.attempts_size() == 0) return nullptr;
  return job.mutable_attempts(job.attempts_size() - 1);
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
  const bool ended = IsTerminal(state) && !IsTerminal(job.state());
  job.set_state(state);
  job.set_reason(reason);
  if (ended) {
    live_.erase(JobSeq(job.id()));
    ++ended_by_state_[state];
    if (--live_by_user_[job.user()] <= 0) live_by_user_.erase(job.user());
  }
  if (IsTerminal(state)) {
    job.set_end_time_ms(Now());
    if (options_.metric_history != nullptr) {
      options_.metric_history->JobEnded(job.id());
    }
  }
}

void Core::Commit(v1::Job& job) {
  job.set_version(++version_);
  pending_.jobs[JobSeq(job.id())] = job;
  work_pending_ = true;
}

void Core::SendAfterCommit(const std::shared_ptr<AgentChannel>& channel,
                           v1::CoordinatorMessage message) {
  if (channel == nullptr) return;
  pending_.orders.emplace_back(channel, std::move(message));
}

absl::Status Core::CheckWritable() const {
  if (store_error_.ok()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat(
      "the coordinator is read-only until its state store accepts writes "
      "again (running jobs go on): ",
      store_error_.message()));
}

Core::Ticket Core::TakeTicket(bool retry) {
  if (pending_.empty()) return {nullptr, absl::OkStatus()};
  if (!store_error_.ok() && !retry) return {nullptr, CheckWritable()};
  if (retry) retry_requested_ = true;
  if (pending_.outcome == nullptr) {
    pending_.outcome = std::make_shared<BatchOutcome>();
  }
  return {pending_.outcome, absl::OkStatus()};
}

absl::Status Core::AwaitTicket(const Ticket& ticket) {
  if (ticket.outcome == nullptr) return ticket.now;
  ticket.outcome->done.wait(0);
  return ticket.outcome->status;
}

void Core::WriterLoop() {
  absl::MutexLock lock(&mu_);
  auto work = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return stopping_ ||
           (!pending_.empty() && (store_error_.ok() || retry_requested_));
  };
  for (;;) {
    mu_.Await(absl::Condition(&work));
    if (pending_.empty()) return;  // stopping, nothing left to write
    const bool last = stopping_;
    retry_requested_ = false;

    // Everything pending becomes one transaction.
    PendingBatch batch = std::exchange(pending_, PendingBatch());
    StoreBatch write;
    write.jobs.reserve(batch.jobs.size() + batch.submitted.size());
    for (auto& [seq, job] : batch.jobs) write.jobs.push_back(std::move(job));
    const size_t changed_jobs = write.jobs.size();
    for (auto& job : batch.submitted) write.jobs.push_back(std::move(job));
    for (auto& [name, node] : batch.nodes) write.nodes.push_back(std::move(node));
    write.usage = std::move(batch.usage);

    mu_.Unlock();
    const absl::Status status = store_->Write(write);
    mu_.Lock();

    // Written or dropped, the submitted jobs are no longer in flight.
    for (size_t i = changed_jobs; i < write.jobs.size(); ++i) {
      if (--submitting_by_user_[write.jobs[i].user()] <= 0) {
        submitting_by_user_.erase(write.jobs[i].user());
      }
    }
    if (status.ok()) {
      if (!store_error_.ok()) {
        fprintf(stderr, "state store writable again\n");
        store_error_ = absl::OkStatus();
      }
      for (size_t i = changed_jobs; i < write.jobs.size(); ++i) {
        const int64_t seq = JobSeq(write.jobs[i].id());
        AddJob(seq, std::move(write.jobs[i]));
        work_pending_ = true;
      }
      // In the order they were queued, before anything queued later.
      for (auto& [channel, message] : batch.orders) channel->Send(message);
    } else {
      if (store_error_.ok()) {
        fprintf(stderr,
                "state store write failed, read-only until a write "
                "succeeds: %s\n",
                status.ToString().c_str());
      }
      store_error_ = status;
      // Keep the batch's changes (later ones win) and its orders (first in
      // line); submitted jobs are dropped: their submit is refused.
      for (size_t i = 0; i < changed_jobs; ++i) {
        pending_.jobs.try_emplace(JobSeq(write.jobs[i].id()),
                                  std::move(write.jobs[i]));
      }
      for (v1::Node& node : write.nodes) {
        pending_.nodes.try_emplace(node.name(), std::move(node));
      }
      if (!pending_.usage) pending_.usage = std::move(write.usage);
      batch.orders.insert(batch.orders.end(),
                          std::make_move_iterator(pending_.orders.begin()),
                          std::make_move_iterator(pending_.orders.end()));
      pending_.orders = std::move(batch.orders);
    }
    if (batch.outcome != nullptr) {
      batch.outcome->status = status.ok() ? status : CheckWritable();
      batch.outcome->done.store(1);
      batch.outcome->done.notify_all();
    }
    if (last) return;
  }
}

absl::Status Core::AdmitSubmit(const std::string& user, int64_t jobs) {
  const UserConfig& limits = config_->User(user);
  const int64_t max_pending = limits.max_pending_jobs >= 0
                                  ? limits.max_pending_jobs
                                  : config_->max_pending_jobs;
  if (max_pending > 0) {
    auto count = [](const std::map<std::string, int64_t>& by_user,
                    const std::string& user) {
      auto it = by_user.find(user);
      return it == by_user.end() ? int64_t{0} : it->second;
    };
    const int64_t pending =
        count(live_by_user_, user) + count(submitting_by_user_, user);
    if (pending + jobs > max_pending) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "user ", user, " has ", pending, " jobs that have not ended; ",
          "the cluster allows ", max_pending,
          " (submit_limits.max_pending_jobs): wait for some to end or "
          "cancel them"));
    }
  }
  const double rate = config_->submit_jobs_per_s;
  if (rate <= 0) return absl::OkStatus();
  const double burst =
      config_->submit_burst > 0 ? config_->submit_burst : 10 * rate;
  const int64_t now = Now();
  auto [it, added] = submit_buckets_.try_emplace(user);
  SubmitBucket& bucket = it->second;
  if (added) {
    bucket.tokens = burst;
  } else {
    bucket.tokens = std::min(
        burst, bucket.tokens + static_cast<double>(now - bucket.at_ms) *
                                   rate / 1000.0);
  }
  bucket.at_ms = now;
  if (static_cast<double>(jobs) > burst) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a file of ", jobs, " jobs is more than the ", burst,
        " jobs one user may submit at once (submit_limits.burst)"));
  }
  if (bucket.tokens < static_cast<double>(jobs)) {
    const double wait_s =
        (static_cast<double>(jobs) - bucket.tokens) / rate;
    return absl::ResourceExhaustedError(absl::StrCat(
        "user ", user, ": submit rate limit of ", rate, " jobs/s (burst ",
        burst, ", submit_limits) reached; retry in ",
        absl::SixDigits(wait_s), " s"));
  }
  bucket.tokens -= static_cast<double>(jobs);
  return absl::OkStatus();
}

absl::Status Core::StoreStatus() const {
  absl::ReaderMutexLock lock(&mu_);
  return store_error_;
}

// ---------------------------------------------------------------- client API

const v1::Job* Core::FindJob(const std::string& ref,
                             const std::vector<v1::Job>& batch) const {
  for (auto it = batch.rbegin(); it != batch.rend(); ++it) {
    if (it->spec().name() == ref || it->id() == ref) return &*it;
  }
  return FindJob(ref);
}

void Core::ResolveEval(const ParsedJobFile& file,
                       const std::vector<v1::Job>& batch, v1::JobSpec& spec,
                       std::vector<std::string>* errors) const {
  nlohmann::json config =
      nlohmann::json::parse(spec.worker_config_json(), nullptr, false);
  if (!config.is_object()) return;  // the parser wrote it; cannot happen
  if (config.contains("model") && config["model"].contains("from")) {
    const std::string ref = config["model"]["from"].get<std::string>();
    const v1::Job* dep = FindJob(ref, batch);
    const std::string where = file.Where("model.from");
    if (dep == nullptr) {
      errors->push_back(
          absl::StrCat(where, ": no job with id or name '", ref, "'"));
    } else if (dep->spec().kind() != v1::JOB_KIND_TRAIN) {
      errors->push_back(absl::StrCat(where, ": job ", dep->id(), " ('",
                                     dep->spec().name(),
                                     "') is not a train job"));
    } else if (dep->spec().launcher() == v1::LAUNCHER_TORCHRUN_OUMI) {
      errors->push_back(absl::StrCat(
          where, ": job ", dep->id(),
          " trains with Oumi, whose checkpoints dcvlr-eval does not read; "
          "score it with a command job (configs/eval/vlmevalkit.yaml)"));
    } else if (dep->spec().checkpoint_dir().empty()) {
      errors->push_back(absl::StrCat(
          where, ": job ", dep->id(),
          " checkpoints to its node's local disk, which other nodes cannot "
          "read; give it checkpoint_dir:, or start the coordinator with "
          "--checkpoint-root (or checkpoint_root in the cluster config)"));
    } else {
      config["model"] = {{"checkpoint", dep->spec().checkpoint_dir()},
                         {"from_job", dep->id()}};
      if (std::find(spec.after().begin(), spec.after().end(), dep->id()) ==
          spec.after().end()) {
        spec.add_after(dep->id());
      }
    }
  }
  if (config.contains("benchmarks")) {
    std::vector<std::string> known;
    for (const auto& [name, entry] : benchmarks_) known.push_back(name);
    int i = 0;
    for (nlohmann::json& benchmark : config["benchmarks"]) {
      const std::string name = benchmark["name"].get<std::string>();
      if (!benchmark.contains("path")) {
        auto it = benchmarks_.find(name);
        if (it == benchmarks_.end()) {
          errors->push_back(absl::StrCat(
              file.Where(absl::StrCat("benchmarks[", i, "]")),
              ": unknown benchmark '", name, "'; known: ",
              absl::StrJoin(known, ", "),
              " (the coordinator's --benchmarks file), or give a TSV path"));
        } else {
          benchmark.update(it->second);
        }
      }
      ++i;
    }
  }
  spec.set_worker_config_json(config.dump());
}

absl::Status Core::CheckAgainstCluster(const ParsedJobFile& file,
                                       const std::vector<v1::Job>& batch,
                                       v1::JobSpec& spec) const {
  std::vector<std::string> errors;
  // `after:` names jobs by id or name; store ids.
  std::vector<std::string> resolved;
  for (int i = 0; i < spec.after_size(); ++i) {
    const v1::Job* dep = FindJob(spec.after(i), batch);
    if (dep == nullptr) {
      errors.push_back(absl::StrCat(file.Where(absl::StrCat("after[", i, "]")),
                                    ": no job with id or name '", spec.after(i),
                                    "'"));
    } else {
      resolved.push_back(dep->id());
    }
  }
  spec.clear_after();
  for (const std::string& id : resolved) spec.add_after(id);
  if (spec.kind() == v1::JOB_KIND_EVAL) ResolveEval(file, batch, spec, &errors);

  // Only a cluster that has nodes can say a job is too big for it.
  const auto& res = spec.resources();
  int largest = 0;
  int fitting = 0;
  for (const auto& [name, node] : nodes_) {
    largest = std::max(largest, node.info.gpus_size());
    if (node.info.gpus_size() >= res.gpus_per_node()) ++fitting;
  }
  if (!nodes_.empty() && res.gpus_per_node() > largest) {
    errors.push_back(absl::StrCat(
        file.Where("resources.gpus_per_node"), ": ", res.gpus_per_node(),
        " GPUs per node asked for, but the largest node has ", largest));
  } else if (!nodes_.empty() && fitting < res.nodes()) {
    errors.push_back(absl::StrCat(
        file.Where("resources.nodes"), ": ", res.nodes(), " nodes with ",
        res.gpus_per_node(), " GPUs each asked for, but the cluster has ",
        fitting));
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> Core::Submit(const std::string& user,
                                     const std::string& source_name,
                                     const std::string& source, bool dry_run) {
  absl::StatusOr<SubmitResult> result =
      SubmitFile(user, source_name, source, dry_run);
  if (!result.ok()) return result.status();
  if (result->jobs.size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": ", result->jobs.size(),
                     " YAML documents; one job was expected here"));
  }
  return result->jobs.front();
}

absl::StatusOr<SubmitResult> Core::SubmitFile(const std::string& user,
                                              const std::string& source_name,
                                              const std::string& source,
                                              bool dry_run,
                                              const JobFileOptions& options) {
  if (user.empty()) return absl::InvalidArgumentError("no user given");
  absl::StatusOr<std::vector<ParsedJobFile>> files =
      ParseJobFiles(source_name, source, options);
  if (!files.ok()) return files.status();

  absl::ReleasableMutexLock lock(&mu_);
  if (!dry_run) {
    if (absl::Status s = CheckWritable(); !s.ok()) return s;
  }
  SubmitResult result;
  std::vector<std::string> errors;
  // The cluster config's shared root wins over the flag's.
  const std::string& root = !config_->checkpoint_root.empty()
                                ? config_->checkpoint_root
                                : options_.checkpoint_root;
  int64_t seq = next_seq_;
  for (const ParsedJobFile& file : *files) {
    v1::Job job;
    *job.mutable_spec() = file.spec;
    if (absl::Status s =
            CheckAgainstCluster(file, result.jobs, *job.mutable_spec());
        !s.ok()) {
      errors.push_back(std::string(s.message()));
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
      job.mutable_spec()->set_checkpoint_dir(
          absl::StrCat(root, "/", job.id()));
    }
    result.jobs.push_back(std::move(job));
  }
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  }
  if (dry_run) {
    for (v1::Job& job : result.jobs) job.clear_id();
    return result;
  }
  if (absl::Status s = AdmitSubmit(user, int64_t(result.jobs.size()));
      !s.ok()) {
    return s;
  }
  submitting_by_user_[user] += int64_t(result.jobs.size());

  for (v1::Job& job : result.jobs) {
    AddEvent(job, v1::EVENT_TYPE_SUBMITTED,
             absl::StrCat("submitted by ", user, " from ", source_name));
    job.set_version(version_ + 1);
  }
  ++version_;
  next_seq_ = seq;
  // Acknowledge only what is durable: the jobs join the table once their
  // batch is written (and are dropped if it fails).
  pending_.submitted.insert(pending_.submitted.end(), result.jobs.begin(),
                            result.jobs.end());
  const Ticket ticket = TakeTicket();
  lock.Release();
  if (absl::Status s = AwaitTicket(ticket); !s.ok()) return s;
  return result;
}

absl::StatusOr<v1::Job> Core::GetJob(const std::string& ref) {
  {
    absl::ReaderMutexLock lock(&mu_);
    const v1::Job* job = FindJob(ref);
    if (job == nullptr) {
      return absl::NotFoundError(absl::StrCat("no job '", ref, "'"));
    }
    if (job->state() != v1::JOB_STATE_PENDING || !unexplained_) return *job;
  }
  // A pending job's reason comes from the last pass's explanation.
  absl::MutexLock lock(&mu_);
  ExplainLastPass();
  const v1::Job* job = FindJob(ref);
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("no job '", ref, "'"));
  }
  return *job;
}

std::vector<v1::Job> Core::ListJobs(const v1::ListJobsRequest& request,
                                    std::string* next_page_token,
                                    size_t max_bytes) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<v1::Job> out;
  size_t bytes = 0;
  bool more = false;
  // False once the page is full (`more`: a job may be left to list).
  auto add = [&](const v1::Job& job) {
    if (!request.user().empty() && job.user() != request.user()) return true;
    if (request.states_size() > 0 &&
        std::find(request.states().begin(), request.states().end(),
                  job.state()) == request.states().end()) {
      return true;
    }
    const size_t size = job.ByteSizeLong();
    if (!out.empty() && bytes + size > max_bytes) {
      more = true;
      return false;
    }
    out.push_back(job);
    bytes += size;
    if (request.limit() > 0 && out.size() >= size_t(request.limit())) {
      more = true;
      return false;
    }
    return true;
  };
  // Below the page token's job; every job without one.
  int64_t below = std::numeric_limits<int64_t>::max();
  if (!request.page_token().empty()) {
    const int64_t seq = JobSeq(request.page_token());
    if (seq >= 0) below = seq;
  }
  // Asked only for states a job leaves when it ends (`dcvlrctl top`), the
  // live jobs hold every match.
  const bool live_only =
      request.states_size() > 0 &&
      std::none_of(request.states().begin(), request.states().end(),
                   [](int state) {
                     return IsTerminal(static_cast<v1::JobState>(state));
                   });
  if (live_only) {
    for (auto it = std::make_reverse_iterator(live_.lower_bound(below));
         it != live_.rend(); ++it) {
      if (!add(*it->second)) break;
    }
  } else {
    for (auto it = std::make_reverse_iterator(jobs_.lower_bound(below));
         it != jobs_.rend(); ++it) {
      if (!add(it->second)) break;
    }
  }
  if (next_page_token != nullptr) {
    *next_page_token = more ? out.back().id() : "";
  }
  return out;
}

absl::StatusOr<v1::Job> Core::Cancel(const std::string& ref,
                                     const std::string& user) {
  absl::ReleasableMutexLock lock(&mu_);
  if (absl::Status s = CheckWritable(); !s.ok()) return s;
  v1::Job* job = FindJob(ref);
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("no job '", ref, "'"));
  }
  if (IsTerminal(job->state())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job->id(), " already ended ", JobStateName(job->state())));
  }
  if (job->cancel_requested()) return *job;
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
  const Ticket ticket = TakeTicket();
  lock.Release();
  if (absl::Status s = AwaitTicket(ticket); !s.ok()) return s;
  return out;
}

absl::StatusOr<v1::Job> Core::AwaitChange(const std::string& id,
                                          int64_t version,
                                          absl::Duration timeout) const {
  absl::ReaderMutexLock lock(&mu_);
  auto changed = [this, &id, version]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    const v1::Job* job = FindJob(id);
    return job == nullptr || job->version() > version;
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  const v1::Job* job = FindJob(id);
  if (job == nullptr) return absl::NotFoundError("no job " + id);
  return *job;
}

ClusterSnapshot Core::Snapshot(size_t ended_jobs) const {
  absl::ReaderMutexLock lock(&mu_);
  ClusterSnapshot out;
  out.now_ms = Now();
  out.store_healthy = store_error_.ok();
  for (const auto& [name, node] : nodes_) {
    ClusterSnapshot::Node& n = out.nodes.emplace_back();
    n.name = name;
    n.state = node.state == v1::NODE_STATE_READY && node.info.drained()
                  ? v1::NODE_STATE_DRAINED
                  : node.state;
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
  out.jobs_by_state = ended_by_state_;
  for (auto it = jobs_.rbegin();
       it != jobs_.rend() && out.recently_ended.size() < ended_jobs; ++it) {
    if (IsTerminal(it->second.state())) {
      out.recently_ended.push_back(labels(it->second));
    }
  }
  for (auto it = live_.rbegin(); it != live_.rend(); ++it) {
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
  std::vector<v1::Node> out;
  for (const auto& [name, node] : nodes_) {
    v1::Node info = node.info;
    info.set_state(node.state == v1::NODE_STATE_READY && info.drained()
                       ? v1::NODE_STATE_DRAINED
                       : node.state);
    info.set_last_seen_ms(node.last_seen_ms);
    std::vector<int> in_use;
    for (const auto& [key, gpus] : node.holds) {
      info.add_attempts(absl::StrCat(key.job_id, "/", key.attempt));
      in_use.insert(in_use.end(), gpus.begin(), gpus.end());
    }
    std::sort(in_use.begin(), in_use.end());
    for (int gpu : in_use) info.add_gpus_in_use(gpu);
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<v1::Node> Core::SetDrained(const std::string& name,
                                          bool drained, bool evict) {
  {
    absl::ReleasableMutexLock lock(&mu_);
    if (absl::Status s = CheckWritable(); !s.ok()) return s;
    auto it = nodes_.find(name);
    if (it == nodes_.end()) {
      return absl::NotFoundError(absl::StrCat("no node '", name, "'"));
    }
    it->second.info.set_drained(drained);
    pending_.nodes[name] = it->second.info;
    work_pending_ = true;
    if (drained && evict) {
      std::vector<AttemptKey> held;
      for (const auto& [key, gpus] : it->second.holds) held.push_back(key);
      for (const AttemptKey& key : held) {
        v1::Job* job = FindJob(key.job_id);
        if (job == nullptr || job->attempt() != key.attempt ||
            !IsActive(job->state())) {
          continue;
        }
        StopAttempt(*job, job->spec().grace_s(),
                    absl::StrCat("evicted from drained node ", name));
        Commit(*job);
      }
    }
    const Ticket ticket = TakeTicket();
    lock.Release();
    if (absl::Status s = AwaitTicket(ticket); !s.ok()) return s;
  }
  for (v1::Node& node : ListNodes()) {
    if (node.name() == name) return node;
  }
  return absl::NotFoundError(name);
}

// ---------------------------------------------------------------- agents

absl::StatusOr<int64_t> Core::RegisterAgent(
    const v1::RegisterRequest& request, const std::string& peer_host,
    std::shared_ptr<AgentChannel> channel) {
  if (request.name().empty()) {
    return absl::InvalidArgumentError("agent registered without a name");
  }
  absl::ReleasableMutexLock lock(&mu_);
  NodeEntry& node = nodes_[request.name()];
  if (node.channel != nullptr) {
    // A newer stream from the same agent (it restarted or reconnected
    // before we noticed): the old one is stale.
    node.channel->Close();
  }
  const bool drained = node.info.drained();
  node.info.set_name(request.name());
  node.info.set_address(request.advertise_host().empty()
                            ? peer_host
                            : request.advertise_host());
  node.info.mutable_gpus()->CopyFrom(request.gpus());
  node.info.set_drained(drained);
  node.info.set_metrics_address(
      MetricsAddress(request.metrics_address(), node.info.address()));
  node.state = v1::NODE_STATE_READY;
  node.last_seen_ms = Now();
  node.session = next_session_++;
  node.channel = channel;
  pending_.nodes[request.name()] = node.info;

  v1::CoordinatorMessage ack_message;
  v1::RegisterAck* ack = ack_message.mutable_ack();
  ack->set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  std::set<AttemptKey> running;
  for (const v1::RunningAttempt& r : request.running()) {
    AttemptKey key{r.job_id(), r.attempt()};
    running.insert(key);
    for (const auto& [rank, size] : logs_->Sizes(r.job_id(), r.attempt())) {
      v1::LogOffset* offset = ack->add_log_offsets();
      offset->set_job_id(r.job_id());
      offset->set_attempt(r.attempt());
      offset->set_rank(rank);
      offset->set_offset(size);
    }
    if (options_.metric_history != nullptr) {
      v1::MetricsOffset* offset = ack->add_metrics_offsets();
      offset->set_job_id(r.job_id());
      offset->set_attempt(r.attempt());
      offset->set_offset(
          options_.metric_history->Offset(r.job_id(), r.attempt()));
    }
  }
  if (options_.metric_history != nullptr) {
    // Ended attempts may still have metrics lines to relay.
    for (const v1::AttemptUpdate& update : request.finished()) {
      v1::MetricsOffset* offset = ack->add_metrics_offsets();
      offset->set_job_id(update.job_id());
      offset->set_attempt(update.attempt());
      offset->set_offset(
          options_.metric_history->Offset(update.job_id(), update.attempt()));
    }
  }
  // The ack goes first on the new stream, not after the pending batch: it
  // records no change, and every later message to this agent is queued
  // after it.
  channel->Send(ack_message);
  const int64_t session = node.session;

  // Exits the agent could not report while it was away.
  for (const v1::AttemptUpdate& update : request.finished()) {
    ApplyUpdate(request.name(), session, update);
  }
  NodeEntry& current = nodes_[request.name()];
  // Attempts we think run here but the agent does not have: gone.
  std::vector<AttemptKey> vanished;
  for (const auto& [key, gpus] : current.holds) {
    if (!running.count(key)) vanished.push_back(key);
  }
  for (const AttemptKey& key : vanished) {
    v1::Job* job = FindJob(key.job_id);
    if (job != nullptr && job->attempt() == key.attempt &&
        IsActive(job->state())) {
      NodeExited(*job, request.name(), -1, 0, /*lost=*/true,
                 absl::StrCat("processes on ", request.name(),
                              " gone when its agent reconnected"));
      Commit(*job);
    }
    ReleaseHold(request.name(), key);
  }
  // Attempts the agent runs that are not current: fence them off.
  for (const AttemptKey& key : running) {
    const v1::Job* job = FindJob(key.job_id);
    const bool current_attempt = job != nullptr &&
                                 job->attempt() == key.attempt &&
                                 IsActive(job->state());
    if (!current_attempt) {
      // Hold nothing new: the GPUs free up when the agent reports the exit.
      current.holds.try_emplace(key);
      SendStop(request.name(), key, 0, "stale attempt");
    }
  }
  work_pending_ = true;
  // A failed write is logged by the writer and retried by Tick(); the
  // agent's running attempts go on meanwhile.
  const Ticket ticket = TakeTicket();
  lock.Release();
  AwaitTicket(ticket).IgnoreError();
  return session;
}

void Core::OnHeartbeat(const std::string& name, int64_t session) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(name);
  if (it == nodes_.end() || it->second.session != session) return;
  it->second.last_seen_ms = Now();
  if (it->second.channel != nullptr) {
    v1::CoordinatorMessage pong;
    pong.mutable_heartbeat()->set_time_ms(Now());
    it->second.channel->Send(pong);
  }
}

void Core::OnActivity(const std::string& name, int64_t session) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(name);
  if (it != nodes_.end() && it->second.session == session) {
    it->second.last_seen_ms = Now();
  }
}

void Core::OnAttemptUpdate(const std::string& name, int64_t session,
                           const v1::AttemptUpdate& update) {
  Ticket ticket;
  {
    absl::MutexLock lock(&mu_);
    ApplyUpdate(name, session, update);
    ticket = TakeTicket();
  }
  AwaitTicket(ticket).IgnoreError();  // as in RegisterAgent
}

void Core::ApplyUpdate(const std::string& name, int64_t session,
                       const v1::AttemptUpdate& update) {
  auto node_it = nodes_.find(name);
  if (node_it == nodes_.end() || node_it->second.session != session) return;
  node_it->second.last_seen_ms = Now();
  const AttemptKey key{update.job_id(), update.attempt()};
  v1::Job* job = FindJob(update.job_id());
  const bool current = job != nullptr && job->attempt() == update.attempt() &&
                       IsActive(job->state());
  if (update.phase() == v1::AttemptUpdate::PHASE_EXITED) {
    ReleaseHold(name, key);
    if (!current) return;
    NodeExited(*job, name, update.exit_code(), update.signal(),
               /*lost=*/false, update.message());
    Commit(*job);
    return;
  }
  if (update.phase() == v1::AttemptUpdate::PHASE_CHECKPOINT) {
    if (current) {
      v1::Attempt* attempt = CurrentAttempt(*job);
      attempt->set_last_checkpoint_ms(Now());
      attempt->set_last_checkpoint_step(update.checkpoint_step());
      Commit(*job);
    }
    return;
  }
  if (update.phase() != v1::AttemptUpdate::PHASE_STARTED) return;
  if (!current) {
    // Fencing: whatever is not the current attempt must not run.
    SendStop(name, key, 0, "stale attempt");
    return;
  }
  v1::Attempt* attempt = CurrentAttempt(*job);
  if (Contains(attempt->started_nodes(), name)) return;
  attempt->add_started_nodes(name);
  if (attempt->placements(0).node() == name && update.master_port() > 0) {
    attempt->set_master_port(update.master_port());
    // Node rank 0 has its rendezvous port: the others may start now.
    for (int rank = 1; rank < attempt->placements_size(); ++rank) {
      if (!job->cancel_requested() && attempt->stop_reason().empty()) {
        SendStart(*job, *attempt, rank);
      }
    }
  }
  if (attempt->started_nodes_size() == attempt->placements_size() &&
      job->state() == v1::JOB_STATE_SCHEDULED) {
    attempt->set_started_ms(Now());
    SetState(*job, v1::JOB_STATE_RUNNING, "");
    if (options_.observer != nullptr && attempt->number() == 1) {
      options_.observer->OnJobRunning(
          static_cast<double>(Now() - job->submit_time_ms()) / 1000.0);
    }
    std::vector<std::string> where;
    for (const auto& p : attempt->placements()) {
      where.push_back(Describe(p.node(), {p.gpus().begin(), p.gpus().end()}));
    }
    AddEvent(*job, v1::EVENT_TYPE_STARTED,
             absl::StrCat("running on ", absl::StrJoin(where, " ")));
  }
  Commit(*job);
}

void Core::OnAgentDisconnected(const std::string& name, int64_t session) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(name);
  if (it == nodes_.end() || it->second.session != session) return;
  it->second.state = v1::NODE_STATE_DISCONNECTED;
  it->second.channel = nullptr;
  // last_seen_ms stays: the node timeout runs from the last sign of life.
  work_pending_ = true;
}

// ---------------------------------------------------------------- attempts

void Core::SendStart(v1::Job& job, v1::Attempt& attempt, int node_rank) {
  const v1::Placement& placement = attempt.placements(node_rank);
  NodeEntry& node = nodes_[placement.node()];
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
  SendAfterCommit(node.channel, std::move(message));
  // With no channel the order is lost with the node; the node timeout
  // requeues the attempt.
}

void Core::SendStop(const std::string& name, const AttemptKey& key,
                    double grace_s, const std::string& reason) {
  auto it = nodes_.find(name);
  if (it == nodes_.end() || it->second.channel == nullptr) return;
  v1::CoordinatorMessage message;
  v1::StopAttempt* stop = message.mutable_stop();
  stop->set_job_id(key.job_id);
  stop->set_attempt(key.attempt);
  stop->set_grace_s(grace_s);
  stop->set_reason(reason);
  SendAfterCommit(it->second.channel, std::move(message));
}

void Core::StopAttempt(v1::Job& job, double grace_s,
                       const std::string& reason, bool record) {
  v1::Attempt* attempt = CurrentAttempt(job);
  if (attempt == nullptr) return;
  if (record && attempt->stop_reason().empty()) {
    attempt->set_stop_reason(reason);
  }
  if (attempt->stop_ms() == 0) attempt->set_stop_ms(Now());
  for (const std::string& node : attempt->ordered_nodes()) {
    if (!Contains(attempt->exited_nodes(), node)) {
      SendStop(node, {job.id(), attempt->number()}, grace_s, reason);
    }
  }
}

void Core::NodeExited(v1::Job& job, const std::string& node, int exit_code,
                      int signal, bool lost, const std::string& message) {
  v1::Attempt* attempt = CurrentAttempt(job);
  if (attempt == nullptr || Contains(attempt->exited_nodes(), node)) return;
  attempt->add_exited_nodes(node);
  const bool failed = lost || exit_code != 0 || signal != 0;
  if (failed && attempt->reason().empty()) {
    // The first failure explains the attempt.
    attempt->set_exit_code(exit_code);
    attempt->set_signal(signal);
    attempt->set_node_lost(lost);
    std::string why = lost ? message
                      : signal != 0
                          ? absl::StrCat("killed by signal ", signal, " on ",
                                         node)
                          : absl::StrCat("exited with code ", exit_code,
                                         " on ", node);
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
    if (!Contains(attempt->exited_nodes(), node)) return;
  }
  const bool all_ordered =
      attempt->ordered_nodes_size() == attempt->placements_size();
  // Nodes never told to start (node rank 0 ended first) hold GPUs too.
  for (const v1::Placement& p : attempt->placements()) {
    if (!Contains(attempt->ordered_nodes(), p.node())) {
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
  auto it = nodes_.find(name);
  if (it != nodes_.end() && it->second.holds.erase(key) > 0) {
    work_pending_ = true;
  }
}

void Core::LoseNode(NodeEntry& node, const std::string& why) {
  const std::string name = node.info.name();
  fprintf(stderr, "node=%s lost: %s\n", name.c_str(), why.c_str());
  node.state = v1::NODE_STATE_LOST;
  if (node.channel != nullptr) node.channel->Close();
  node.channel = nullptr;
  node.session = 0;
  std::vector<AttemptKey> held;
  for (const auto& [key, gpus] : node.holds) held.push_back(key);
  for (const AttemptKey& key : held) {
    v1::Job* job = FindJob(key.job_id);
    if (job != nullptr && job->attempt() == key.attempt &&
        IsActive(job->state())) {
      NodeExited(*job, name, -1, 0, /*lost=*/true,
                 absl::StrCat("node ", name, " lost (", why, ")"));
      Commit(*job);
    }
    ReleaseHold(name, key);
  }
}

// ---------------------------------------------------------------- ticks

bool Core::ResolveDependencies() {
  bool changed = false;
  for (v1::Job* live : LiveJobs()) {
    v1::Job& job = *live;
    if (job.state() != v1::JOB_STATE_PENDING || job.spec().after_size() == 0) {
      continue;
    }
    for (const std::string& dep_id : job.spec().after()) {
      const v1::Job* dep = FindJob(dep_id);
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
  Ticket ticket;
  {
    absl::MutexLock lock(&mu_);
    ChargeUsage(/*save=*/true);
    ticket = TakeTicket(/*retry=*/true);
  }
  return AwaitTicket(ticket);
}

void Core::ChargeUsage(bool save) {
  const int64_t now = Now();
  if (last_charge_ms_ == 0) last_charge_ms_ = now;
  const int64_t elapsed = now - last_charge_ms_;
  ledger_.AdvanceTo(now);
  if (elapsed > 0) {
    for (const auto& [name, node] : nodes_) {
      for (const auto& [key, gpus] : node.holds) {
        const v1::Job* job = FindJob(key.job_id);
        if (job != nullptr && !gpus.empty()) {
          ledger_.Charge(job->user(), static_cast<double>(gpus.size()), elapsed);
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
  pending_.usage = ledger_.usage();
}

bool Core::EnforceTimeLimits() {
  const int64_t now = Now();
  bool changed = false;
  for (v1::Job* live : LiveJobs()) {
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
    const std::string why =
        absl::StrCat("over its time limit of ", job.spec().time_limit_s(), " s");
    attempt->set_reason(why);
    AddEvent(job, v1::EVENT_TYPE_EXITED, absl::StrCat("stopping: ", why));
    StopAttempt(job, GraceFor(job), why, /*record=*/false);
    FinishAttemptIfDone(job);
    Commit(job);
    changed = true;
  }
  return changed;
}

bool Core::SchedulePass() {
  const int64_t now = Now();
  SchedulerInput input;
  input.now_ms = now;
  input.config = config_;
  input.usage = ledger_.usage();
  for (const auto& [seq, live] : live_) {
    const v1::Job& job = *live;
    if (IsActive(job.state())) {
      const v1::Attempt& attempt = *job.attempts().rbegin();
      RunningAttempt running;
      running.job_id = job.id();
      running.attempt = attempt.number();
      running.user = job.user();
      running.priority = job.spec().priority();
      for (const v1::Placement& p : attempt.placements()) {
        if (Contains(attempt.exited_nodes(), p.node())) continue;
        running.placements.push_back(
            {p.node(), std::vector<int>(p.gpus().begin(), p.gpus().end())});
      }
      running.submit_ms = job.submit_time_ms();
      running.started_ms = attempt.scheduled_ms();
      running.time_limit_ms =
          static_cast<int64_t>(job.spec().time_limit_s() * 1000);
      running.last_checkpoint_ms = attempt.last_checkpoint_ms();
      running.stopping = attempt.stop_ms() > 0;
      running.stop_deadline_ms =
          attempt.stop_ms() + static_cast<int64_t>(GraceFor(job) * 1000);
      input.running.push_back(std::move(running));
      continue;
    }
    if (job.state() != v1::JOB_STATE_PENDING) continue;
    if (job.not_before_ms() > now) continue;
    bool ready = true;
    for (const std::string& dep : job.spec().after()) {
      const v1::Job* d = FindJob(dep);
      ready = ready && d != nullptr && d->state() == v1::JOB_STATE_SUCCEEDED;
    }
    if (!ready) continue;
    PendingJob pending;
    pending.id = job.id();
    pending.priority = job.spec().priority();
    pending.seq = seq;
    pending.nodes = job.spec().resources().nodes();
    pending.gpus_per_node = job.spec().resources().gpus_per_node();
    pending.user = job.user();
    pending.submit_ms = job.submit_time_ms();
    pending.time_limit_ms =
        static_cast<int64_t>(job.spec().time_limit_s() * 1000);
    input.queue.push_back(std::move(pending));
  }
  if (input.queue.empty()) {
    queue_.Clear();
    queue_.set_as_of_ms(now);
    explained_ms_ = now;
    unexplained_.reset();
    return false;
  }
  const int64_t began_ns = options_.steady_ns ? options_.steady_ns() : 0;
  for (const auto& [name, node] : nodes_) {
    if (node.state != v1::NODE_STATE_READY || node.info.drained()) continue;
    NodeSnapshot snapshot{name, node.info.gpus_size(), {}};
    bool topology = false;
    for (const v1::Gpu& gpu : node.info.gpus()) topology |= gpu.domain() >= 0;
    if (topology) {
      snapshot.gpu_domain.assign(node.info.gpus_size(), -1);
      for (const v1::Gpu& gpu : node.info.gpus()) {
        if (gpu.index() >= 0 && gpu.index() < node.info.gpus_size()) {
          snapshot.gpu_domain[gpu.index()] = gpu.domain();
        }
      }
    }
    std::set<int> used;
    for (const auto& [key, gpus] : node.holds) used.insert(gpus.begin(), gpus.end());
    for (const v1::Gpu& gpu : node.info.gpus()) {
      if (!used.count(gpu.index())) snapshot.free_gpus.push_back(gpu.index());
    }
    input.nodes.push_back(std::move(snapshot));
  }

  input.explain = !explained_ms_ || options_.explain_interval_ms <= 0 ||
                  now - *explained_ms_ >= options_.explain_interval_ms;
  SchedulerDecisions decisions = policy_->Schedule(input);
  bool changed = false;
  for (const Preemption& preemption : decisions.preemptions) {
    v1::Job* job = FindJob(preemption.job_id);
    if (job == nullptr || job->attempt() != preemption.attempt ||
        !IsActive(job->state())) {
      continue;
    }
    AddEvent(*job, v1::EVENT_TYPE_EXITED,
             absl::StrCat("preempted for ", preemption.for_job_id, ": ",
                          preemption.reason));
    StopAttempt(*job, GraceFor(*job),
                absl::StrCat("preempted for ", preemption.for_job_id));
    Commit(*job);
    changed = true;
  }
  for (const Placement& placement : decisions.placements) {
    v1::Job* job = FindJob(placement.job_id);
    if (job == nullptr || placement.nodes.empty()) continue;
    const int number = job->attempt() + 1;
    job->set_attempt(number);
    v1::Attempt* attempt = job->add_attempts();
    attempt->set_number(number);
    attempt->set_scheduled_ms(now);
    std::vector<std::string> where;
    for (const NodePlacement& p : placement.nodes) {
      v1::Placement* out = attempt->add_placements();
      out->set_node(p.node);
      for (int gpu : p.gpus) out->add_gpus(gpu);
      nodes_[p.node].holds[{job->id(), number}] = p.gpus;
      where.push_back(Describe(p.node, p.gpus));
    }
    attempt->set_master_addr(nodes_[placement.nodes[0].node].info.address());
    SetState(*job, v1::JOB_STATE_SCHEDULED, "");
    AddEvent(*job, v1::EVENT_TYPE_SCHEDULED,
             absl::StrCat("attempt ", number, " on ",
                          absl::StrJoin(where, " ")));
    SendStart(*job, *attempt, 0);
    Commit(*job);
    changed = true;
  }

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
  // What `dcvlrctl queue` shows.
  explained_ms_ = input.now_ms;
  queue_.Clear();
  queue_.set_as_of_ms(input.now_ms);
  for (const QueueEntry& entry : decisions.queue) {
    if (entry.reason < 0) continue;  // placed in this pass
    const PendingJob& pending = input.queue[entry.job];
    const FairShare& account = decisions.fair_shares[entry.account];
    const std::string& reason = decisions.reasons[entry.reason];
    v1::Job* job = FindJob(pending.id);
    if (job != nullptr && job->state() == v1::JOB_STATE_PENDING &&
        job->reason() != reason) {
      // A reason is for people; it is not worth a store write.
      job->set_reason(reason);
    }
    v1::QueueEntry* out = queue_.add_entries();
    out->set_job_id(pending.id);
    out->set_name(job != nullptr ? job->spec().name() : "");
    out->set_user(account.user);
    out->set_group(account.group);
    out->set_priority(pending.priority);
    out->set_effective_priority(entry.effective_priority);
    out->set_fair_share(account.factor);
    out->set_reason(reason);
    out->set_gpus(pending.nodes * pending.gpus_per_node);
  }
  // GPUs held now, this pass's placements included.
  std::map<std::string, int> in_use;
  for (const auto& [name, node] : nodes_) {
    for (const auto& [key, gpus] : node.holds) {
      if (const v1::Job* job = FindJob(key.job_id)) {
        in_use[job->user()] += static_cast<int>(gpus.size());
      }
    }
  }
  for (const FairShare& share : decisions.fair_shares) {
    v1::UserShare* out = queue_.add_users();
    out->set_user(share.user);
    out->set_group(share.group);
    out->set_shares_norm(share.shares_norm);
    out->set_usage_norm(share.usage_norm);
    out->set_factor(share.factor);
    out->set_gpus_in_use(in_use[share.user]);
  }
}

bool Core::Tick() {
  absl::ReleasableMutexLock lock(&mu_);
  work_pending_ = false;
  const int64_t now = Now();
  bool changed = false;
  for (auto& [name, node] : nodes_) {
    if (node.state == v1::NODE_STATE_LOST) continue;
    if (now - node.last_seen_ms > options_.node_timeout_ms) {
      LoseNode(node, node.state == v1::NODE_STATE_DISCONNECTED
                         ? "disconnected"
                         : "heartbeats stopped");
      changed = true;
    }
  }
  changed |= EnforceTimeLimits();
  ChargeUsage();
  changed |= ResolveDependencies();
  // While the store fails, nothing is placed or preempted: those orders
  // could not leave anyway, and the queue may change before they could.
  if (store_error_.ok()) changed |= SchedulePass();
  // Writes this tick's changes; retries a failed write.
  const Ticket ticket = TakeTicket(/*retry=*/true);
  lock.Release();
  AwaitTicket(ticket).IgnoreError();
  return changed;
}

void Core::AwaitWork(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&work_pending_), timeout);
}

}  // namespace dcvlr
