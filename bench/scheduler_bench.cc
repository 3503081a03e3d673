// Discrete-event simulator that drives the real scheduling policy (LabPolicy)
// with a synthetic trace and prints its figures (bench/README.md):
// placements/s, p50/p99 pass latency, GPU utilisation while jobs wait and
// the fair-share error.
//
// Trace (fixed seed): 1,000 nodes × 8 GPUs (two NVLink islands of 4);
// 50,000 jobs: 30% 1 GPU, 20% 2, 20% 4, 15% 8, 15% gangs of 2–16 nodes × 8;
// Poisson arrivals at a rate that offers `load` times the cluster's
// capacity; log-normal runtimes (median 30 min, σ 1.5, 1 min..3 d); time
// limits of 1–3 times the runtime; 16 users in 4 groups with group shares
// 4:3:2:1, each user submitting the same volume; with --preemption, 10% of
// jobs have priority 80 (else 50), preempted jobs lose the work since their
// last 30-minute checkpoint. A pass runs every `pass_interval_s` of
// simulated time, as the coordinator's tick would; only the policy's
// Schedule() call is timed. Before the trace, one "burst" pass over the
// first 10,000 jobs on the empty cluster measures bulk throughput.
//
// A digest of every pass's decisions (placements, reservations,
// preemptions) lets two versions of the policy, or passes that explain and
// passes that do not, be shown to decide alike.
//
// Fair-share error: over the middle 60% of the arrival period, half the L1
// distance between each user's delivered GPU-seconds and a weighted
// water-filling of the same total over what each user offered, as a
// fraction of the total.
//
//   scheduler_bench [--quick] [--seed=N] [--preemption] [--load=X]
//                   [--pass_interval_s=S] [--per_user] [--unlimited=F]
//                   [--explain | --explain_every_s=S]
//
// By default no pass explains the queue (orders every job and gives each
// its reason), as the coordinator's passes between explanations; with
// --explain every pass does.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <map>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "coordinator/fair_share.h"
#include "coordinator/scheduler.h"

