#include "coordinator/scheduler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/base/attributes.h"
#include "absl/base/optimization.h"
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

// Hash and equality for the short names (users, nodes) a pass looks up once
// per job and per running attempt: absl's general string hash and an
// out-of-line memcmp were a tenth of a pass. Both read a name as at most
// two overlapping words when it is 16 bytes or shorter.
inline uint64_t Load8(const char* p) {
  uint64_t word;
  std::memcpy(&word, p, 8);
  return word;
}
inline uint32_t Load4(const char* p) {
  uint32_t word;
  std::memcpy(&word, p, 4);
  return word;
}

// The name as two words that differ whenever two names of one size do.
ABSL_ATTRIBUTE_ALWAYS_INLINE inline std::pair<uint64_t, uint64_t> Words(
    absl::string_view s) {
  const char* p = s.data();
  const size_t n = s.size();
  if (n >= 8) return {Load8(p), Load8(p + n - 8)};
  if (n >= 4) return {Load4(p), Load4(p + n - 4)};
  if (n == 0) return {0, 0};
  return {static_cast<unsigned char>(p[0]) |
              uint64_t(static_cast<unsigned char>(p[n / 2])) << 8 |
              uint64_t(static_cast<unsigned char>(p[n - 1])) << 16,
          0};
}

struct NameHash {
  size_t operator()(absl::string_view s) const {
    constexpr uint64_t kMul = 0xff51afd7ed558ccdull;
    uint64_t h = s.size() * 0x9e3779b97f4a7c15ull;
    // Longer names: every word between the first and the last.
    for (size_t i = 8; i + 8 < s.size(); i += 8) {
      h = (h ^ Load8(s.data() + i)) * kMul;
      h ^= h >> 32;
    }
    const auto [a, b] = Words(s);
    h = (h ^ a) * kMul;
    h = (h ^ (h >> 29) ^ b) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 32);
  }
};

struct NameEq {
  bool operator()(absl::string_view a, absl::string_view b) const {
    if (a.size() != b.size()) return false;
    if (a.size() > 16) return a == b;
    return Words(a) == Words(b);
  }
};

// A name as its size and Words(), which tell names of up to 16 bytes apart
// exactly (as NameEq does) and longer ones only probably.
struct NameKey {
  std::pair<uint64_t, uint64_t> words;
  size_t size = ~size_t{0};  // none

  static NameKey Of(absl::string_view name) {
    return {Words(name), name.size()};
  }
  bool operator==(const NameKey&) const = default;
};

// Names to indices; the names are views of the input and the config, which
// outlive the pass.
using NameIndex = absl::flat_hash_map<absl::string_view, int, NameHash, NameEq>;

// An allocator whose resize() leaves new elements of trivial types
// uninitialised: the pass's per-job arrays are written in full before they
// are read, so zeroing them first is wasted.
template <typename T>
struct Uninitialised : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = Uninitialised<U>;
  };
  Uninitialised() = default;
  template <typename U>
  Uninitialised(const Uninitialised<U>&) {}
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
template <typename T>
using Array = std::vector<T, Uninitialised<T>>;

std::string Plural(int n, absl::string_view word) {
  return absl::StrCat(n, " ", word, n == 1 ? "" : "s");
}

// One pass of LabPolicy over one input; the numbered steps are LabPolicy's.
class Pass {
 public:
  explicit Pass(const SchedulerInput& input)
      : in_(input),
        config_(input.config ? *input.config : DefaultConfig()),
        scratch_(TakeScratch()),
        book_(scratch_->book),
        grace_ms_(static_cast<int64_t>(config_.default_grace_s * 1000)),
        explain_(input.explain) {
    book_.Reset(input.nodes, input.now_ms);
  }
  ~Pass() { KeptScratch() = std::move(scratch_); }

  SchedulerDecisions Run();

 private:
  // A pending job with what the pass reads of it inline: the passes over
  // the ordered queue read these 48 bytes instead of visiting each
  // PendingJob (the pass's largest cost with a long queue was that miss).
  struct Job {
    // Until Order(): the priority its aged priority reaches (at most 100).
    int tier;
    int index;    // into in_.queue
    int account;  // index into out_.fair_shares
    int nodes;    // at least 1
    int gpus;     // per node, at least 0
    int priority;
    int shape;  // index into shapes_
    int64_t time_limit_ms;
    // The shortest time limit (kNever for none) among the jobs of its shape
    // after it in the order; kNoneLeft when it is the last of its shape.
    int64_t rest_limit;

    const PendingJob& spec(const SchedulerInput& in) const {
      return in.queue[index];
    }
  };
  // A job's time limit, kNever for none.
  static int64_t LimitOf(const Job& job) {
    return job.time_limit_ms > 0 ? job.time_limit_ms : kNever;
  }
  // When a job placed now ends by its limit, kNever for none.
  int64_t EndOf(const Job& job) const {
    return job.time_limit_ms > 0 ? in_.now_ms + job.time_limit_ms : kNever;
  }

