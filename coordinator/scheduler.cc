#include "coordinator/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/scheduler_book.h"
#include "coordinator/scheduler_victims.h"

namespace dcvlr {
namespace {

const ClusterConfig& DefaultConfig() {
  static const ClusterConfig* const kConfig = new ClusterConfig();
  return *kConfig;
}

// "45s", "12m", "3h5m", "2d4h".
std::string FormatDuration(int64_t ms) {
  int64_t s = std::max<int64_t>(0, (ms + 999) / 1000);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m");
  if (s < 86400) {
    return absl::StrCat(s / 3600, "h",
                        s % 3600 / 60 ? absl::StrCat(s % 3600 / 60, "m") : "");
  }
  return absl::StrCat(
      s / 86400, "d",
      s % 86400 / 3600 ? absl::StrCat(s % 86400 / 3600, "h") : "");
}

std::string Plural(int n, absl::string_view word) {
  return absl::StrCat(n, " ", word, n == 1 ? "" : "s");
}

// One pass of LabPolicy over one input; the numbered steps are LabPolicy's.
class Pass {
 public:
  explicit Pass(const SchedulerInput& input)
      : in_(input),
        config_(input.config ? *input.config : DefaultConfig()),
        book_(input.nodes, input.now_ms),
        grace_ms_(static_cast<int64_t>(config_.default_grace_s * 1000)) {}

  SchedulerDecisions Run();

 private:
  // A pending job with its sort key inline (the sort is the pass's
  // largest cost with a long queue).
  struct Job {
    int tier;
    double factor;
    int64_t submit_ms;
    int64_t seq;
    const PendingJob* spec;
    int account;  // index into out_.fair_shares
    double effective_priority;
  };

  // Priority points a job pending since `since_ms` has gained by `at_ms`.
  double Aging(int64_t since_ms, int64_t at_ms) const {
    if (since_ms <= 0 || at_ms <= since_ms) return 0;
    return std::min(config_.aging_max_points,
                    config_.aging_points_per_hour * (at_ms - since_ms) / 3.6e6);
  }
  int AccountOf(const std::string& user, const std::string& group);
  std::string GroupOf(const std::string& user, const std::string& group) const;
  void BuildAccounts();
  std::vector<Job> Order();
  void BuildTimeline();
  std::string QuotaReason(const Job& job, int total) const;
  // Steps 4b-d for one job; returns the reason it waits, "" when placed.
  std::string Schedule(const Job& job);
  std::string Block(const Job& job, int n, int g);
  // The `count` nodes where `gpus` GPUs come free soonest, and when.
  std::pair<int64_t, std::vector<int>> BestStart(int count, int gpus) const;
  int64_t StartOn(const std::vector<int>& nodes, int gpus) const;
  void Reserve(const Job& job, const std::vector<int>& nodes, int64_t start);
  std::string Where(const std::vector<int>& nodes, int64_t start) const;

  const SchedulerInput& in_;
  const ClusterConfig& config_;
  ClusterBook book_;
  const int64_t grace_ms_;
  SchedulerDecisions out_;