namespace dcvlr {
namespace {

using bench::Percentile;
using bench::ThreadCpuMs;

struct Options {
  int nodes = 1000;
  int gpus_per_node = 8;
  int jobs = 50000;
  // Offered GPU-seconds / capacity while jobs arrive: enough that more
  // than 10,000 jobs wait at the peak.
  double load = 3.5;
  uint64_t seed = 20261126;
  bool preemption = false;
  double pass_interval_s = 30;
  bool per_user = false;
  double unlimited = 0;  // fraction of jobs without a time limit
  // A pass explains the queue (SchedulerInput::explain) when at least this
  // much simulated time passed since the last one that did; 0: every pass
  // (as the policy did before it could skip explaining), < 0: none.
  double explain_every_s = -1;
};

struct SimJob {
  std::string id;
  int user = 0;
  int priority = 50;
  int nodes = 1;
  int gpus = 1;
  int64_t submit_ms = 0;
  int64_t runtime_ms = 0;  // work left
  int64_t limit_ms = 0;
  int64_t started_ms = -1;  // current attempt
  int attempt = 0;
  bool done = false;
};

constexpr int kUsers = 16;
constexpr int kGroups = 4;
constexpr int64_t kCheckpointMs = 30 * 60 * 1000;

std::string UserName(int u) { return absl::StrCat("u", u / 10, u % 10); }
std::string GroupName(int u) { return absl::StrCat("g", u % kGroups); }

std::vector<SimJob> MakeTrace(const Options& o) {
  std::mt19937_64 rng(o.seed);
  std::uniform_real_distribution<double> unit(0, 1);
  std::lognormal_distribution<double> runtime_s(std::log(1800.0), 1.5);
  std::vector<SimJob> jobs(o.jobs);
  double gpu_s = 0;
  for (int i = 0; i < o.jobs; ++i) {
    SimJob& j = jobs[i];
    j.id = absl::StrCat("j-", i + 1);
    j.user = static_cast<int>(rng() % kUsers);
    const double shape = unit(rng);
    if (shape < 0.30)
      j.gpus = 1;
    else if (shape < 0.50)
      j.gpus = 2;
    else if (shape < 0.70)
      j.gpus = 4;
    else if (shape < 0.85)
      j.gpus = 8;
    else {
      j.gpus = 8;
      j.nodes = 2 + static_cast<int>(rng() % 15);
    }
    if (o.preemption && unit(rng) < 0.1) j.priority = 80;
    const double seconds = std::clamp(runtime_s(rng), 60.0, 3 * 86400.0);
    j.runtime_ms = static_cast<int64_t>(seconds * 1000);
    j.limit_ms = static_cast<int64_t>(seconds * (1 + 2 * unit(rng)) * 1000);
    if (o.unlimited > 0 && unit(rng) < o.unlimited) j.limit_ms = 0;
    gpu_s += seconds * j.nodes * j.gpus;
  }
  // Poisson arrivals offering `load` × capacity.
  const double rate = o.load * o.nodes * o.gpus_per_node / (gpu_s / o.jobs);
  std::exponential_distribution<double> gap(rate);
  double t = 0;
  for (SimJob& j : jobs) {
    t += gap(rng);
    j.submit_ms = static_cast<int64_t>(t * 1000) + 1;
  }
  return jobs;
}

// Weighted water-filling: each user gets min(demand, weight × level), the
// level chosen so that the allocations sum to `capacity`.
std::vector<double> WaterFill(const std::vector<double>& demand,
                              const std::vector<double>& weight,
                              double capacity) {
  double lo = 0, hi = 1;
  auto total = [&](double level) {
    double sum = 0;
    for (size_t i = 0; i < demand.size(); ++i) {
      sum += std::min(demand[i], weight[i] * level);
    }
    return sum;
  };
  while (total(hi) < capacity && hi < 1e30) hi *= 2;
  for (int i = 0; i < 200; ++i) {
    const double mid = (lo + hi) / 2;
    (total(mid) < capacity ? lo : hi) = mid;
  }
  std::vector<double> out(demand.size());
  for (size_t i = 0; i < demand.size(); ++i) {
    out[i] = std::min(demand[i], weight[i] * hi);
  }
  return out;
}

// FNV-1a over the decisions, so that two versions of the policy can be
// shown to decide alike on a trace.
class Digest {
 public:
  void Add(const std::string& text) {
    for (char c : text) Byte(static_cast<unsigned char>(c));
    Byte(0);
  }
  void Add(int64_t number) {
    for (int i = 0; i < 8; ++i) Byte(static_cast<uint8_t>(number >> (8 * i)));
  }
  uint64_t value() const { return hash_; }