  // The order among jobs of one tier and fair-share factor.
  static bool Before(const PendingJob& a, const PendingJob& b) {
    if (a.submit_ms != b.submit_ms) return a.submit_ms < b.submit_ms;
    if (a.seq != b.seq) return a.seq < b.seq;
    return a.id < b.id;
  }
  // Priority points a job pending since `since_ms` has gained by `at_ms`.
  double Aging(int64_t since_ms, int64_t at_ms) const {
    if (since_ms <= 0 || at_ms <= since_ms) return 0;
    return std::min(config_.aging_max_points,
                    config_.aging_points_per_hour * (at_ms - since_ms) / 3.6e6);
  }
  // Priority plus aging points.
  double EffectivePriority(const PendingJob& spec) const {
    return std::clamp(spec.priority, 0, kMaxPriority) +
           Aging(spec.submit_ms, in_.now_ms);
  }
  // What Schedule() returns for a waiting job when the pass does not
  // explain.
  static constexpr int kWaits = 0;
  // The index of the reason `text()` makes, or kWaits when not explaining.
  template <typename Text>
  int Explain(Text text) {
    return explain_ ? Intern(text()) : kWaits;
  }
  int AccountOf(const std::string& user, const std::string& group);
  // AccountOf() through a small direct-mapped cache of names: a pass looks
  // up a few users' names once per job and per running attempt.
  int CachedAccountOf(const std::string& user, const std::string& group);
  std::string GroupOf(const std::string& user, const std::string& group) const;
  void BuildAccounts();
  // Fills order_ and the jobs' tiers.
  void Order();
  // Also counts the GPUs each account and group holds.
  void BuildTimeline();
  // The index of `p`'s node in in_.nodes; -1 when it is not there.
  int NodeOf(const NodePlacement& p);
  // The reason the job's quota holds it back (an index into out_.reasons),
  // -1 for none.
  int QuotaReason(const Job& job, int total);
  std::string QuotaText(const Job& job, int total) const;
  // Steps 4a-d for one job; returns the reason it waits, -1 when placed.
  int Schedule(const Job& job);
  int Block(const Job& job, int n, int g);
  // The index of `reason` in out_.reasons, adding it if new.
  int Intern(std::string reason);
  // The `count` nodes where `gpus` GPUs come free soonest, and when.
  std::pair<int64_t, std::vector<int>> BestStart(int count, int gpus);
  // By GPU count: EarliestStart() by node as of book_.changed() up to
  // `read`.
  struct KnownStarts {
    std::vector<int64_t> start;
    size_t read = 0;
  };
  std::vector<KnownStarts> known_starts_;
  int64_t StartOn(const std::vector<int>& nodes, int gpus) const;
  // How many nodes have `gpus` GPUs free for good from now + the default
  // grace on, i.e. whose ClusterBook::EarliestStart() is no later.
  int FreeSoon(int gpus);
  // The GPUs `node` has free for good from now + the default grace on, at
  // most most_gpus_.
  int SoonFree(int node) const;
  void Reserve(const Job& job, const std::vector<int>& nodes, int64_t start);
  std::string Where(const std::vector<int>& nodes, int64_t start) const;
  // Step 5: sizes its tables for jobs_ (before Order()).
  void PrepareSettle();
  // Step 5, called by Order() for each job from the last: fills the job's
  // rest_limit and shape_limit_, next_ and cursor_ for the jobs from `at`.
  void NoteRest(size_t at, Job& job);
  // Whether no job after `job` (just scheduled) can change a decision.
  bool Settled(const Job& job);
  // Step 5 once no reservation is left to make and no job left may
  // preempt: the cluster only fills for the rest of the pass, so a shape
  // whose jobs can decide nothing now never will, and the rest of the
  // order is read one live shape at a time, passing over the others' jobs.
  void Tail();
  // Whether jobs of shape `s` (its shortest limit left) may still decide
  // something; false stays false in the tail.
  bool StillLive(int s);
  // In the tail: whether `job` would find no room and nothing to hold
  // within a grace; then so would every later job of its shape whose limit
  // is no shorter, as the cluster only fills.
  bool Hopeless(const Job& job);
  // Whether a job of shape `s` whose time limit is shape_limit_[s] may be
  // placed now or reserve GPUs that come free within a grace.
  bool MayDecide(int s);
  int ShapeOf(int nodes, int gpus);

  const SchedulerInput& in_;
  const ClusterConfig& config_;
  // The memory of the book and the per-job arrays, kept per thread from
  // one pass to the next: fresh memory for them every pass cost page faults
  // (the kernel zeroing pages), 8% of the benchmark's time in Schedule().
  // Only the memory is kept; a pass writes every element it reads.
  struct Scratch {
    ClusterBook book;
    Array<Job> jobs;
    Array<uint32_t> order, next, pair;
  };
  static std::unique_ptr<Scratch>& KeptScratch() {
    thread_local std::unique_ptr<Scratch> kept;
    return kept;
  }
  static std::unique_ptr<Scratch> TakeScratch() {
    std::unique_ptr<Scratch> scratch = std::move(KeptScratch());
    return scratch != nullptr ? std::move(scratch)
                              : std::make_unique<Scratch>();
  }
  std::unique_ptr<Scratch> scratch_;
  ClusterBook& book_;
  const int64_t grace_ms_;
  const bool explain_;
  SchedulerDecisions out_;

