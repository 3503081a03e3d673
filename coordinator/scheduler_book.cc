#include "coordinator/scheduler_book.h"

#include <algorithm>
#include <map>

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
  std::map<int, std::vector<int>> by_domain;
  for (int gpu : free) {
    const int d = gpu >= 0 && gpu < static_cast<int>(domain.size())
                      ? domain[gpu]
                      : -1;
    by_domain[d].push_back(gpu);
  }
  const std::vector<int>* best = nullptr;
  for (const auto& [d, gpus] : by_domain) {
    if (static_cast<int>(gpus.size()) >= count &&
        (best == nullptr || gpus.size() < best->size())) {
      best = &gpus;
    }
  }
  std::vector<int> chosen;
  if (best != nullptr) {
    chosen.assign(best->begin(), best->begin() + count);
    return chosen;
  }
  std::vector<const std::vector<int>*> order;
  for (const auto& [d, gpus] : by_domain) order.push_back(&gpus);
  std::stable_sort(order.begin(), order.end(),
                   [](const std::vector<int>* a, const std::vector<int>* b) {
                     return a->size() > b->size();
                   });
  for (const std::vector<int>* gpus : order) {
    for (int gpu : *gpus) {
      if (static_cast<int>(chosen.size()) == count) break;
      chosen.push_back(gpu);
    }
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

}  // namespace

ClusterBook::ClusterBook(const std::vector<NodeSnapshot>& nodes,
                         int64_t now_ms)
    : now_ms_(now_ms), nodes_(nodes.size()) {
  size_t most = 0;
  for (size_t i = 0; i < nodes.size(); ++i) {
    nodes_[i].free = nodes[i].free_gpus;
    std::sort(nodes_[i].free.begin(), nodes_[i].free.end());
    nodes_[i].domain = nodes[i].gpu_domain;
    most = std::max(most, nodes_[i].free.size());
  }
  buckets_.resize(most + 1);
  for (size_t i = 0; i < nodes.size(); ++i) {
    buckets_[nodes_[i].free.size()].insert(static_cast<int>(i));
  }
}

void ClusterBook::Insert(int node, Event event) {
  std::vector<Event>& events = nodes_[node].events;
  auto at = std::upper_bound(
      events.begin(), events.end(), event.at_ms,
      [](int64_t t, const Event& e) { return t < e.at_ms; });
  events.insert(at, event);
}

void ClusterBook::AddRelease(int node, int64_t at_ms, int gpus, int owner) {
  if (gpus <= 0 || at_ms == kNever) return;
  Insert(node, {std::max(at_ms, now_ms_), gpus, owner});
}

void ClusterBook::ExpediteRelease(int node, int owner, int gpus,
                                  int64_t at_ms) {
  std::vector<Event>& events = nodes_[node].events;
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
  int value = static_cast<int>(n.free.size());
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
  if (count <= 0) return found;
  for (size_t k = std::max(gpus, 0); k < buckets_.size(); ++k) {
    for (int node : buckets_[k]) {
      if (!CanTake(node, gpus, end_ms)) continue;
      found.push_back(node);
      if (static_cast<int>(found.size()) == count) return found;
    }
  }
  return found;
}

std::vector<int> ClusterBook::Take(int node, int gpus, int64_t end_ms) {
  NodeState& n = nodes_[node];
  const int old_free = static_cast<int>(n.free.size());
  std::vector<int> chosen = ChooseGpus(n.free, n.domain, gpus);
  std::vector<int> rest;
  rest.reserve(n.free.size() - chosen.size());
  std::set_difference(n.free.begin(), n.free.end(), chosen.begin(),
                      chosen.end(), std::back_inserter(rest));
  n.free = std::move(rest);
  Rebucket(node, old_free);
  AddRelease(node, end_ms, gpus, -1);
  return chosen;
}

void ClusterBook::Rebucket(int node, int old_free) {
  buckets_[old_free].erase(node);
  buckets_[nodes_[node].free.size()].insert(node);
}

int64_t ClusterBook::EarliestStart(int node, int gpus) const {
  const NodeState& n = nodes_[node];
  // Walk the timeline backwards from its final value: the start is the
  // time after which the free count never again drops below `gpus`.
  int value = static_cast<int>(n.free.size());
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
