// The scheduling policy's working view of the cluster during one pass: free
// GPUs per node now, and a per-node timeline of when GPUs come free
// (releases) or are promised to a blocked job (claims). Internal to
// LabPolicy; a value that lives for one pass and is not thread-safe.
#ifndef DCVLR_COORDINATOR_SCHEDULER_BOOK_H_
#define DCVLR_COORDINATOR_SCHEDULER_BOOK_H_

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "coordinator/scheduler.h"

namespace dcvlr {

inline constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

class ClusterBook {
 public:
  // A change in a node's free GPU count at `at_ms`: +n for a release, -n
  // for a claim. `owner` names the running attempt a release belongs to
  // (its index in the input), -1 for none.
  struct Event {
    int64_t at_ms;
    int delta;
    int owner;
  };

  ClusterBook() = default;
  ClusterBook(const std::vector<NodeSnapshot>& nodes, int64_t now_ms);
  // Makes this the book of `nodes` at `now_ms`, as constructed, keeping
  // the memory it has.
  void Reset(const std::vector<NodeSnapshot>& nodes, int64_t now_ms);

  int size() const { return static_cast<int>(nodes_.size()); }
  int64_t now_ms() const { return now_ms_; }
  int free_now(int node) const { return nodes_[node].free_count; }
  // Every node whose free GPUs or timeline changed since construction or
  // Reset(), in the order of the changes (a node once per change): values
  // derived per node stay good for the nodes after a reader's last
  // position.
  const std::vector<int>& changed() const { return changed_; }

  // Records that `gpus` GPUs of `node` come free at `at_ms` (kNever: not by
  // themselves), owned by running attempt `owner`.
  void AddRelease(int node, int64_t at_ms, int gpus, int owner);
  // Moves the releases `owner` holds on `node` to `at_ms` when that is
  // earlier (or adds one of `gpus` if it had none): the attempt was told to
  // stop.
  void ExpediteRelease(int node, int owner, int gpus, int64_t at_ms);
  // Promises `gpus` GPUs of `node` to a reservation from `at_ms` on.
  void AddClaim(int node, int64_t at_ms, int gpus);

  // Whether `gpus` GPUs of `node` can be taken now until `end_ms` (kNever:
  // for good) without breaking a claim.
  bool CanTake(int node, int gpus, int64_t end_ms) const;

  // How many nodes have at least `gpus` free GPUs now, claims aside.
  int NodesWithFree(int gpus) const {
    if (gpus <= 0) return size();
    return gpus < static_cast<int>(at_least_.size()) ? at_least_[gpus] : 0;
  }

  // Up to `count` distinct nodes, best fit first (fewest free GPUs that
  // suffice, then node order), where CanTake(node, gpus, end_ms). Returns
  // fewer when there are not enough.
  std::vector<int> FindNodes(int count, int gpus, int64_t end_ms) const;

  // Takes `gpus` free GPUs of `node` until `end_ms`, chosen for locality
  // (see LabPolicy), and returns their indices, ascending.
  std::vector<int> Take(int node, int gpus, int64_t end_ms);

  // Whether GPUs of `node` come free (a release) at or before `at_ms`.
  bool ReleasesBy(int node, int64_t at_ms) const {
    for (const Event& e : nodes_[node].events) {
      if (e.at_ms > at_ms) return false;
      if (e.delta > 0) return true;
    }
    return false;
  }

  // The earliest time from which `node` has `gpus` free GPUs for good,
  // counting releases and claims; kNever if it never does.
  int64_t EarliestStart(int node, int gpus) const;

  // The fewest free GPUs `node` has at any time from `from_ms` on, counting
  // every event except releases whose owner `skip` returns true for.
  template <typename Skip>
  int MinFreeFrom(int node, int64_t from_ms, Skip skip) const;

 private:
  struct NodeState {
    // The snapshot's free GPUs until the first Take() copies them to `own`
    // (sorted).
    const std::vector<int>* free = nullptr;
    std::vector<int> own;
    int free_count = 0;
    const std::vector<int>* domain = nullptr;
    absl::InlinedVector<Event, 6> events;  // by at_ms
    bool has_claims = false;
  };

  void Insert(int node, Event event);

  // A set of nodes as a bitmap, iterated in node order.
  class NodeSet {
   public:
    void Resize(int nodes) { words_.assign((nodes + 63) / 64, 0); }
    void Insert(int node) { words_[node >> 6] |= uint64_t{1} << (node & 63); }
    void Erase(int node) { words_[node >> 6] &= ~(uint64_t{1} << (node & 63)); }
    // Calls f(node) in node order until it returns false.
    template <typename F>
    bool ForEach(F f) const {
      for (size_t w = 0; w < words_.size(); ++w) {
        for (uint64_t bits = words_[w]; bits != 0; bits &= bits - 1) {
          if (!f(static_cast<int>(w * 64 + __builtin_ctzll(bits)))) {
            return false;
          }
        }
      }
      return true;
    }

   private:
    std::vector<uint64_t> words_;
  };

  int64_t now_ms_ = 0;
  std::vector<NodeState> nodes_;
  // buckets_[k]: the nodes with exactly k free GPUs; counts_[k]: how many.
  std::vector<NodeSet> buckets_;
  std::vector<int> counts_;
  std::vector<int> at_least_;  // at_least_[k]: nodes with k or more free
  std::vector<int> changed_;
};

template <typename Skip>
int ClusterBook::MinFreeFrom(int node, int64_t from_ms, Skip skip) const {
  const NodeState& n = nodes_[node];
  int value = n.free_count;
  int lowest = std::numeric_limits<int>::max();
  for (size_t i = 0; i < n.events.size();) {
    const int64_t at = n.events[i].at_ms;
    if (at == kNever) break;
    if (at > from_ms) lowest = std::min(lowest, value);
    for (; i < n.events.size() && n.events[i].at_ms == at; ++i) {
      const Event& e = n.events[i];
      if (e.delta > 0 && e.owner >= 0 && skip(e.owner)) continue;
      value += e.delta;
    }
  }
  return std::min(lowest, value);
}

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_SCHEDULER_BOOK_H_