  static constexpr int kMaxPriority = 100;
  NameIndex account_index_;
  struct CachedName {
    NameKey name;
    int account = -1;
  };
  std::array<CachedName, 64> name_cache_;
  // In queue order.
  Array<Job>& jobs_ = scratch_->jobs;
  // By job: its (account, reached priority) pair, an index into
  // reached_count_.
  Array<uint32_t>& pair_ = scratch_->pair;
  // Indices into jobs_ in scheduling order (Order()).
  Array<uint32_t>& order_ = scratch_->order;
  bool present_[kMaxPriority + 1] = {};  // some pending job has priority p
  // Pending jobs by account and the priority their aged priority reaches:
  // [account * (kMaxPriority + 1) + reached].
  std::vector<uint32_t> reached_count_;
  bool in_order_ = true;              // the queue comes in Before() order
  std::vector<int> user_quota_;       // by account
  std::vector<int> group_quota_;      // by account
  std::vector<int> account_group_;    // by account: index of its group
  std::vector<int> running_account_;  // by running attempt
  std::vector<int> user_used_;        // GPUs in use, by account
  std::vector<int> group_used_;       // GPUs in use, by group index
  bool any_quota_ = false;
  absl::flat_hash_map<std::string, int> reason_index_;
  // Reasons already built this pass: by (account << 32 | GPUs) for quotas,
  // until the next placement changes the counts; "reserved for earlier
  // jobs" without and with a time limit.
  absl::flat_hash_map<uint64_t, int> quota_reason_;
  int reserved_reason_[2] = {-1, -1};
  // at_least_total_[g]: how many nodes have g GPUs or more, for g up to
  // most_gpus_.
  std::vector<int> at_least_total_;
  // Whether fewer than `n` nodes have `g` GPUs (free or not).
  bool TooLarge(int n, int g) const {
    return g > most_gpus_ || at_least_total_[std::max(g, 0)] < n;
  }
  NameIndex node_index_;  // built when a placement has no index
  // By node: its name's key, to check placements' indices without reading
  // the snapshot's nodes again.
  std::vector<NameKey> node_names_;
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
  // Shapes FindNodes() found no room for now, with the end of the job that
  // asked: a later job at least as large that ends no earlier finds none
  // either, as long as the cluster only fills. A preemption moves releases
  // earlier, so it clears the list.
  struct Tried {
    int nodes, gpus;
    int64_t end_ms;
  };
  std::vector<Tried> no_room_;  // one per shape, the earliest end
  // Whether `n` nodes with `g` free GPUs until `end` are known not to be
  // there: too few nodes have them free, or no_room_ says so.
  bool KnownNoRoom(int n, int g, int64_t end) const {
    if (book_.NodesWithFree(g) < n) return true;
    for (const Tried& t : no_room_) {
      if (n >= t.nodes && g >= t.gpus && end >= t.end_ms) return true;
    }
    return false;
  }
  void NoRoom(int n, int g, int64_t end) {
    for (Tried& t : no_room_) {
      if (t.nodes == n && t.gpus == g) {
        t.end_ms = std::min(t.end_ms, end);
        return;
      }
    }
    no_room_.push_back({n, g, end});
  }
  // wanted_[n * (most_gpus_ + 1) + g]: the reason "waiting for n nodes
  // with g free GPUs", -1 until built.
  std::vector<int> wanted_;
  int most_gpus_ = 0;

  // Step 5. Shapes (nodes, GPUs per node) of pending jobs; shape_table_
  // indexes small ones directly, shape_index_ the rest.
  static constexpr int kTableNodes = 64, kTableGpus = 16;
  static constexpr int64_t kNoneLeft = -1;
  std::vector<std::pair<int, int>> shapes_;
  std::vector<int16_t> shape_table_;
  absl::flat_hash_map<uint64_t, int> shape_index_;
  // By shape: the shortest time limit among its jobs not yet scheduled
  // (kNoneLeft: none left), and the book's version when it was found
  // unable to decide anything (so until the next decision, as limits
  // only grow).
  std::vector<int64_t> shape_limit_;
  std::vector<int64_t> dead_at_;
  // By shape: the version and limit it was last found able to decide at.
  std::vector<int64_t> live_at_, live_limit_;
  // next_[i]: the position in the order of the next job of order[i]'s
  // shape (the order's size for none); cursor_[s]: shape s's next job not
  // yet scheduled.
  Array<uint32_t>& next_ = scratch_->next;
  std::vector<uint32_t> cursor_;
  // Counts decisions, each of which changes the book.
  int64_t version_ = 0;
  // A shape found able to decide, its limit and the version then.
  int witness_ = -1;
  int64_t witness_limit_ = 0, witness_version_ = -1;
  // FreeSoon(): by node, SoonFree() as of book_.changed() up to
  // soon_read_; how many nodes have each value; soon_[g]: FreeSoon(g),
  // empty when out of date.
  std::vector<int> soon_free_, soon_exactly_, soon_;
  size_t soon_read_ = 0;
  // Pending jobs (not yet scheduled) of higher priority than the lowest
  // running attempt that is not stopping, with preemption on.
  int lowest_running_priority_ = std::numeric_limits<int>::max();
  int64_t preempters_left_ = 0;
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
    reached_count_.resize(reached_count_.size() + kMaxPriority + 1, 0);
    FairShare share;
    share.user = user;
    share.group = GroupOf(user, group);
    out_.fair_shares.push_back(std::move(share));
  }
  return it->second;
}