  absl::flat_hash_map<std::string, int> account_index_;
  std::vector<int> queue_account_;                     // by index in the queue
  std::vector<int> user_quota_;                        // by account
  std::vector<int> group_quota_;                       // by account
  std::map<std::pair<int, int>, std::string> wanted_;  // by (nodes, gpus)
  absl::flat_hash_map<std::string, int> user_used_;
  absl::flat_hash_map<std::string, int> group_used_;
  std::vector<int> node_sizes_;  // total GPUs per node, descending
  absl::flat_hash_map<std::string, int> node_index_;
  // Built on the first preemption attempt of the pass.
  VictimFinder& Victims();
  std::vector<VictimFinder::Holding> holdings_;
  VictimFinder victims_;
  bool victims_ready_ = false;
  int reservations_left_ = 0;
  // Shapes (nodes, gpus) known to find no GPUs within a grace, and shapes
  // with the priority for which preemption found no victims. Either holds
  // for every later job at least as large (and, for preemption, at most as
  // urgent), since within a pass the cluster only fills (GPUs a preemption
  // frees beyond what its job claims are seen by the next pass).
  struct Shape {
    int nodes, gpus, priority;
  };
  static bool Covered(const std::vector<Shape>& known, int n, int g, int p) {
    for (const Shape& s : known) {
      if (n >= s.nodes && g >= s.gpus && p <= s.priority) return true;
    }
    return false;
  }
  std::vector<Shape> not_soon_;
  std::vector<Shape> never_;  // shapes that no node set can ever hold
  std::vector<Shape> preempt_failed_;
};

std::string Pass::GroupOf(const std::string& user,
                          const std::string& group) const {
  auto it = config_.users.find(user);
  if (it != config_.users.end()) return it->second.group;
  return group.empty() ? std::string(kDefaultGroup) : group;
}

int Pass::AccountOf(const std::string& user, const std::string& group) {
  auto [it, inserted] = account_index_.try_emplace(
      user, static_cast<int>(out_.fair_shares.size()));
  if (inserted) {
    FairShare share;
    share.user = user;
    share.group = GroupOf(user, group);
    out_.fair_shares.push_back(std::move(share));
  }
  return it->second;
}

// Step 1.
void Pass::BuildAccounts() {
  for (const auto& [user, entry] : config_.users) AccountOf(user, "");
  queue_account_.reserve(in_.queue.size());
  for (const PendingJob& job : in_.queue) {
    queue_account_.push_back(AccountOf(job.user, job.group));
  }
  for (const RunningAttempt& r : in_.running) AccountOf(r.user, r.group);
  for (const auto& [user, usage] : in_.usage.user_gpu_s) AccountOf(user, "");
  std::vector<ShareAccount> accounts;
  accounts.reserve(out_.fair_shares.size());
  for (const FairShare& f : out_.fair_shares) {
    auto it = config_.users.find(f.user);
    accounts.push_back({f.user, f.group,
                        it == config_.users.end() ? 1.0 : it->second.shares,
                        config_.Group(f.group).shares});
  }
  out_.fair_shares = ComputeFairShares(accounts, in_.usage);
  user_quota_.resize(out_.fair_shares.size());
  group_quota_.resize(out_.fair_shares.size());
  for (size_t i = 0; i < out_.fair_shares.size(); ++i) {
    auto it = config_.users.find(out_.fair_shares[i].user);
    user_quota_[i] = it == config_.users.end() ? 0 : it->second.max_gpus;
    group_quota_[i] = config_.Group(out_.fair_shares[i].group).max_gpus;
  }
  for (const RunningAttempt& r : in_.running) {
    int gpus = 0;
    for (const NodePlacement& p : r.placements) gpus += p.gpus.size();
    user_used_[r.user] += gpus;
    group_used_[out_.fair_shares[account_index_[r.user]].group] += gpus;
  }
}

// Step 2.
std::vector<Pass::Job> Pass::Order() {
  // present[p]: some pending job has base priority p. highest[x]: the
  // highest present priority <= x, -1 for none.
  constexpr int kMax = 100;
  std::vector<bool> present(kMax + 1, false);
  for (const PendingJob& spec : in_.queue) {
    present[std::clamp(spec.priority, 0, kMax)] = true;
  }
  std::vector<int> highest(kMax + 1, -1);
  for (int p = 0, last = -1; p <= kMax; ++p) {
    if (present[p]) last = p;
    highest[p] = last;
  }
  std::vector<Job> jobs;
  jobs.reserve(in_.queue.size());
  for (size_t i = 0; i < in_.queue.size(); ++i) {
    const PendingJob& spec = in_.queue[i];
    const int base = std::clamp(spec.priority, 0, kMax);
    const double aging = Aging(spec.submit_ms, in_.now_ms);
    // The job competes in the highest tier of pending priorities its aged
    // priority reaches, so aging lifts it past other priorities but does
    // not reorder it among jobs of its own priority (fair share does).
    const int reached = static_cast<int>(std::min<double>(kMax, base + aging));
    const int tier = std::max(base, highest[reached]);
    const int account = queue_account_[i];
    jobs.push_back({tier, out_.fair_shares[account].factor, spec.submit_ms,
                    spec.seq, &spec, account, base + aging});
  }
  // Jobs of one (tier, factor) differ only in (submit, seq, id) order, and
  // a queue has few distinct (tier, factor) pairs, so a counting sort over
  // those pairs, fed in (submit, seq, id) order, keeps the pass linear. The
  // core's queue already comes in that order.
  auto before = [&](const Job& a, const Job& b) {
    if (a.submit_ms != b.submit_ms) return a.submit_ms < b.submit_ms;
    if (a.seq != b.seq) return a.seq < b.seq;
    return a.spec->id < b.spec->id;
  };
  std::vector<uint32_t> order(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) order[i] = i;
  if (!std::is_sorted(jobs.begin(), jobs.end(), before)) {
    std::sort(order.begin(), order.end(),
              [&](uint32_t a, uint32_t b) { return before(jobs[a], jobs[b]); });
  }
  // A larger key ranks first: tier in the top bits, then the factor (a
  // non-negative double's bits order as the double does).
  auto key_of = [](const Job& job) {
    uint64_t bits;
    const double factor = std::clamp(job.factor, 0.0, 1.0);
    std::memcpy(&bits, &factor, sizeof(bits));
    return (uint64_t(job.tier) << 56) | (bits >> 8);
  };
  absl::flat_hash_map<uint64_t, uint32_t> bucket_of;
  std::vector<uint32_t> bucket(jobs.size());
  std::vector<uint64_t> keys;
  for (size_t i = 0; i < jobs.size(); ++i) {
    auto [it, inserted] = bucket_of.try_emplace(key_of(jobs[i]), keys.size());
    if (inserted) keys.push_back(it->first);
    bucket[i] = it->second;
  }
  std::vector<uint32_t> by_key(keys.size());
  for (size_t b = 0; b < keys.size(); ++b) by_key[b] = b;
  std::sort(by_key.begin(), by_key.end(),
            [&](uint32_t a, uint32_t b) { return keys[a] > keys[b]; });
  std::vector<uint32_t> start(keys.size() + 1, 0);
  for (uint32_t b : bucket) ++start[b + 1];
  std::vector<uint32_t> offset(keys.size());
  for (size_t r = 0, at = 0; r < by_key.size(); ++r) {
    offset[by_key[r]] = at;
    at += start[by_key[r] + 1];
  }
  std::vector<Job> sorted(jobs.size());
  for (uint32_t i : order) sorted[offset[bucket[i]]++] = jobs[i];
  return sorted;
}

// Step 3.
void Pass::BuildTimeline() {
  for (size_t i = 0; i < in_.nodes.size(); ++i) {
    node_index_[in_.nodes[i].name] = static_cast<int>(i);
    node_sizes_.push_back(in_.nodes[i].total_gpus);
  }
  std::sort(node_sizes_.begin(), node_sizes_.end(), std::greater<int>());
  const int64_t now = in_.now_ms;
  for (size_t i = 0; i < in_.running.size(); ++i) {
    const RunningAttempt& r = in_.running[i];
    int64_t release = kNever;
    if (r.stopping) {
      release = r.stop_deadline_ms > 0 ? r.stop_deadline_ms : now + grace_ms_;
    } else if (r.time_limit_ms > 0) {
      release = r.started_ms + r.time_limit_ms;
      // Past its limit: the core is stopping it, or will.
      if (release < now) release = now + grace_ms_;
    }
    for (const NodePlacement& p : r.placements) {
      auto it = node_index_.find(p.node);
      if (it == node_index_.end()) continue;
      const int gpus = static_cast<int>(p.gpus.size());
      book_.AddRelease(it->second, release, gpus, static_cast<int>(i));
      if (config_.preemption) {
        holdings_.push_back({it->second, static_cast<int>(i), gpus});
      }
    }
  }
}

VictimFinder& Pass::Victims() {
  if (!victims_ready_) {
    std::vector<double> aged(in_.running.size());
    for (size_t i = 0; i < in_.running.size(); ++i) {
      const RunningAttempt& r = in_.running[i];
      aged[i] = r.priority + Aging(r.submit_ms, r.started_ms);
    }
    victims_.Init(in_, book_.size(), holdings_, std::move(aged));
    victims_ready_ = true;
  }
  return victims_;
}

std::string Pass::QuotaReason(const Job& job, int total) const {
  const FairShare& account = out_.fair_shares[job.account];
  auto check = [&](absl::string_view kind, const std::string& name, int max,
                   const absl::flat_hash_map<std::string, int>& used_map)
      -> std::string {
    if (max <= 0) return "";
    auto it = used_map.find(name);
    const int used = it == used_map.end() ? 0 : it->second;
    if (used + total <= max) return "";
    if (total > max) {
      return absl::StrCat("waiting: needs ", total, " GPUs, more than ", kind,
                          " ", name, "'s quota of ", max);
    }
    std::string reason = absl::StrCat("waiting: ", kind, " ", name,
                                      " at quota ", used, "/", max, " GPUs");
    if (used < max) absl::StrAppend(&reason, "; job needs ", total);
    return reason;
  };
  std::string reason =
      check("user", account.user, user_quota_[job.account], user_used_);
  if (reason.empty()) {
    reason =
        check("group", account.group, group_quota_[job.account], group_used_);
  }
  return reason;
}

std::pair<int64_t, std::vector<int>> Pass::BestStart(int count,
                                                     int gpus) const {
  std::vector<std::pair<int64_t, int>> starts;
  starts.reserve(book_.size());
  for (int node = 0; node < book_.size(); ++node) {
    const int64_t start = book_.EarliestStart(node, gpus);
    if (start != kNever) starts.push_back({start, node});
  }
  if (static_cast<int>(starts.size()) < count) return {kNever, {}};
  std::nth_element(starts.begin(), starts.begin() + (count - 1), starts.end());
  std::sort(starts.begin(), starts.begin() + count);
  std::vector<int> nodes;
  for (int i = 0; i < count; ++i) nodes.push_back(starts[i].second);
  std::sort(nodes.begin(), nodes.end());
  return {starts[count - 1].first, nodes};
}

int64_t Pass::StartOn(const std::vector<int>& nodes, int gpus) const {
  int64_t start = book_.now_ms();
  for (int node : nodes)
    start = std::max(start, book_.EarliestStart(node, gpus));
  return start;
}

void Pass::Reserve(const Job& job, const std::vector<int>& nodes,
                   int64_t start) {
  Reservation reservation{job.spec->id, start, {}, job.spec->gpus_per_node};
  for (int node : nodes) {
    book_.AddClaim(node, start, job.spec->gpus_per_node);
    reservation.nodes.push_back(in_.nodes[node].name);
  }
  out_.reservations.push_back(std::move(reservation));
}

std::string Pass::Where(const std::vector<int>& nodes, int64_t start) const {
  std::vector<std::string> names;
  for (size_t i = 0; i < nodes.size() && i < 4; ++i) {
    names.push_back(in_.nodes[nodes[i]].name);
  }
  if (nodes.size() > 4) names.push_back("...");
  return absl::StrCat(
      "reserved ", absl::StrJoin(names, ","),
      start <= in_.now_ms
          ? std::string(" now")
          : absl::StrCat(" in ", FormatDuration(start - in_.now_ms)));
}

// Steps 4c and 4d: the job cannot start now.
std::string Pass::Block(const Job& job, int n, int g) {
  const PendingJob& spec = *job.spec;
  auto [cached, inserted] = wanted_.try_emplace({n, g});
  if (inserted) {
    cached->second = absl::StrCat("waiting for ", Plural(n, "node"), " with ",
                                  Plural(g, "free GPU"));
  }
  std::string wanted = cached->second;
  if (book_.NodesWithFree(g) >= n) {
    wanted = spec.time_limit_ms > 0
                 ? "waiting: the free GPUs are reserved for earlier jobs and "
                   "its time_limit ends after their start"
                 : "waiting: the free GPUs are reserved for earlier jobs; a "
                   "time_limit ending before their start would let it "
                   "backfill";
  }
  const bool may_preempt =
      config_.preemption && !Covered(preempt_failed_, n, g, spec.priority);
  const int64_t soon = in_.now_ms + grace_ms_;
  int64_t start = kNever;
  std::vector<int> nodes;
  if (!Covered(not_soon_, n, g, 100)) {
    std::tie(start, nodes) = BestStart(n, g);
    if (start <= soon) {
      // GPUs come free within a grace (stopping victims, limits): hold them.
      Reserve(job, nodes, start);
      return absl::StrCat("waiting for GPUs that are being freed; ",
                          Where(nodes, start));
    }
    not_soon_.push_back({n, g, 100});
    if (start == kNever) never_.push_back({n, g, 100});
  }
  if (may_preempt) {
    std::optional<VictimFinder::Choice> choice =
        Victims().Choose(book_, n, g, spec.priority, job.tier, soon);
    if (!choice) {
      preempt_failed_.push_back({n, g, spec.priority});
    } else {
      for (int victim : choice->victims) {
        const RunningAttempt& r = in_.running[victim];
        out_.preemptions.push_back(
            {r.job_id, r.attempt, spec.id,
             absl::StrCat("preempted for ", spec.id, " (priority ",
                          spec.priority, " > ", r.priority, ")")});
        Victims().MarkStopping(&book_, victim, soon);
      }
      const int64_t at = StartOn(choice->nodes, g);
      Reserve(job, choice->nodes, at);
      return absl::StrCat("waiting for ",
                          Plural(choice->victims.size(), "preempted attempt"),
                          " to stop; ", Where(choice->nodes, at));
    }
  }
  if (reservations_left_ > 0 && !Covered(never_, n, g, 100)) {
    if (nodes.empty()) std::tie(start, nodes) = BestStart(n, g);
    if (start == kNever) {
      never_.push_back({n, g, 100});
      return wanted;
    }
    --reservations_left_;
    Reserve(job, nodes, start);
    return absl::StrCat(wanted, "; ", Where(nodes, start));
  }
  return wanted;
}

// Step 4.
std::string Pass::Schedule(const Job& job) {
  const PendingJob& spec = *job.spec;
  const int n = std::max(1, spec.nodes), g = std::max(0, spec.gpus_per_node);
  const int total = n * g;
  // 4a.
  std::string reason = QuotaReason(job, total);
  if (!reason.empty()) return reason;
  if (static_cast<int>(node_sizes_.size()) < n || node_sizes_[n - 1] < g) {
    return absl::StrCat("waiting: the cluster has no ", Plural(n, "node"),
                        " with ", Plural(g, "GPU"));
  }
  // 4b.
  const int64_t end =
      spec.time_limit_ms > 0 ? in_.now_ms + spec.time_limit_ms : kNever;
  std::vector<int> nodes = book_.FindNodes(n, g, end);
  if (static_cast<int>(nodes.size()) < n) return Block(job, n, g);
  Placement placement{spec.id, {}};
  for (int node : nodes) {
    placement.nodes.push_back({in_.nodes[node].name, book_.Take(node, g, end)});
  }
  out_.placements.push_back(std::move(placement));
  user_used_[spec.user] += total;
  group_used_[out_.fair_shares[job.account].group] += total;
  return "";
}

SchedulerDecisions Pass::Run() {
  reservations_left_ = config_.max_reservations;
  BuildAccounts();
  std::vector<Job> jobs = Order();
  BuildTimeline();
  out_.queue.reserve(jobs.size());
  out_.waiting.reserve(jobs.size());
  for (const Job& job : jobs) {
    std::string reason = Schedule(job);
    int waiting = -1;
    if (!reason.empty()) {
      waiting = static_cast<int>(out_.waiting.size());
      out_.waiting.push_back({job.spec->id, std::move(reason)});
    }
    const FairShare& account = out_.fair_shares[job.account];
    out_.queue.push_back({job.spec->id, account.user, account.group,
                          job.spec->priority, job.effective_priority,
                          account.factor, waiting});
  }
  return std::move(out_);
}

}  // namespace

SchedulerDecisions LabPolicy::Schedule(const SchedulerInput& input) const {
  return Pass(input).Run();
}

}  // namespace dcvlr
