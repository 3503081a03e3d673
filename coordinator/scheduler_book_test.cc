// ClusterBook's indexes (free-count buckets and counts) against a plain
// model of the same timeline, on random sequences of releases, claims and
// takes.
#include "coordinator/scheduler_book.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

constexpr int64_t kNow = 1'000'000;

// What the book should know, kept the simple way.
struct Model {
  struct Change {
    int64_t at_ms;
    int delta;
  };
  std::vector<int> free;                     // per node, now
  std::vector<std::vector<Change>> changes;  // per node, unordered

  // The free count of `node` at `t` (changes at t included).
  int FreeAt(int node, int64_t t) const {
    int value = free[node];
    for (const Change& c : changes[node]) {
      if (c.at_ms <= t) value += c.delta;
    }
    return value;
  }
  bool CanTake(int node, int gpus, int64_t end_ms) const {
    if (free[node] < gpus) return false;
    if (gpus == 0) return true;
    for (const Change& c : changes[node]) {
      if (c.at_ms < end_ms && FreeAt(node, c.at_ms) < gpus) return false;
    }
    return true;
  }
  int64_t EarliestStart(int node, int gpus) const {
    std::vector<int64_t> times = {kNow};
    for (const Change& c : changes[node]) times.push_back(c.at_ms);
    std::sort(times.begin(), times.end());
    for (int64_t t : times) {
      bool holds = true;
      for (int64_t u : times) {
        if (u >= t && FreeAt(node, u) < gpus) holds = false;
      }
      if (holds) return t;
    }
    return kNever;
  }
};

TEST(ClusterBookTest, IndexesAgreeWithAPlainModel) {
  std::mt19937 rng(11);
  // One book for all rounds: Reset() must leave nothing of the last one.
  ClusterBook book;
  for (int round = 0; round < 200; ++round) {
    const int node_count = 1 + rng() % 12;
    std::vector<NodeSnapshot> nodes;
    Model model;
    for (int n = 0; n < node_count; ++n) {
      NodeSnapshot node{absl::StrCat("n", n), 8, {}, {}};
      for (int g = 0; g < 8; ++g) {
        if (rng() % 3 != 0) node.free_gpus.push_back(g);
      }
      model.free.push_back(static_cast<int>(node.free_gpus.size()));
      nodes.push_back(std::move(node));
    }
    model.changes.resize(node_count);
    book.Reset(nodes, kNow);
    for (int n = 0; n < node_count; ++n) {
      const int busy = 8 - model.free[n];
      if (busy > 0 && rng() % 4 != 0) {
        const int64_t at = kNow + (rng() % 10) * 1000;
        book.AddRelease(n, at, busy, n);
        model.changes[n].push_back({at, busy});
      }
    }
    for (int step = 0; step < 30; ++step) {
      const int node = rng() % node_count;
      const int gpus = rng() % 9;
      const int64_t at = kNow + (rng() % 12) * 1000;
      const int64_t end = rng() % 4 == 0 ? kNever : at;
      switch (rng() % 3) {
        case 0:
          if (gpus > 0 && model.FreeAt(node, kNever - 1) >= gpus) {
            book.AddClaim(node, at, gpus);
            model.changes[node].push_back({at, -gpus});
          }
          break;
        case 1:
          if (model.free[node] >= gpus && gpus > 0) {
            std::vector<int> taken = book.Take(node, gpus, end);
            ASSERT_EQ(static_cast<int>(taken.size()), gpus);
            ASSERT_FALSE(book.changed().empty());
            EXPECT_EQ(book.changed().back(), node);
            model.free[node] -= gpus;
            if (end != kNever) model.changes[node].push_back({end, gpus});
          }
          break;
        default:
          break;
      }
      for (int g = 0; g <= 9; ++g) {
        int with_free = 0;
        for (int n = 0; n < node_count; ++n) with_free += model.free[n] >= g;
        ASSERT_EQ(book.NodesWithFree(g), with_free)
            << "round " << round << " step " << step << " gpus " << g;
        for (int n = 0; n < node_count; ++n) {
          ASSERT_EQ(book.EarliestStart(n, g), model.EarliestStart(n, g))
              << "round " << round << " node " << n << " gpus " << g;
        }
      }
      // FindNodes: best fit (fewest free GPUs, then node order) among the
      // nodes that can take the job.
      const int count = 1 + rng() % 3;
      std::vector<std::pair<int, int>> fits;
      for (int n = 0; n < node_count; ++n) {
        if (model.CanTake(n, gpus, end)) fits.push_back({model.free[n], n});
      }
      std::sort(fits.begin(), fits.end());
      std::vector<int> expected;
      for (size_t i = 0; i < fits.size() && i < size_t(count); ++i) {
        expected.push_back(fits[i].second);
      }
      if (static_cast<int>(expected.size()) < count &&
          book.NodesWithFree(gpus) < count) {
        expected.clear();  // FindNodes gives up early when too few are free
      }
      std::vector<int> found = book.FindNodes(count, gpus, end);
      if (static_cast<int>(expected.size()) == count) {
        EXPECT_EQ(found, expected) << "round " << round << " step " << step;
      } else {
        EXPECT_LT(static_cast<int>(found.size()), count);
      }
    }
  }
}

}  // namespace
}  // namespace dcvlr