inline int Pass::CachedAccountOf(const std::string& user,
                                 const std::string& group) {
  if (ABSL_PREDICT_FALSE(user.size() > 16)) return AccountOf(user, group);
  const NameKey name = NameKey::Of(user);
  uint64_t h = (name.words.first ^ name.size) * 0x9e3779b97f4a7c15ull;
  h = (h ^ name.words.second) * 0xff51afd7ed558ccdull;
  CachedName& cached = name_cache_[h >> 58];
  if (ABSL_PREDICT_FALSE(!(cached.name == name))) {
    cached = {name, AccountOf(user, group)};
  }
  return cached.account;
}

// Step 1.
void Pass::BuildAccounts() {
  for (const auto& [user, entry] : config_.users) AccountOf(user, "");
  // One read of the queue: each job's account, aged priority and shape.
  jobs_.resize(in_.queue.size());
  pair_.resize(in_.queue.size());
  const PendingJob* last = nullptr;
  for (size_t i = 0; i < in_.queue.size(); ++i) {
    const PendingJob& spec = in_.queue[i];
    const int account = CachedAccountOf(spec.user, spec.group);
    // The order the sort in Order() starts from, checked while the job is
    // at hand.
    if (last != nullptr && in_order_) in_order_ = !Before(spec, *last);
    last = &spec;
    const int base = std::clamp(spec.priority, 0, kMaxPriority);
    present_[base] = true;
    const int nodes = std::max(1, spec.nodes);
    const int gpus = std::max(0, spec.gpus_per_node);
    const int reached = static_cast<int>(
        std::min<double>(kMaxPriority, EffectivePriority(spec)));
    // Field by field: a whole record built aside and then copied stalled
    // on store forwarding in the profile.
    Job& job = jobs_[i];
    job.tier = reached;
    job.index = static_cast<int>(i);
    job.account = account;
    job.nodes = nodes;
    job.gpus = gpus;
    job.priority = spec.priority;
    job.shape = explain_ ? 0 : ShapeOf(nodes, gpus);
    job.time_limit_ms = spec.time_limit_ms;
    job.rest_limit = kNoneLeft;
    pair_[i] = account * (kMaxPriority + 1) + reached;
    ++reached_count_[pair_[i]];
  }
  running_account_.reserve(in_.running.size());
  for (const RunningAttempt& r : in_.running) {
    running_account_.push_back(CachedAccountOf(r.user, r.group));
    if (!r.stopping) {
      lowest_running_priority_ = std::min(lowest_running_priority_, r.priority);
    }
  }
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
  const size_t count = out_.fair_shares.size();
  user_quota_.resize(count);
  group_quota_.resize(count);
  account_group_.resize(count);
  user_used_.assign(count, 0);
  absl::flat_hash_map<std::string, int> group_index;
  for (size_t i = 0; i < count; ++i) {
    const FairShare& share = out_.fair_shares[i];
    auto it = config_.users.find(share.user);
    user_quota_[i] = it == config_.users.end() ? 0 : it->second.max_gpus;
    group_quota_[i] = config_.Group(share.group).max_gpus;
    any_quota_ |= user_quota_[i] > 0 || group_quota_[i] > 0;
    account_group_[i] =
        group_index.try_emplace(share.group, group_index.size()).first->second;
  }
  group_used_.assign(group_index.size(), 0);
}