 private:
  void Byte(uint8_t b) { hash_ = (hash_ ^ b) * 0x100000001b3ull; }
  uint64_t hash_ = 0xcbf29ce484222325ull;
};

// One pass over the trace's first `pending` jobs, all waiting at once on the
// empty cluster: the policy's throughput when it has much to place.
void Burst(const Options& o, const std::vector<SimJob>& jobs,
           const std::shared_ptr<ClusterConfig>& config, int pending) {
  SchedulerInput input;
  input.config = config;
  input.now_ms = 1;
  input.explain = o.explain_every_s >= 0;
  for (int n = 0; n < o.nodes; ++n) {
    NodeSnapshot node{absl::StrCat("n", n), o.gpus_per_node, {}, {}};
    for (int g = 0; g < o.gpus_per_node; ++g) {
      node.free_gpus.push_back(g);
      node.gpu_domain.push_back(g * 2 / o.gpus_per_node);
    }
    input.nodes.push_back(std::move(node));
  }
  for (int j = 0; j < pending && j < static_cast<int>(jobs.size()); ++j) {
    PendingJob p{jobs[j].id, jobs[j].priority, j, jobs[j].nodes, jobs[j].gpus};
    p.user = UserName(jobs[j].user);
    p.time_limit_ms = jobs[j].limit_ms;
    input.queue.push_back(std::move(p));
  }
  LabPolicy policy;
  std::vector<double> ms;
  size_t placed = 0;
  for (int i = 0; i < 7; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    SchedulerDecisions d = policy.Schedule(input);
    ms.push_back(std::chrono::duration<double, std::milli>(
                     std::chrono::steady_clock::now() - t0)
                     .count());
    placed = d.placements.size();
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "burst: %zu pending on the empty cluster, %zu placed in one "
      "pass of %.2f ms (median of 7): %.0f placements/s\n",
      input.queue.size(), placed, ms[3], placed / (ms[3] / 1000));
}

int Run(const Options& o) {
  std::vector<SimJob> jobs = MakeTrace(o);
  auto config = std::make_shared<ClusterConfig>();
  config->preemption = o.preemption;
  for (int g = 0; g < kGroups; ++g) {
    config->groups[absl::StrCat("g", g)].shares = kGroups - g;  // 4:3:2:1
  }
  for (int u = 0; u < kUsers; ++u) {
    config->users[UserName(u)].group = GroupName(u);
  }
  Burst(o, jobs, config, o.jobs / 5);
  UsageLedger ledger(config->fair_share_half_life_s);
  LabPolicy policy;

  SchedulerInput input;
  input.config = config;
  for (int n = 0; n < o.nodes; ++n) {
    NodeSnapshot node{absl::StrCat("n", n), o.gpus_per_node, {}, {}};
    for (int g = 0; g < o.gpus_per_node; ++g) node.free_gpus.push_back(g);
    // Two NVLink islands of four.
    for (int g = 0; g < o.gpus_per_node; ++g) {
      node.gpu_domain.push_back(g * 2 / o.gpus_per_node);
    }
    input.nodes.push_back(std::move(node));
  }
  std::map<std::string, int> node_index;
  for (int n = 0; n < o.nodes; ++n) node_index[input.nodes[n].name] = n;
  std::map<std::string, int> job_index;
  for (int i = 0; i < o.jobs; ++i) job_index[jobs[i].id] = i;

  // (time, job, attempt): an attempt ends (finishes or has stopped).
  using End = std::tuple<int64_t, int, int>;
  std::priority_queue<End, std::vector<End>, std::greater<End>> ends;
  std::vector<int> running_index(o.jobs, -1);  // into input.running
  std::vector<std::vector<NodePlacement>> held(o.jobs);
  std::vector<int> user_gpus(kUsers, 0);
  std::vector<bool> pending(o.jobs, false);

  const int64_t interval = static_cast<int64_t>(o.pass_interval_s * 1000);
  const int64_t last_arrival = jobs.back().submit_ms;
  const double capacity = double(o.nodes) * o.gpus_per_node;
  // Fair-share window: the middle of the arrival period.
  const int64_t window_from = last_arrival / 5,
                window_to = last_arrival * 4 / 5;
  std::vector<double> window_gpu_s(kUsers, 0), offered_gpu_s(kUsers, 0);

  Digest digest;  // of every pass's placements, reservations, preemptions
  int64_t explained_ms = std::numeric_limits<int64_t>::min();
  size_t explained = 0;
  std::vector<double> latency_ms, latency_10k_ms, cpu_ms, cpu_10k_ms;
  double schedule_cpu_s = 0;
  std::map<std::string, int> preempted_by;
  double schedule_s = 0;
  int64_t placements = 0, preemptions = 0, busy_gpus = 0;
  double busy_waiting_gpu_s = 0, waiting_s = 0;
  size_t next_arrival = 0, peak_pending = 0;
  int done = 0;
  bool queue_nonempty = false;
  bool requeued = false;

  auto release = [&](int j) {
    for (const NodePlacement& p : held[j]) {
      std::vector<int>& free = input.nodes[node_index[p.node]].free_gpus;
      free.insert(free.end(), p.gpus.begin(), p.gpus.end());
      std::sort(free.begin(), free.end());
    }
    const int gpus = jobs[j].nodes * jobs[j].gpus;
    busy_gpus -= gpus;
    user_gpus[jobs[j].user] -= gpus;
    held[j].clear();
    const int r = running_index[j];
    running_index[job_index[input.running.back().job_id]] = r;
    std::swap(input.running[r], input.running.back());
    input.running.pop_back();
    running_index[j] = -1;
  };
  auto enqueue = [&](int j) {
    const SimJob& job = jobs[j];
    PendingJob p{job.id, job.priority, j, job.nodes, job.gpus};
    p.user = UserName(job.user);
    p.group = GroupName(job.user);
    p.submit_ms = job.submit_ms;
    p.time_limit_ms = job.limit_ms;
    input.queue.push_back(std::move(p));
    pending[j] = true;
  };

  for (int64_t now = interval; done < o.jobs; now += interval) {
    const int64_t prev = now - interval;
    // Usage and utilisation over (prev, now]: every GPU busy at prev, less
    // what ended inside the interval.
    double busy_gpu_s = busy_gpus * (interval / 1000.0);
    ledger.AdvanceTo(now);
    for (int u = 0; u < kUsers; ++u) {
      ledger.Charge(UserName(u), user_gpus[u], interval);
      if (prev >= window_from && now <= window_to) {
        window_gpu_s[u] += user_gpus[u] * (interval / 1000.0);
      }
    }
    while (!ends.empty() && std::get<0>(ends.top()) <= now) {
      auto [at, j, attempt] = ends.top();
      ends.pop();
      SimJob& job = jobs[j];
      if (attempt != job.attempt || running_index[j] < 0) continue;
      busy_gpu_s -= job.nodes * job.gpus * ((now - at) / 1000.0);
      // An attempt that ends before its natural end was stopped.
      const bool stopped =
          at < job.started_ms + (job.limit_ms > 0
                                     ? std::min(job.runtime_ms, job.limit_ms)
                                     : job.runtime_ms);
      release(j);
      if (stopped) {
        // Preempted: resumes from its last checkpoint, keeping its place
        // (submit time) in the queue, as the core's queue does.
        const int64_t ran = at - job.started_ms;
        job.runtime_ms -= ran / kCheckpointMs * kCheckpointMs;
        enqueue(j);
        requeued = true;
      } else {
        job.done = true;
        ++done;
      }
    }
    if (requeued) {
      std::sort(input.queue.begin(), input.queue.end(),
                [](const PendingJob& a, const PendingJob& b) {
                  return a.seq < b.seq;  // seq follows submit time
                });
      requeued = false;
    }
    if (queue_nonempty) {
      busy_waiting_gpu_s += busy_gpu_s;
      waiting_s += interval / 1000.0;
    }
    while (next_arrival < jobs.size() && jobs[next_arrival].submit_ms <= now) {
      const SimJob& job = jobs[next_arrival];
      offered_gpu_s[job.user] += job.nodes * job.gpus * job.runtime_ms / 1000.0;
      enqueue(static_cast<int>(next_arrival++));
    }
    if (input.queue.empty()) {
      queue_nonempty = false;
      continue;
    }
    input.now_ms = now;
    input.usage = ledger.usage();
    input.explain =
        o.explain_every_s >= 0 &&
        (explained == 0 ||
         now - explained_ms >= static_cast<int64_t>(o.explain_every_s * 1000));
    if (input.explain) {
      explained_ms = now;
      ++explained;
    }
    const double cpu0 = ThreadCpuMs();
    const auto t0 = std::chrono::steady_clock::now();
    SchedulerDecisions d = policy.Schedule(input);
    const double ms = std::chrono::duration<double, std::milli>(
                          std::chrono::steady_clock::now() - t0)
                          .count();
    const double cpu = ThreadCpuMs() - cpu0;
    schedule_s += ms / 1000;
    schedule_cpu_s += cpu / 1000;
    latency_ms.push_back(ms);
    cpu_ms.push_back(cpu);
    if (input.queue.size() >= 10000) {
      latency_10k_ms.push_back(ms);
      cpu_10k_ms.push_back(cpu);
    }
    peak_pending = std::max(peak_pending, input.queue.size());

    for (const Placement& p : d.placements) {
      digest.Add(p.job_id);
      for (const NodePlacement& np : p.nodes) {
        digest.Add(np.node);
        for (int gpu : np.gpus) digest.Add(gpu);
      }
      const int j = job_index[p.job_id];
      SimJob& job = jobs[j];
      for (const NodePlacement& np : p.nodes) {
        std::vector<int>& free = input.nodes[node_index[np.node]].free_gpus;
        for (int gpu : np.gpus)
          free.erase(std::find(free.begin(), free.end(), gpu));
      }
      held[j] = p.nodes;
      job.started_ms = now;
      ++job.attempt;
      RunningAttempt r;
      r.job_id = job.id;
      r.attempt = job.attempt;
      r.user = UserName(job.user);
      r.group = GroupName(job.user);
      r.priority = job.priority;
      r.placements = p.nodes;
      r.submit_ms = job.submit_ms;
      r.started_ms = now;
      r.time_limit_ms = job.limit_ms;
      r.last_checkpoint_ms = now;
      running_index[j] = static_cast<int>(input.running.size());
      input.running.push_back(std::move(r));
      const int gpus = job.nodes * job.gpus;
      busy_gpus += gpus;
      user_gpus[job.user] += gpus;
      ends.push(
          {now + (job.limit_ms > 0 ? std::min(job.runtime_ms, job.limit_ms)
                                   : job.runtime_ms),
           j, job.attempt});
      pending[j] = false;
      ++placements;
    }
    for (const Reservation& r : d.reservations) {
      digest.Add(r.job_id);
      digest.Add(r.start_ms);
      for (const std::string& node : r.nodes) digest.Add(node);
    }
    for (const Preemption& p : d.preemptions) {
      digest.Add(p.job_id);
      digest.Add(p.for_job_id);
      const int j = job_index[p.job_id];
      ++preempted_by[p.for_job_id];
      RunningAttempt& r = input.running[running_index[j]];
      r.stopping = true;
      r.stop_deadline_ms =
          now + static_cast<int64_t>(config->default_grace_s * 1000);
      ends.push({r.stop_deadline_ms, j, jobs[j].attempt});
      ++preemptions;
    }
    for (RunningAttempt& r : input.running) {
      // Checkpoints every 30 minutes of running.
      const int64_t since = now - r.started_ms;
      r.last_checkpoint_ms =
          r.started_ms + since / kCheckpointMs * kCheckpointMs;
    }
    std::erase_if(input.queue,
                  [&](const PendingJob& p) { return !pending[p.seq]; });
    queue_nonempty = !input.queue.empty();
  }

  // Fair-share error: delivered GPU-seconds per user in the window against
  // weighted water-filling of the same total over what each user offered.
  std::vector<double> weight(kUsers), demand(kUsers);
  double delivered = 0;
  for (int u = 0; u < kUsers; ++u) {
    const double group_share = double(kGroups - u % kGroups) / 10.0;
    weight[u] = group_share / (kUsers / kGroups);
    demand[u] = offered_gpu_s[u] / (last_arrival / 1000.0) *
                ((window_to - window_from) / 1000.0);
    delivered += window_gpu_s[u];
  }
  std::vector<double> target = WaterFill(demand, weight, delivered);
  double error = 0, worst = 0;
  for (int u = 0; u < kUsers; ++u) {
    error += std::abs(window_gpu_s[u] - target[u]);
    worst = std::max(worst, std::abs(window_gpu_s[u] - target[u]) / target[u]);
  }
  error /= 2 * delivered;
  if (o.per_user) {
    for (int u = 0; u < kUsers; ++u) {
      std::printf("%s %s weight %.3f offered %.0f delivered %.0f target %.0f\n",
                  UserName(u).c_str(), GroupName(u).c_str(), weight[u],
                  demand[u], window_gpu_s[u], target[u]);
    }
  }

  std::printf(
      "cluster: %d nodes x %d GPUs; %d jobs; offered load %.2f; "
      "pass every %.0f s simulated; preemption %s; seed %llu\n",
      o.nodes, o.gpus_per_node, o.jobs, o.load, o.pass_interval_s,
      o.preemption ? "on" : "off", static_cast<unsigned long long>(o.seed));
  std::printf(
      "simulated: %.1f h, %zu passes (%zu explained), %lld placements, %lld "
      "preemptions, peak pending %zu\n",
      jobs.back().submit_ms / 3.6e6, latency_ms.size(), explained,
      static_cast<long long>(placements), static_cast<long long>(preemptions),
      peak_pending);
  if (!preempted_by.empty()) {
    int most = 0;
    std::string who;
    for (const auto& [id, n] : preempted_by) {
      if (n > most) {
        most = n;
        who = id;
      }
    }
    std::printf(
        "preempting jobs: %zu; most victims for one job: %d (%s, %d nodes x "
        "%d)\n",
        preempted_by.size(), most, who.c_str(), jobs[job_index[who]].nodes,
        jobs[job_index[who]].gpus);
  }
  std::printf(
      "placements/s over the trace: %.0f wall, %.0f CPU (%.2f s "
      "wall, %.2f s CPU in Schedule())\n",
      placements / schedule_s, placements / schedule_cpu_s, schedule_s,
      schedule_cpu_s);
  std::printf(
      "pass latency: p50 %.2f ms, p99 %.2f ms, max %.2f ms "
      "(all %zu passes)\n",
      Percentile(latency_ms, 0.5), Percentile(latency_ms, 0.99),
      Percentile(latency_ms, 1.0), latency_ms.size());
  std::printf(
      "pass latency, >= 10000 pending: p50 %.2f ms, p99 %.2f ms "
      "(%zu passes)\n",
      Percentile(latency_10k_ms, 0.5), Percentile(latency_10k_ms, 0.99),
      latency_10k_ms.size());
  std::printf(
      "pass CPU time: p50 %.2f ms, p99 %.2f ms (all); p50 %.2f ms, "
      "p99 %.2f ms (>= 10000 pending)\n",
      Percentile(cpu_ms, 0.5), Percentile(cpu_ms, 0.99),
      Percentile(cpu_10k_ms, 0.5), Percentile(cpu_10k_ms, 0.99));
  std::printf("decisions digest: %016llx\n",
              static_cast<unsigned long long>(digest.value()));
  std::printf("GPU utilisation while jobs wait: %.2f%% (over %.1f h)\n",
              100 * busy_waiting_gpu_s / (capacity * waiting_s),
              waiting_s / 3600);
  std::printf(
      "fair-share error: %.2f%% of GPU-seconds misallocated "
      "(worst user %.1f%% off its target)\n",
      100 * error, 100 * worst);
  return 0;
}

}  // namespace
}  // namespace dcvlr

