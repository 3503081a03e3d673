#include "coordinator/scheduler_book.h"

#include <algorithm>
#include <iterator>

namespace dcvlr {
namespace {

// Picks `count` of `free` (ascending) for locality: the locality domain with
// the fewest free GPUs that still holds them all (so fuller domains stay
// whole), else the domains with the most free GPUs until enough.
std::vector<int> ChooseGpus(const std::vector<int>& free,
                            const std::vector<int>& domain, int count) {
  if (count <= 0) return {};
  if (domain.empty()) {
    return std::vector<int>(free.begin(), free.begin() + count);
  }
  // (domain, gpu), grouped by domain; GPUs ascending within each.
  absl::InlinedVector<std::pair<int, int>, 16> gpus;
  for (int gpu : free) {
    gpus.push_back(
        {gpu >= 0 && gpu < static_cast<int>(domain.size()) ? domain[gpu] : -1,
         gpu});
  }
  std::sort(gpus.begin(), gpus.end());
  // Runs of one domain: [begin, end).
  absl::InlinedVector<std::pair<size_t, size_t>, 8> runs;
  for (size_t i = 0; i < gpus.size();) {
    size_t j = i;
    while (j < gpus.size() && gpus[j].first == gpus[i].first) ++j;
    runs.push_back({i, j});
    i = j;
  }
  auto size = [](const std::pair<size_t, size_t>& r) {
    return r.second - r.first;
  };
  std::vector<int> chosen;
  const std::pair<size_t, size_t>* best = nullptr;
  for (const auto& run : runs) {
    if (size(run) >= static_cast<size_t>(count) &&
        (best == nullptr || size(run) < size(*best))) {
      best = &run;
    }
  }
  if (best != nullptr) {
    for (size_t i = best->first; i < best->first + count; ++i) {
      chosen.push_back(gpus[i].second);
    }
    return chosen;
  }
  std::stable_sort(runs.begin(), runs.end(), [&](const auto& a, const auto& b) {
    return size(a) > size(b);
  });
  for (const auto& run : runs) {
    for (size_t i = run.first;
         i < run.second && static_cast<int>(chosen.size()) < count; ++i) {
      chosen.push_back(gpus[i].second);
    }
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace

ClusterBook::ClusterBook(const std::vector<NodeSnapshot>& nodes,
                         int64_t now_ms) {
  Reset(nodes, now_ms);
}

void ClusterBook::Reset(const std::vector<NodeSnapshot>& nodes,
                        int64_t now_ms) {
  now_ms_ = now_ms;
  nodes_.resize(nodes.size());
  changed_.clear();
  size_t most = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    NodeState& n = nodes_[i];
    // Sorted, if need be, by the first Take(): only it reads the indices.
    n.free = &nodes[i].free_gpus;
    n.own.clear();
    n.free_count = static_cast<int>(n.free->size());
    n.domain = &nodes[i].gpu_domain;
    n.events.clear();
    n.has_claims = false;
    most = std::max(most, n.free->size());
  }
  buckets_.resize(most + 1);
  counts_.assign(most + 1, 0);
  for (NodeSet& bucket : buckets_) bucket.Resize(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    buckets_[nodes_[i].free_count].Insert(static_cast<int>(i));
    ++counts_[nodes_[i].free_count];
  }
  at_least_.assign(most + 1, 0);
  for (size_t k = most + 1; k-- > 0;) {
    at_least_[k] = counts_[k] + (k + 1 <= most ? at_least_[k + 1] : 0);
  }
}

void ClusterBook::Insert(int node, Event event) {
  changed_.push_back(node);
  // After every event at or before it; most arrive in time order.
  auto& events = nodes_[node].events;
  events.push_back(event);
  size_t i = events.size() - 1;
  for (; i > 0 && events[i - 1].at_ms > event.at_ms; --i) {
    events[i] = events[i - 1];
  }
  events[i] = event;
}

void ClusterBook::AddRelease(int node, int64_t at_ms, int gpus, int owner) {
  if (gpus <= 0 || at_ms == kNever) return;
  Insert(node, {std::max(at_ms, now_ms_), gpus, owner});
}

void ClusterBook::ExpediteRelease(int node, int owner, int gpus,
                                  int64_t at_ms) {
  changed_.push_back(node);
  auto& events = nodes_[node].events;
  int found = 0;
  for (size_t i = 0; i < events.size();) {
    if (events[i].owner == owner && events[i].delta > 0) {
      found += events[i].delta;
      events.erase(events.begin() + i);
    } else {
      ++i;
    }
  }
  // A release already due before the stop keeps its own (earlier) time.
  AddRelease(node, at_ms, found > 0 ? found : gpus, owner);
}

void ClusterBook::AddClaim(int node, int64_t at_ms, int gpus) {
  if (gpus <= 0) return;
  Insert(node, {std::max(at_ms, now_ms_), -gpus, -1});
  nodes_[node].has_claims = true;
}

bool ClusterBook::CanTake(int node, int gpus, int64_t end_ms) const {
  const NodeState& n = nodes_[node];
  int value = n.free_count;
  if (value < gpus) return false;
  if (!n.has_claims || gpus == 0) return true;
  for (size_t i = 0; i < n.events.size();) {
    const int64_t at = n.events[i].at_ms;
    if (at >= end_ms) break;
    for (; i < n.events.size() && n.events[i].at_ms == at; ++i) {
      value += n.events[i].delta;
    }
    if (value < gpus) return false;
  }
  return true;
}

std::vector<int> ClusterBook::FindNodes(int count, int gpus,
                                        int64_t end_ms) const {
  std::vector<int> found;
  if (count <= 0 || NodesWithFree(gpus) < count) return found;
  for (size_t k = std::max(gpus, 0); k < buckets_.size(); ++k) {
    if (counts_[k] == 0) continue;
    const bool more = buckets_[k].ForEach([&](int node) {
      if (CanTake(node, gpus, end_ms)) found.push_back(node);
      return static_cast<int>(found.size()) < count;
    });
    if (!more) break;
  }
  return found;
}

std::vector<int> ClusterBook::Take(int node, int gpus, int64_t end_ms) {
  changed_.push_back(node);
  NodeState& n = nodes_[node];
  if (n.free != &n.own && !std::is_sorted(n.free->begin(), n.free->end())) {
    n.own = *n.free;
    std::sort(n.own.begin(), n.own.end());
    n.free = &n.own;
  }
  std::vector<int> chosen = ChooseGpus(*n.free, *n.domain, gpus);
  std::vector<int> rest;
  rest.reserve(n.free->size() - chosen.size());
  std::set_difference(n.free->begin(), n.free->end(), chosen.begin(),
                      chosen.end(), std::back_inserter(rest));
  n.own = std::move(rest);
  n.free = &n.own;
  buckets_[n.free_count].Erase(node);
  --counts_[n.free_count];
  for (int k = static_cast<int>(n.own.size()) + 1; k <= n.free_count; ++k) {
    --at_least_[k];
  }
  n.free_count = static_cast<int>(n.own.size());
  buckets_[n.free_count].Insert(node);
  ++counts_[n.free_count];
  AddRelease(node, end_ms, gpus, -1);
  return chosen;
}

int64_t ClusterBook::EarliestStart(int node, int gpus) const {
  const NodeState& n = nodes_[node];
  // Walk the timeline backwards from its final value: the start is the
  // time after which the free count never again drops below `gpus`.
  int value = n.free_count;
  for (const Event& e : n.events) value += e.delta;
  if (value < gpus) return kNever;
  for (size_t i = n.events.size(); i > 0;) {
    const int64_t at = n.events[i - 1].at_ms;
    for (; i > 0 && n.events[i - 1].at_ms == at; --i) {
      value -= n.events[i - 1].delta;
    }
    if (value < gpus) return at;
  }
  return now_ms_;
}

}  // namespace dcvlr