// Step 2.
void Pass::Order() {
  constexpr int kMax = kMaxPriority;
  // highest[x]: the highest priority of a pending job <= x, -1 for none.
  std::array<int, kMax + 1> highest;
  for (int p = 0, last = -1; p <= kMax; ++p) {
    if (present_[p]) last = p;
    highest[p] = last;
  }
  // A job competes in the highest tier of pending priorities its aged
  // priority reaches (jobs_[i].tier until now), so aging lifts it past
  // other priorities but does not reorder it among jobs of its own
  // priority (fair share does).
  auto tier_of = [&](const Job& job) {
    return std::max(std::clamp(job.priority, 0, kMax), highest[job.tier]);
  };
  // A larger key ranks first: tier in the top bits, then the factor (a
  // non-negative double's bits order as the double does).
  auto key_of = [&](int tier, int account) {
    uint64_t bits;
    const double factor =
        std::clamp(out_.fair_shares[account].factor, 0.0, 1.0);
    std::memcpy(&bits, &factor, sizeof(bits));
    return (uint64_t(tier) << 56) | (bits >> 8);
  };
  // Jobs of one (tier, factor) differ only in (submit, seq, id) order, and
  // a queue has few distinct (tier, factor) pairs, so a counting sort over
  // those pairs, fed in (submit, seq, id) order, keeps the pass linear. The
  // core's queue already comes in that order. BuildAccounts() counted the
  // jobs by (account, reached priority); each such pair has one key.
  std::vector<int32_t> bucket_of(reached_count_.size(), -1);
  absl::flat_hash_map<uint64_t, uint32_t> bucket_by_key;
  std::vector<uint64_t> keys;
  std::vector<uint32_t> sizes;
  for (size_t pair = 0; pair < bucket_of.size(); ++pair) {
    const uint32_t count = reached_count_[pair];
    if (count == 0) continue;
    const int account = static_cast<int>(pair / (kMax + 1));
    const int reached = static_cast<int>(pair % (kMax + 1));
    // Every job counted here shares its priority's clamp no higher than
    // `reached`, and that priority is present: its tier is highest[reached].
    const uint64_t key = key_of(highest[reached], account);
    auto [it, inserted] = bucket_by_key.try_emplace(key, keys.size());
    if (inserted) {
      keys.push_back(key);
      sizes.push_back(0);
    }
    bucket_of[pair] = static_cast<int32_t>(it->second);
    sizes[it->second] += count;
  }
  std::vector<uint32_t> by_key(keys.size());
  for (size_t b = 0; b < keys.size(); ++b) by_key[b] = b;
  std::sort(by_key.begin(), by_key.end(),
            [&](uint32_t a, uint32_t b) { return keys[a] > keys[b]; });
  std::vector<uint32_t> offset(keys.size());
  for (size_t r = 0, at = 0; r < by_key.size(); ++r) {
    offset[by_key[r]] = at;
    at += sizes[by_key[r]];
  }
  Array<Job>& jobs = jobs_;
  Array<uint32_t>& from = order_;
  from.resize(jobs.size());
  auto place = [&](uint32_t i) { from[offset[bucket_of[pair_[i]]]++] = i; };
  if (in_order_) {
    for (uint32_t i = 0; i < jobs.size(); ++i) place(i);
  } else {
    std::vector<uint32_t> order(jobs.size());
    for (size_t i = 0; i < jobs.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      return Before(jobs[a].spec(in_), jobs[b].spec(in_));
    });
    for (uint32_t i : order) place(i);
  }
  // From the back, so that a pass that does not explain notes what step 5
  // needs of each job (NoteRest) in the same loop.
  for (size_t at = from.size(); at-- > 0;) {
    Job& job = jobs[from[at]];
    job.tier = tier_of(job);
    if (!explain_) NoteRest(at, job);
  }
}

// Step 3.
int Pass::NodeOf(const NodePlacement& p) {
  const int hint = p.node_index;
  if (hint >= 0 && hint < static_cast<int>(node_names_.size())) {
    if (p.node.size() <= 16 ? node_names_[hint] == NameKey::Of(p.node)
                            : in_.nodes[hint].name == p.node) {
      return hint;
    }
  }
  if (node_index_.empty()) {
    node_index_.reserve(in_.nodes.size());
    for (size_t i = 0; i < in_.nodes.size(); ++i) {
      node_index_.try_emplace(in_.nodes[i].name, static_cast<int>(i));
    }
  }
  auto it = node_index_.find(p.node);
  return it == node_index_.end() ? -1 : it->second;
}

