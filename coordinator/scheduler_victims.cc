#include "coordinator/scheduler_victims.h"

#include <algorithm>
#include <tuple>

namespace dcvlr {
namespace {

// Larger sets are chosen greedily (least lost work per GPU first).
constexpr size_t kMaxExactCandidates = 32;

struct Cost {
  double lost = 0;
  int victims = 0;
  bool operator<(const Cost& o) const {
    return std::tie(lost, victims) < std::tie(o.lost, o.victims);
  }
};

struct NodeOption {
  int node;
  Cost cost;
  int base;  // free from stop_by on, without candidates
  std::vector<int> victims;
};

}  // namespace

void VictimFinder::Init(const SchedulerInput& input, int node_count,
                        const std::vector<Holding>& holdings,
                        std::vector<double> aged_priority) {
  aged_priority_ = std::move(aged_priority);
  node_gpus_.assign(node_count, 0);
  for (int i = 0; i < node_count; ++i) {
    node_gpus_[i] = input.nodes[i].total_gpus;
  }
  by_node_.assign(node_count, {});
  const size_t attempts = input.running.size();
  by_attempt_.assign(attempts, {});
  stopping_.assign(attempts, false);
  priority_.assign(attempts, 0);
  lost_gpu_s_.assign(attempts, 0);
  for (const Holding& h : holdings) {
    by_node_[h.node].push_back(h);
    by_attempt_[h.attempt].push_back(h);
  }
  for (size_t i = 0; i < attempts; ++i) {
    const RunningAttempt& r = input.running[i];
    stopping_[i] = r.stopping;
    priority_[i] = r.priority;
    int gpus = 0;
    for (const NodePlacement& p : r.placements) gpus += p.gpus.size();
    const int64_t since = std::max(r.started_ms, r.last_checkpoint_ms);
    lost_gpu_s_[i] = std::max<int64_t>(0, input.now_ms - since) / 1000.0 * gpus;
  }
}

std::optional<VictimFinder::Choice> VictimFinder::Choose(
    const ClusterBook& book, int count, int gpus, int priority, int tier,
    int64_t stop_by_ms) const {
  auto candidate = [&](int attempt) {
    return Candidate(attempt, priority, tier);
  };
  std::vector<NodeOption> options;
  for (int node = 0; node < book.size(); ++node) {
    if (node_gpus_[node] < gpus) continue;
    // Step 2.
    const int base = book.MinFreeFrom(node, stop_by_ms, candidate);
    const int need = gpus - base;
    if (need <= 0) {
      options.push_back({node, {}, base, {}});
      continue;
    }
    std::vector<Holding> cands;
    int available = 0;
    for (const Holding& h : by_node_[node]) {
      if (h.gpus > 0 && candidate(h.attempt)) {
        cands.push_back(h);
        available += h.gpus;
      }
    }
    if (available < need) continue;
    NodeOption best{node, {1e300, 0}, base, {}};
    if (cands.size() <= kMaxExactCandidates) {
      // 0/1 knapsack over freed GPUs (capped at the need): cheapest[f] is
      // the cheapest subset freeing f GPUs. (lost, victims) costs add
      // component-wise, which keeps their order, so the table is exact.
      struct Subset {
        Cost cost;
        uint32_t mask = 0;
        bool ok = false;
      };
      std::vector<Subset> cheapest(need + 1);
      cheapest[0].ok = true;
      for (size_t i = 0; i < cands.size(); ++i) {
        for (int f = need; f >= 0; --f) {
          if (!cheapest[f].ok) continue;
          const int to = std::min(need, f + cands[i].gpus);
          Cost cost = cheapest[f].cost;
          cost.lost += lost_gpu_s_[cands[i].attempt];
          ++cost.victims;
          if (!cheapest[to].ok || cost < cheapest[to].cost) {
            cheapest[to] = {cost, cheapest[f].mask | (1u << i), true};
          }
        }
      }
      best.cost = cheapest[need].cost;
      for (size_t i = 0; i < cands.size(); ++i) {
        if (cheapest[need].mask >> i & 1) {
          best.victims.push_back(cands[i].attempt);
        }
      }
    } else {
      std::sort(cands.begin(), cands.end(),
                [&](const Holding& a, const Holding& b) {
                  return lost_gpu_s_[a.attempt] / a.gpus <
                         lost_gpu_s_[b.attempt] / b.gpus;
                });
      best.cost = {};
      int freed = 0;
      for (const Holding& h : cands) {
        if (freed >= need) break;
        freed += h.gpus;
        best.cost.lost += lost_gpu_s_[h.attempt];
        ++best.cost.victims;
        best.victims.push_back(h.attempt);
      }
    }
    options.push_back(std::move(best));
  }
  if (static_cast<int>(options.size()) < count) return std::nullopt;
  // Step 3.
  std::stable_sort(
      options.begin(), options.end(),
      [](const NodeOption& a, const NodeOption& b) { return a.cost < b.cost; });
  options.resize(count);
  Choice choice;
  for (const NodeOption& o : options) {
    choice.nodes.push_back(o.node);
    for (int v : o.victims) {
      if (std::find(choice.victims.begin(), choice.victims.end(), v) ==
          choice.victims.end()) {
        choice.victims.push_back(v);
      }
    }
  }
  // Step 4.
  auto fits = [&](const std::vector<int>& victims) {
    for (const NodeOption& o : options) {
      int free = o.base;
      for (int v : victims) {
        for (const Holding& h : by_attempt_[v]) {
          if (h.node == o.node) free += h.gpus;
        }
      }
      if (free < gpus) return false;
    }
    return true;
  };
  std::vector<int> order = choice.victims;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return lost_gpu_s_[a] > lost_gpu_s_[b];
  });
  for (int v : order) {
    std::vector<int> without;
    for (int w : choice.victims) {
      if (w != v) without.push_back(w);
    }
    if (fits(without)) choice.victims = std::move(without);
  }
  if (choice.victims.empty() || !fits(choice.victims)) return std::nullopt;
  return choice;
}

void VictimFinder::MarkStopping(ClusterBook* book, int attempt,
                                int64_t stop_by_ms) {
  stopping_[attempt] = true;
  for (const Holding& h : by_attempt_[attempt]) {
    book->ExpediteRelease(h.node, attempt, h.gpus, stop_by_ms);
  }
}

}  // namespace dcvlr