int main(int argc, char** argv) {
  dcvlr::Options o;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--quick") == 0) {
      o.nodes = 100;
      o.jobs = 5000;
    } else if (std::strcmp(a, "--per_user") == 0) {
      o.per_user = true;
    } else if (std::strcmp(a, "--preemption") == 0) {
      o.preemption = true;
    } else if (std::strncmp(a, "--seed=", 7) == 0) {
      o.seed = std::strtoull(a + 7, nullptr, 10);
    } else if (std::strncmp(a, "--pass_interval_s=", 18) == 0) {
      o.pass_interval_s = std::atof(a + 18);
    } else if (std::strncmp(a, "--unlimited=", 12) == 0) {
      o.unlimited = std::atof(a + 12);
    } else if (std::strncmp(a, "--load=", 7) == 0) {
      o.load = std::atof(a + 7);
    } else if (std::strcmp(a, "--explain") == 0) {
      o.explain_every_s = 0;
    } else if (std::strncmp(a, "--explain_every_s=", 18) == 0) {
      o.explain_every_s = std::atof(a + 18);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--quick] [--preemption] [--seed=N] "
                   "[--pass_interval_s=S] [--load=X] [--unlimited=F] "
                   "[--per_user] [--explain | --explain_every_s=S]\n",
                   argv[0]);
      return 2;
    }
  }
  return dcvlr::Run(o);
}