void Pass::BuildTimeline() {
  most_gpus_ = 0;
  node_names_.reserve(in_.nodes.size());
  for (const NodeSnapshot& node : in_.nodes) {
    most_gpus_ = std::max(most_gpus_, node.total_gpus);
    node_names_.push_back(NameKey::Of(node.name));
  }
  at_least_total_.assign(most_gpus_ + 2, 0);
  for (const NodeSnapshot& node : in_.nodes) {
    ++at_least_total_[std::max(node.total_gpus, 0)];
  }
  for (int g = most_gpus_; g >= 0; --g) {
    at_least_total_[g] += at_least_total_[g + 1];
  }
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
    int held = 0;  // on any node, in the snapshot or not
    for (const NodePlacement& p : r.placements) {
      const int gpus = static_cast<int>(p.gpus.size());
      held += gpus;
      const int node = NodeOf(p);
      if (node < 0) continue;
      book_.AddRelease(node, release, gpus, static_cast<int>(i));
      if (config_.preemption) {
        holdings_.push_back({node, static_cast<int>(i), gpus});
      }
    }
    user_used_[running_account_[i]] += held;
    group_used_[account_group_[running_account_[i]]] += held;
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

int Pass::Intern(std::string reason) {
  auto [it, inserted] =
      reason_index_.try_emplace(std::move(reason), out_.reasons.size());
  if (inserted) out_.reasons.push_back(it->first);
  return it->second;
}

std::string Pass::QuotaText(const Job& job, int total) const {
  const FairShare& account = out_.fair_shares[job.account];
  auto check = [&](absl::string_view kind, const std::string& name, int max,
                   int used) -> std::string {
    if (max <= 0) return "";
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
  std::string reason = check("user", account.user, user_quota_[job.account],
                             user_used_[job.account]);
  if (reason.empty()) {
    reason = check("group", account.group, group_quota_[job.account],
                   group_used_[account_group_[job.account]]);
  }
  return reason;
}

int Pass::QuotaReason(const Job& job, int total) {
  if (!any_quota_) return -1;
  const int user_max = user_quota_[job.account];
  const int group_max = group_quota_[job.account];
  if ((user_max <= 0 || user_used_[job.account] + total <= user_max) &&
      (group_max <= 0 ||
       group_used_[account_group_[job.account]] + total <= group_max)) {
    return -1;
  }
  if (!explain_) return kWaits;
  const uint64_t key = uint64_t(job.account) << 32 | uint32_t(total);
  auto [it, inserted] = quota_reason_.try_emplace(key, -1);
  if (inserted) it->second = Intern(QuotaText(job, total));
  return it->second;
}

std::pair<int64_t, std::vector<int>> Pass::BestStart(int count, int gpus) {
  // EarliestStart() by node for this many GPUs, brought up to date with
  // the nodes that changed since the last call.
  if (static_cast<int>(known_starts_.size()) <= gpus) {
    known_starts_.resize(gpus + 1);
  }
  KnownStarts& known = known_starts_[gpus];
  const std::vector<int>& changed = book_.changed();
  if (known.start.empty()) {
    known.start.resize(book_.size());
    for (int node = 0; node < book_.size(); ++node) {
      known.start[node] = book_.EarliestStart(node, gpus);
    }
    known.read = changed.size();
  }
  for (; known.read < changed.size(); ++known.read) {
    const int node = changed[known.read];
    known.start[node] = book_.EarliestStart(node, gpus);
  }
  // The `count` least (start, node) pairs, in a max-heap.
  std::vector<std::pair<int64_t, int>> starts;
  starts.reserve(count + 1);
  for (int node = 0; node < book_.size(); ++node) {
    const std::pair<int64_t, int> start{known.start[node], node};
    if (start.first == kNever) continue;
    if (static_cast<int>(starts.size()) < count) {
      starts.push_back(start);
      std::push_heap(starts.begin(), starts.end());
    } else if (start < starts.front()) {
      std::pop_heap(starts.begin(), starts.end());
      starts.back() = start;
      std::push_heap(starts.begin(), starts.end());
    }
  }
  if (static_cast<int>(starts.size()) < count) return {kNever, {}};
  std::sort_heap(starts.begin(), starts.end());
  std::vector<int> nodes;
  for (int i = 0; i < count; ++i) nodes.push_back(starts[i].second);
  std::sort(nodes.begin(), nodes.end());
  return {starts[count - 1].first, nodes};
}

int Pass::SoonFree(int node) const {
  // A node whose free count never drops below k from `soon` on has k GPUs
  // free for good by then; such a node has them free now or has a release
  // by then.
  const int64_t soon = in_.now_ms + grace_ms_;
  if (book_.free_now(node) == 0 && !book_.ReleasesBy(node, soon)) return 0;
  const int lowest = book_.MinFreeFrom(node, soon, [](int) { return false; });
  return std::clamp(lowest, 0, most_gpus_);
}

int Pass::FreeSoon(int gpus) {
  if (grace_ms_ < 0) return 0;  // no start is earlier than now
  if (gpus <= 0) return book_.size();
  if (gpus > most_gpus_) return 0;
  const std::vector<int>& changed = book_.changed();
  if (soon_free_.empty()) {
    soon_free_.resize(book_.size());
    soon_exactly_.assign(most_gpus_ + 1, 0);
    for (int node = 0; node < book_.size(); ++node) {
      soon_free_[node] = SoonFree(node);
      ++soon_exactly_[soon_free_[node]];
    }
    soon_read_ = changed.size();
    soon_.clear();
  }
  for (; soon_read_ < changed.size(); ++soon_read_) {
    const int node = changed[soon_read_];
    --soon_exactly_[soon_free_[node]];
    soon_free_[node] = SoonFree(node);
    ++soon_exactly_[soon_free_[node]];
    soon_.clear();
  }
  if (soon_.empty()) {
    soon_.assign(most_gpus_ + 2, 0);
    for (int k = most_gpus_; k >= 1; --k) {
      soon_[k] = soon_[k + 1] + soon_exactly_[k];
    }
  }
  return soon_[gpus];
}

int64_t Pass::StartOn(const std::vector<int>& nodes, int gpus) const {
  int64_t start = book_.now_ms();
  for (int node : nodes)
    start = std::max(start, book_.EarliestStart(node, gpus));
  return start;
}

void Pass::Reserve(const Job& job, const std::vector<int>& nodes,
                   int64_t start) {
  ++version_;
  Reservation reservation{job.spec(in_).id, start, {}, job.gpus};
  for (int node : nodes) {
    book_.AddClaim(node, start, job.gpus);
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
int Pass::Block(const Job& job, int n, int g) {
  int wanted = kWaits;
  if (!explain_) {
    // No reason to build.
  } else if (book_.NodesWithFree(g) >= n) {
    const bool limited = job.time_limit_ms > 0;
    if (reserved_reason_[limited] < 0) {
      reserved_reason_[limited] = Intern(
          limited ? "waiting: the free GPUs are reserved for earlier jobs and "
                    "its time_limit ends after their start"
                  : "waiting: the free GPUs are reserved for earlier jobs; a "
                    "time_limit ending before their start would let it "
                    "backfill");
    }
    wanted = reserved_reason_[limited];
  } else {
    // Schedule() made sure that n <= nodes and g <= most_gpus_.
    if (wanted_.empty()) {
      wanted_.assign((in_.nodes.size() + 1) * (most_gpus_ + 1), -1);
    }
    int& cached = wanted_[n * (most_gpus_ + 1) + g];
    if (cached < 0) {
      cached = Intern(absl::StrCat("waiting for ", Plural(n, "node"), " with ",
                                   Plural(g, "free GPU")));
    }
    wanted = cached;
  }
  const bool may_preempt =
      config_.preemption && !Covered(preempt_failed_, n, g, job.priority);
  const int64_t soon = in_.now_ms + grace_ms_;
  int64_t start = kNever;
  std::vector<int> nodes;
  if (!Covered(not_soon_, n, g, 100) && reservations_left_ <= 0 &&
      FreeSoon(g) < n) {
    // With no reservation left to make, the nodes and the time matter
    // only when the job can start soon.
    not_soon_.push_back({n, g, 100});
  }
  if (!Covered(not_soon_, n, g, 100)) {
    std::tie(start, nodes) = BestStart(n, g);
    if (start <= soon) {
      // GPUs come free within a grace (stopping victims, limits): hold them.
      Reserve(job, nodes, start);
      return Explain([&] {
        return absl::StrCat("waiting for GPUs that are being freed; ",
                            Where(nodes, start));
      });
    }
    not_soon_.push_back({n, g, 100});
    if (start == kNever) never_.push_back({n, g, 100});
  }
  if (may_preempt) {
    const PendingJob& spec = job.spec(in_);
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
      ++version_;
      no_room_.clear();  // releases moved earlier
      const int64_t at = StartOn(choice->nodes, g);
      Reserve(job, choice->nodes, at);
      return Explain([&] {
        return absl::StrCat("waiting for ",
                            Plural(choice->victims.size(), "preempted attempt"),
                            " to stop; ", Where(choice->nodes, at));
      });
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
    return Explain([&] {
      return absl::StrCat(out_.reasons[wanted], "; ", Where(nodes, start));
    });
  }
  return wanted;
}

// Step 4.
int Pass::Schedule(const Job& job) {
  const int n = job.nodes, g = job.gpus;
  const int total = n * g;
  // 4a.
  if (int reason = QuotaReason(job, total); reason >= 0) return reason;
  if (TooLarge(n, g)) {
    return Explain([&] {
      return absl::StrCat("waiting: the cluster has no ", Plural(n, "node"),
                          " with ", Plural(g, "GPU"));
    });
  }
  // 4b.
  const int64_t end = EndOf(job);
  std::vector<int> nodes;
  if (!KnownNoRoom(n, g, end)) {
    nodes = book_.FindNodes(n, g, end);
    if (static_cast<int>(nodes.size()) < n) NoRoom(n, g, end);
  }
  if (static_cast<int>(nodes.size()) < n) return Block(job, n, g);
  Placement placement{job.spec(in_).id, {}};
  for (int node : nodes) {
    placement.nodes.push_back(
        {in_.nodes[node].name, book_.Take(node, g, end), node});
  }
  out_.placements.push_back(std::move(placement));
  ++version_;
  user_used_[job.account] += total;
  group_used_[account_group_[job.account]] += total;
  quota_reason_.clear();  // the counts in them changed
  return -1;
}

int Pass::ShapeOf(int nodes, int gpus) {
  if (nodes < kTableNodes && gpus < kTableGpus) {
    if (shape_table_.empty()) shape_table_.assign(kTableNodes * kTableGpus, -1);
    int16_t& s = shape_table_[nodes * kTableGpus + gpus];
    if (s < 0) {
      s = static_cast<int16_t>(shapes_.size());
      shapes_.push_back({nodes, gpus});
    }
    return s;
  }
  auto [it, inserted] = shape_index_.try_emplace(
      uint64_t(nodes) << 32 | uint32_t(gpus), static_cast<int>(shapes_.size()));
  if (inserted) shapes_.push_back({nodes, gpus});
  return it->second;
}

void Pass::PrepareSettle() {
  shape_limit_.assign(shapes_.size(), kNoneLeft);
  dead_at_.assign(shapes_.size(), -1);
  live_at_.assign(shapes_.size(), -1);
  live_limit_.assign(shapes_.size(), kNoneLeft);
  next_.resize(jobs_.size());
  cursor_.assign(shapes_.size(), static_cast<uint32_t>(jobs_.size()));
}

void Pass::NoteRest(size_t at, Job& job) {
  next_[at] = cursor_[job.shape];
  cursor_[job.shape] = static_cast<uint32_t>(at);
  int64_t& limit = shape_limit_[job.shape];
  job.rest_limit = limit;
  const int64_t own = LimitOf(job);
  if (limit == kNoneLeft || own < limit) limit = own;
  if (config_.preemption && job.priority > lowest_running_priority_) {
    ++preempters_left_;
  }
}

bool Pass::MayDecide(int s) {
  const auto [n, g] = shapes_[s];
  if (TooLarge(n, g)) {
    return false;  // such jobs wait for ever
  }
  const int64_t limit = shape_limit_[s];
  const int64_t end = limit == kNever ? kNever : in_.now_ms + limit;
  // 4b: a later end fits on no more nodes (ClusterBook::CanTake).
  if (book_.NodesWithFree(g) >= n &&
      static_cast<int>(book_.FindNodes(n, g, end).size()) >= n) {
    return true;
  }
  // 4d with no reservation left: only GPUs free for good within a grace
  // make one.
  return g > 0 && FreeSoon(g) >= n;
}

bool Pass::Hopeless(const Job& job) {
  const int n = job.nodes, g = job.gpus;
  // No room now (as Schedule() finds before searching), and, as in Block()
  // with no reservation left, no GPUs it could hold within a grace.
  return KnownNoRoom(n, g, EndOf(job)) &&
         (Covered(not_soon_, n, g, 100) || FreeSoon(g) < n);
}

bool Pass::StillLive(int s) {
  if (shape_limit_[s] == kNoneLeft || dead_at_[s] == version_) return false;
  if (live_at_[s] == version_ && live_limit_[s] == shape_limit_[s]) return true;
  if (!MayDecide(s)) {
    dead_at_[s] = version_;
    return false;
  }
  live_at_[s] = version_;
  live_limit_[s] = shape_limit_[s];
  return true;
}

void Pass::Tail() {
  const uint32_t end = static_cast<uint32_t>(jobs_.size());
  std::vector<int> live;  // shapes with jobs left
  for (int s = 0; s < static_cast<int>(shapes_.size()); ++s) {
    if (cursor_[s] < end) live.push_back(s);
  }
  while (!live.empty()) {
    // The live shape whose next job comes first in the order.
    size_t first = 0;
    for (size_t i = 1; i < live.size(); ++i) {
      if (cursor_[live[i]] < cursor_[live[first]]) first = i;
    }
    const int s = live[first];
    if (!StillLive(s)) {
      // Dead for the rest of the pass: its jobs are passed over.
      shape_limit_[s] = kNoneLeft;
      live[first] = live.back();
      live.pop_back();
      continue;
    }
    const uint32_t at = cursor_[s];
    const Job& job = jobs_[order_[at]];
    if (Hopeless(job)) {
      // Neither it nor a later job of its shape with a limit as long
      // decides anything: on to the next one with a shorter limit.
      const int64_t own = LimitOf(job);
      uint32_t later = next_[at];
      while (later < end && LimitOf(jobs_[order_[later]]) >= own) {
        later = next_[later];
      }
      cursor_[s] = later;
    } else {
      Schedule(job);
      cursor_[s] = next_[at];
    }
    if (cursor_[s] >= end) {
      live[first] = live.back();
      live.pop_back();
    }
    if (Settled(job)) return;
  }
}

bool Pass::Settled(const Job& job) {
  shape_limit_[job.shape] = job.rest_limit;
  if (config_.preemption && job.priority > lowest_running_priority_) {
    --preempters_left_;
  }
  if (reservations_left_ > 0 || preempters_left_ > 0) return false;
  if (witness_ >= 0 && witness_version_ == version_ &&
      shape_limit_[witness_] == witness_limit_) {
    return false;
  }
  for (int s = 0; s < static_cast<int>(shapes_.size()); ++s) {
    // A shape unable to decide stays so until the next decision: its
    // shortest limit only grows.
    if (shape_limit_[s] == kNoneLeft || dead_at_[s] == version_) continue;
    if (MayDecide(s)) {
      witness_ = s;
      witness_limit_ = shape_limit_[s];
      witness_version_ = version_;
      return false;
    }
    dead_at_[s] = version_;
  }
  return true;
}

SchedulerDecisions Pass::Run() {
  reservations_left_ = config_.max_reservations;
  BuildAccounts();
  if (!explain_) PrepareSettle();
  Order();
  BuildTimeline();
  if (explain_) {
    out_.queue.reserve(jobs_.size());
    for (uint32_t i : order_) {
      const Job& job = jobs_[i];
      out_.queue.push_back({job.index, job.account,
                            EffectivePriority(job.spec(in_)), Schedule(job)});
    }
    return std::move(out_);
  }
  for (size_t at = 0; at < jobs_.size(); ++at) {
    const Job& job = jobs_[order_[at]];
    Schedule(job);
    cursor_[job.shape] = next_[at];
    if (Settled(job)) return std::move(out_);
    if (reservations_left_ <= 0 && preempters_left_ <= 0) break;
  }
  Tail();
  return std::move(out_);
}

}  // namespace

SchedulerDecisions LabPolicy::Schedule(const SchedulerInput& input) const {
  return Pass(input).Run();
}

}  // namespace dcvlr
