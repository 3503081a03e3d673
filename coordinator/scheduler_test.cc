#include "coordinator/scheduler.h"

#include <limits>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr int64_t kSecond = 1000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kNow = 1000 * kHour;  // the fake clock

NodeSnapshot Node(std::string name, std::vector<int> free, int total = 8) {
  return {std::move(name), total, std::move(free), {}};
}

NodeSnapshot FreeNode(std::string name) {
  return Node(std::move(name), {0, 1, 2, 3, 4, 5, 6, 7});
}

PendingJob Job(std::string id, int priority, int nodes, int gpus,
               std::string user = "u", int64_t limit_ms = 0) {
  static int64_t seq = 0;
  PendingJob job{std::move(id), priority, ++seq, nodes, gpus};
  job.user = std::move(user);
  job.time_limit_ms = limit_ms;
  return job;
}

RunningAttempt Running(std::string id, int priority,
                       std::vector<NodePlacement> where,
                       std::string user = "other") {
  RunningAttempt r;
  r.job_id = std::move(id);
  r.attempt = 1;
  r.user = std::move(user);
  r.priority = priority;
  r.placements = std::move(where);
  r.started_ms = kNow - kHour;
  return r;
}

std::shared_ptr<const ClusterConfig> Config(bool preemption) {
  auto config = std::make_shared<ClusterConfig>();
  config->preemption = preemption;
  return config;
}

const Placement* Placed(const SchedulerDecisions& d, const std::string& id) {
  for (const Placement& p : d.placements) {
    if (p.job_id == id) return &p;
  }
  return nullptr;
}

// The reason `id` waits, from decisions made on `input`.
std::string ReasonOf(const SchedulerInput& input, const SchedulerDecisions& d,
                     const std::string& id) {
  for (const QueueEntry& e : d.queue) {
    if (input.queue[e.job].id != id) continue;
    return e.reason < 0 ? "(placed)" : d.reasons[e.reason];
  }
  return "(not queued)";
}

std::string QueuedId(const SchedulerInput& input, const SchedulerDecisions& d,
                     int position) {
  return input.queue[d.queue[position].job].id;
}

std::vector<std::string> Victims(const SchedulerDecisions& d) {
  std::vector<std::string> ids;
  for (const Preemption& p : d.preemptions) ids.push_back(p.job_id);
  return ids;
}

// Snapshot of GPUs in use: removes `placement`'s GPUs from the nodes and
// adds it to the running attempts, as the core would.
void Apply(SchedulerInput* input, const Placement& placement, int64_t limit_ms,
           int priority = 50) {
  for (const NodePlacement& p : placement.nodes) {
    for (NodeSnapshot& node : input->nodes) {
      if (node.name != p.node) continue;
      for (int gpu : p.gpus) {
        node.free_gpus.erase(
            std::find(node.free_gpus.begin(), node.free_gpus.end(), gpu));
      }
    }
  }
  RunningAttempt r = Running(placement.job_id, priority, placement.nodes);
  r.started_ms = input->now_ms;
  r.time_limit_ms = limit_ms;
  input->running.push_back(r);
  for (size_t i = 0; i < input->queue.size(); ++i) {
    if (input->queue[i].id == placement.job_id) {
      input->queue.erase(input->queue.begin() + i);
      break;
    }
  }
}

// --- Order -----------------------------------------------------------------

TEST(LabPolicyTest, PlacesHighPriorityFirstThenBySubmission) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.queue = {Job("j-1", 50, 1, 2), Job("j-2", 90, 1, 2),
                 Job("j-3", 50, 1, 2)};
  input.nodes = {Node("a", {0, 1, 2, 3})};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 2u);
  EXPECT_EQ(d.placements[0].job_id, "j-2");
  EXPECT_THAT(d.placements[0].nodes[0].gpus, ElementsAre(0, 1));
  EXPECT_EQ(d.placements[1].job_id, "j-1");
  EXPECT_THAT(d.placements[1].nodes[0].gpus, ElementsAre(2, 3));
  ASSERT_EQ(d.queue.size(), 3u);
  EXPECT_EQ(QueuedId(input, d, 0), "j-2");
  EXPECT_EQ(d.queue[0].reason, -1);
  EXPECT_EQ(QueuedId(input, d, 2), "j-3");
  ASSERT_GE(d.queue[2].reason, 0);
  EXPECT_EQ(d.reasons[d.queue[2].reason],
            "waiting for 1 node with 2 free GPUs");
}

TEST(LabPolicyTest, LessUsedUserGoesFirstAtEqualPriority) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.queue = {Job("heavy", 50, 1, 8, "alice"),
                 Job("light", 50, 1, 8, "bob")};
  input.nodes = {FreeNode("a")};
  input.usage.user_gpu_s = {{"alice", 1e6}, {"bob", 1e3}};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 1u);
  EXPECT_EQ(d.placements[0].job_id, "light");
  EXPECT_EQ(QueuedId(input, d, 0), "light");
  EXPECT_GT(d.fair_shares[d.queue[0].account].factor,
            d.fair_shares[d.queue[1].account].factor);
  // Priority still comes first.
  input.queue[0].priority = 51;
  d = LabPolicy().Schedule(input);
  EXPECT_EQ(d.placements[0].job_id, "heavy");
}

TEST(LabPolicyTest, AgingLetsAnOldLowPriorityJobOvertake) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.queue = {Job("old", 20, 1, 8), Job("new", 40, 1, 8)};
  input.queue[0].submit_ms = kNow - 30 * kHour;  // +30 points (1 per hour)
  input.queue[1].submit_ms = kNow;
  input.nodes = {FreeNode("a")};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 1u);
  EXPECT_EQ(d.placements[0].job_id, "old");
  EXPECT_DOUBLE_EQ(d.queue[0].effective_priority, 50);

  input.queue[0].submit_ms = kNow - 10 * kHour;  // 30 < 40
  d = LabPolicy().Schedule(input);
  EXPECT_EQ(d.placements[0].job_id, "new");
}

TEST(LabPolicyTest, AgingDoesNotOverrideFairShareAmongPeers) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.queue = {Job("waited", 50, 1, 8, "heavy"),
                 Job("fresh", 50, 1, 8, "light")};
  input.queue[0].submit_ms = kNow - 20 * kHour;
  input.queue[1].submit_ms = kNow;
  input.usage.user_gpu_s = {{"heavy", 1e6}};
  input.nodes = {FreeNode("a")};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 1u);
  EXPECT_EQ(d.placements[0].job_id, "fresh");
}

// --- Fair share ----------------------------------------------------------

// Two users, shares 3:1, each with more 1-GPU work than the cluster holds,
// on a fake clock: the GPU-seconds they receive converge to 3:1.
TEST(LabPolicyTest, FairSharesConvergeUnderContention) {
  auto config = std::make_shared<ClusterConfig>();
  config->users["alice"].shares = 3;
  config->users["bob"].shares = 1;
  config->fair_share_half_life_s = 3600;
  UsageLedger ledger(config->fair_share_half_life_s);
  const int64_t kRun = 5 * kMinute, kStep = kMinute;
  struct Live {
    RunningAttempt attempt;
    int64_t end_ms;
  };
  std::vector<Live> live;
  std::map<std::string, double> received;  // GPU-seconds in the last half
  int next = 0;
  const int64_t start = kNow, stop = kNow + 48 * kHour;
  for (int64_t now = start; now < stop; now += kStep) {
    // Charge the last step, retire finished attempts.
    ledger.AdvanceTo(now);
    for (const Live& l : live) {
      ledger.Charge(l.attempt.user, 1, kStep);
      if (now >= start + 24 * kHour) received[l.attempt.user] += 60;
    }
    std::erase_if(live, [&](const Live& l) { return l.end_ms <= now; });
    SchedulerInput input;
    input.now_ms = now;
    input.config = config;
    input.usage = ledger.usage();
    std::vector<int> free = {0, 1, 2, 3, 4, 5, 6, 7};
    for (const Live& l : live) {
      input.running.push_back(l.attempt);
      std::erase(free, l.attempt.placements[0].gpus[0]);
    }
    input.nodes = {Node("a", free)};
    for (const std::string user : {"alice", "bob"}) {
      for (int i = 0; i < 8; ++i) {  // a standing backlog
        input.queue.push_back(
            Job(absl::StrCat(user, "-", next++), 50, 1, 1, user, kRun));
      }
    }
    SchedulerDecisions d = LabPolicy().Schedule(input);
    for (const Placement& p : d.placements) {
      const std::string user = p.job_id.substr(0, p.job_id.find('-'));
      RunningAttempt r = Running(p.job_id, 50, p.nodes, user);
      r.started_ms = now;
      live.push_back({r, now + kRun});
    }
  }
  const double total = received["alice"] + received["bob"];
  ASSERT_GT(total, 0);
  EXPECT_NEAR(received["alice"] / total, 0.75, 0.03);
  EXPECT_NEAR(received["bob"] / total, 0.25, 0.03);
}

// --- Quotas --------------------------------------------------------------

TEST(LabPolicyTest, QuotaHoldsBackAHigherPriorityJobAndSaysWhy) {
  auto config = std::make_shared<ClusterConfig>();
  config->groups["vision"].max_gpus = 16;
  config->users["alice"].group = "vision";
  config->users["carol"].group = "vision";
  config->users["bob"].group = kDefaultGroup;
  config->preemption = true;
  SchedulerInput input;
  input.now_ms = kNow;
  input.config = config;
  input.nodes = {Node("a", {}), FreeNode("b"), FreeNode("c")};
  input.running = {
      Running("r-1", 10, {{"a", {0, 1, 2, 3, 4, 5, 6, 7}}}, "alice"),
      Running("r-2", 10, {{"b", {0, 1, 2, 3}}}, "carol")};
  input.nodes[1].free_gpus = {4, 5, 6, 7};
  input.queue = {Job("hi", 90, 1, 8, "alice"), Job("lo", 10, 1, 8, "bob")};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_EQ(ReasonOf(input, d, "hi"),
            "waiting: group vision at quota 12/16 GPUs; "
            "job needs 8");
  ASSERT_NE(Placed(d, "lo"), nullptr);    // lower priority, but within quota
  EXPECT_THAT(d.preemptions, IsEmpty());  // a quota is not a reason to preempt
  EXPECT_THAT(d.reservations, IsEmpty());

  input.running[1].placements[0].gpus = {0, 1, 2, 3, 4, 5, 6, 7};
  input.nodes[1].free_gpus = {};
  d = LabPolicy().Schedule(input);
  EXPECT_EQ(ReasonOf(input, d, "hi"),
            "waiting: group vision at quota 16/16 GPUs");

  config->users["alice"].max_gpus = 4;
  d = LabPolicy().Schedule(input);
  EXPECT_EQ(ReasonOf(input, d, "hi"),
            "waiting: needs 8 GPUs, more than user alice's quota of 4");
}

TEST(LabPolicyTest, QuotaCountsJobsPlacedInTheSamePass) {
  auto config = std::make_shared<ClusterConfig>();
  config->users["alice"].max_gpus = 8;
  SchedulerInput input;
  input.now_ms = kNow;
  input.config = config;
  input.nodes = {FreeNode("a"), FreeNode("b")};
  input.queue = {Job("j-1", 50, 1, 4, "alice"), Job("j-2", 50, 1, 4, "alice"),
                 Job("j-3", 50, 1, 4, "alice")};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_EQ(d.placements.size(), 2u);
  EXPECT_EQ(ReasonOf(input, d, "j-3"), "waiting: user alice at quota 8/8 GPUs");
}

// --- Placement -----------------------------------------------------------

TEST(LabPolicyTest, GangIsNeverPartlyStarted) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.queue = {Job("gang", 50, 3, 4)};
  input.nodes = {FreeNode("a"), Node("b", {0, 1, 2}), FreeNode("c")};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_THAT(d.placements, IsEmpty());
  EXPECT_EQ(ReasonOf(input, d, "gang"), "waiting for 3 nodes with 4 free GPUs");

  input.nodes[1] = Node("b", {4, 5, 6, 7});
  d = LabPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 1u);
  ASSERT_EQ(d.placements[0].nodes.size(), 3u);
  std::vector<std::string> nodes;
  for (const NodePlacement& p : d.placements[0].nodes) {
    nodes.push_back(p.node);
    EXPECT_EQ(p.gpus.size(), 4u);
  }
  EXPECT_THAT(nodes, UnorderedElementsAre("a", "b", "c"));
}

TEST(LabPolicyTest, SmallJobsShareOneNodeSoAWholeNodeStaysFree) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.queue = {Job("s-1", 60, 1, 2), Job("s-2", 60, 1, 2),
                 Job("s-3", 60, 1, 2), Job("s-4", 60, 1, 2),
                 Job("big", 50, 1, 8)};
  input.nodes = {FreeNode("a"), FreeNode("b")};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 5u);
  const std::string small_node = Placed(d, "s-1")->nodes[0].node;
  std::vector<int> used;
  for (const std::string id : {"s-1", "s-2", "s-3", "s-4"}) {
    ASSERT_EQ(Placed(d, id)->nodes[0].node, small_node) << id;
    for (int gpu : Placed(d, id)->nodes[0].gpus) used.push_back(gpu);
  }
  EXPECT_THAT(used, UnorderedElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  EXPECT_NE(Placed(d, "big")->nodes[0].node, small_node);
}

TEST(LabPolicyTest, SmallJobPrefersThePartlyUsedNode) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.queue = {Job("s", 50, 1, 2)};
  input.nodes = {FreeNode("a"), Node("b", {5, 6, 7}), FreeNode("c")};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 1u);
  EXPECT_EQ(d.placements[0].nodes[0].node, "b");
}

TEST(LabPolicyTest, GpusInsideANodeFollowTopology) {
  SchedulerInput input;
  input.now_ms = kNow;
  NodeSnapshot node = Node("a", {2, 3, 4, 5, 6, 7});
  node.gpu_domain = {0, 0, 0, 0, 1, 1, 1, 1};  // two NVLink islands
  input.nodes = {node};
  // The 2-GPU job fills island 0's remainder; island 1 stays whole.
  input.queue = {Job("two", 60, 1, 2), Job("four", 50, 1, 4)};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 2u);
  EXPECT_THAT(Placed(d, "two")->nodes[0].gpus, ElementsAre(2, 3));
  EXPECT_THAT(Placed(d, "four")->nodes[0].gpus, ElementsAre(4, 5, 6, 7));

  // Spanning islands, the job takes as few as it can.
  node = Node("a", {0, 4, 5, 6});
  node.gpu_domain = {0, 0, 0, 0, 1, 1, 1, 1};
  input.nodes = {node};
  input.queue = {Job("three", 50, 1, 3)};
  d = LabPolicy().Schedule(input);
  EXPECT_THAT(Placed(d, "three")->nodes[0].gpus, ElementsAre(4, 5, 6));
}

TEST(LabPolicyTest, CpuJobsNeedNoGpus) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.queue = {Job("j-1", 50, 1, 0), Job("j-2", 50, 1, 0)};
  input.nodes = {Node("a", {})};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_EQ(d.placements.size(), 2u);
}

TEST(LabPolicyTest, JobLargerThanAnyNodeSaysSo) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.queue = {Job("huge", 50, 1, 16)};
  input.nodes = {FreeNode("a")};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_EQ(ReasonOf(input, d, "huge"),
            "waiting: the cluster has no 1 node with 16 GPUs");
}

// Users and nodes are found by name through a hash that reads names as
// words; names of every length, alike but for one byte anywhere, must
// still be told apart.
TEST(LabPolicyTest, NamesThatDifferInOneByteAreToldApart) {
  for (size_t length = 1; length <= 40; ++length) {
    for (size_t at = 0; at < length; at += std::max<size_t>(1, length / 5)) {
      std::string first(length, 'x'), second(length, 'x');
      second[at] = 'y';
      SCOPED_TRACE(absl::StrCat("'", first, "' vs '", second, "'"));
      auto config = std::make_shared<ClusterConfig>();
      config->users[first].max_gpus = 8;
      config->users[second].max_gpus = 8;
      SchedulerInput input;
      input.now_ms = kNow;
      input.config = config;
      // Node `first` frees its GPUs in 100 s, node `second` in 500 s; the
      // user `first` holds 8 GPUs (its quota), `second` none.
      input.nodes = {Node(second, {}), Node(first, {})};
      input.running = {
          Running("r-1", 50, {{first, {0, 1, 2, 3, 4, 5, 6, 7}}}, first),
          Running("r-2", 50, {{second, {0, 1, 2, 3, 4, 5, 6, 7}}}, "other")};
      input.running[0].time_limit_ms = kHour + 100 * kSecond;
      input.running[1].time_limit_ms = kHour + 500 * kSecond;
      input.queue = {Job("over", 90, 1, 1, first),
                     Job("blocked", 50, 1, 8, second)};
      SchedulerDecisions d = LabPolicy().Schedule(input);
      EXPECT_EQ(ReasonOf(input, d, "over"),
                absl::StrCat("waiting: user ", first, " at quota 8/8 GPUs"));
      ASSERT_EQ(d.reservations.size(), 1u);
      EXPECT_EQ(d.reservations[0].job_id, "blocked");
      EXPECT_THAT(d.reservations[0].nodes, ElementsAre(first));
      EXPECT_EQ(d.reservations[0].start_ms, kNow + 100 * kSecond);
    }
  }
}

// --- Reservations and backfill -------------------------------------------

TEST(LabPolicyTest, BlockedGangReservesAndOnlyShortJobsBackfill) {
  SchedulerInput input;
  input.now_ms = kNow;
  // a is busy for 100 s more; c is free.
  input.nodes = {Node("a", {}), FreeNode("c")};
  input.running = {Running("r-a", 50, {{"a", {0, 1, 2, 3, 4, 5, 6, 7}}})};
  input.running[0].started_ms = kNow - 100 * kSecond;
  input.running[0].time_limit_ms = 200 * kSecond;
  input.queue = {
      Job("gang", 90, 2, 8), Job("short", 50, 1, 4, "u", 90 * kSecond),
      Job("long", 50, 1, 4, "u", 300 * kSecond), Job("unbounded", 50, 1, 4)};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  ASSERT_EQ(d.reservations.size(), 1u);
  EXPECT_EQ(d.reservations[0].job_id, "gang");
  EXPECT_EQ(d.reservations[0].start_ms, kNow + 100 * kSecond);
  EXPECT_THAT(d.reservations[0].nodes, UnorderedElementsAre("a", "c"));
  EXPECT_EQ(ReasonOf(input, d, "gang"),
            "waiting for 2 nodes with 8 free GPUs; reserved a,c in 1m");
  // Only the job that ends before the reserved start fills the gap.
  ASSERT_NE(Placed(d, "short"), nullptr);
  EXPECT_EQ(Placed(d, "short")->nodes[0].node, "c");
  EXPECT_THAT(ReasonOf(input, d, "long"),
              HasSubstr("its time_limit ends after their start"));
  EXPECT_THAT(ReasonOf(input, d, "unbounded"),
              HasSubstr("a time_limit ending before their start"));
}

// Backfill never delays the reservation: on random clusters, the
// reservation of the first blocked job, recomputed after everything placed
// behind it has started, starts no later than first promised.
TEST(LabPolicyTest, BackfillNeverDelaysTheReservation) {
  std::mt19937 rng(7);
  int checked = 0;
  for (int round = 0; round < 300; ++round) {
    SchedulerInput input;
    input.now_ms = kNow;
    const int node_count = 2 + rng() % 5;
    for (int n = 0; n < node_count; ++n) {
      NodeSnapshot node = FreeNode(absl::StrCat("n", n));
      // Some running attempts with limits, a few without.
      int gpu = 0;
      while (gpu < 8 && rng() % 4 != 0) {
        const int size = std::min<int>(8 - gpu, 1 << (rng() % 4));
        RunningAttempt r =
            Running(absl::StrCat("r", n, "-", gpu), 50, {{node.name, {}}});
        for (int k = 0; k < size; ++k) r.placements[0].gpus.push_back(gpu + k);
        r.started_ms = kNow - (rng() % 100) * kSecond;
        r.time_limit_ms = rng() % 8 == 0 ? 0 : (100 + rng() % 1000) * kSecond;
        input.running.push_back(r);
        gpu += size;
      }
      node.free_gpus.erase(node.free_gpus.begin(),
                           node.free_gpus.begin() + gpu);
      input.nodes.push_back(node);
    }
    input.queue.push_back(Job("big", 90, 1 + rng() % node_count, 8));
    for (int j = 0; j < 12; ++j) {
      input.queue.push_back(
          Job(absl::StrCat("s", j), 50, 1 + rng() % 2, 1 << (rng() % 4), "u",
              rng() % 5 == 0 ? 0 : (50 + rng() % 1500) * kSecond));
    }
    SchedulerDecisions first = LabPolicy().Schedule(input);
    if (first.reservations.empty() || first.reservations[0].job_id != "big") {
      continue;
    }
    const int64_t promised = first.reservations[0].start_ms;
    for (const Placement& p : first.placements) {
      int64_t limit = 0;
      for (const PendingJob& q : input.queue) {
        if (q.id == p.job_id) limit = q.time_limit_ms;
      }
      Apply(&input, p, limit);
    }
    SchedulerDecisions second = LabPolicy().Schedule(input);
    ASSERT_FALSE(second.reservations.empty()) << "round " << round;
    EXPECT_EQ(second.reservations[0].job_id, "big");
    EXPECT_LE(second.reservations[0].start_ms, promised) << "round " << round;
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

// The pass skips work with indexes of free nodes and a memory of shapes
// that found no room; neither may hold back a job that fits. Checked
// against a plain model: what the pass leaves (its placements taken, every
// reservation's claim made) only has less room than each job saw at its
// turn, so no job that waits for GPUs may fit into it.
TEST(LabPolicyTest, NoJobWaitsForGpusThatThePassLeftForIt) {
  std::mt19937 rng(3);
  int waiting_checked = 0;
  for (int round = 0; round < 300; ++round) {
    SchedulerInput input;
    input.now_ms = kNow;
    const int node_count = 1 + rng() % 8;
    // Per node: GPUs free now, and (time, change) of its timeline.
    std::vector<int> free_now;
    std::vector<std::vector<std::pair<int64_t, int>>> changes(node_count);
    for (int n = 0; n < node_count; ++n) {
      NodeSnapshot node = FreeNode(absl::StrCat("n", n));
      int gpu = 0;
      while (gpu < 8 && rng() % 3 != 0) {
        const int size = std::min<int>(8 - gpu, 1 << (rng() % 4));
        RunningAttempt r =
            Running(absl::StrCat("r", n, "-", gpu), 50, {{node.name, {}}});
        for (int k = 0; k < size; ++k) r.placements[0].gpus.push_back(gpu + k);
        r.started_ms = kNow - (rng() % 100) * kSecond;
        r.time_limit_ms = rng() % 6 == 0 ? 0 : (100 + rng() % 1000) * kSecond;
        if (r.time_limit_ms > 0) {
          changes[n].push_back({r.started_ms + r.time_limit_ms, size});
        }
        input.running.push_back(r);
        gpu += size;
      }
      node.free_gpus.erase(node.free_gpus.begin(),
                           node.free_gpus.begin() + gpu);
      free_now.push_back(8 - gpu);
      input.nodes.push_back(node);
    }
    const int jobs = 1 + rng() % 20;
    for (int j = 0; j < jobs; ++j) {
      input.queue.push_back(
          Job(absl::StrCat("q", j), rng() % 3 == 0 ? 90 : 50,
              1 + rng() % std::min(node_count, 3), 1 << (rng() % 4), "u",
              rng() % 4 == 0 ? 0 : (50 + rng() % 1500) * kSecond));
    }
    SchedulerDecisions d = LabPolicy().Schedule(input);
    std::map<std::string, const PendingJob*> by_id;
    for (const PendingJob& job : input.queue) by_id[job.id] = &job;
    std::map<std::string, int> node_of;
    for (int n = 0; n < node_count; ++n) node_of[input.nodes[n].name] = n;
    for (const Placement& p : d.placements) {
      const PendingJob& job = *by_id[p.job_id];
      for (const NodePlacement& np : p.nodes) {
        const int n = node_of[np.node];
        free_now[n] -= static_cast<int>(np.gpus.size());
        ASSERT_GE(free_now[n], 0);
        if (job.time_limit_ms > 0) {
          changes[n].push_back({kNow + job.time_limit_ms, job.gpus_per_node});
        }
      }
    }
    for (const QueueEntry& entry : d.queue) {
      if (entry.reason < 0) continue;
      const PendingJob& job = input.queue[entry.job];
      const std::string& reason = d.reasons[entry.reason];
      if (reason.find("quota") != std::string::npos ||
          reason.find("cluster has no") != std::string::npos) {
        continue;
      }
      const int64_t end = job.time_limit_ms > 0
                              ? kNow + job.time_limit_ms
                              : std::numeric_limits<int64_t>::max();
      int fitting = 0;
      for (int n = 0; n < node_count; ++n) {
        // The node's timeline with every claim but the job's own.
        std::vector<std::pair<int64_t, int>> timeline = changes[n];
        for (const Reservation& r : d.reservations) {
          if (r.job_id == job.id) continue;
          for (const std::string& name : r.nodes) {
            if (node_of[name] == n) {
              timeline.push_back(
                  {std::max(r.start_ms, kNow), -r.gpus_per_node});
            }
          }
        }
        bool fits = free_now[n] >= job.gpus_per_node;
        for (const auto& [at, delta] : timeline) {
          if (at >= end) continue;
          int value = free_now[n];
          for (const auto& [other_at, other] : timeline) {
            if (other_at <= at) value += other;
          }
          fits = fits && value >= job.gpus_per_node;
        }
        fitting += fits;
      }
      EXPECT_LT(fitting, job.nodes) << "round " << round << ": " << job.id
                                    << " waits (" << reason << ") but fits";
      ++waiting_checked;
    }
  }
  EXPECT_GT(waiting_checked, 500);
}

// --- Preemption ----------------------------------------------------------

TEST(LabPolicyTest, PreemptionPicksTheVictimThatLosesLeastWork) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.config = Config(true);
  input.nodes = {Node("a", {})};
  input.running = {Running("stale", 10, {{"a", {0, 1, 2, 3}}}),
                   Running("fresh", 10, {{"a", {4, 5, 6, 7}}})};
  input.running[0].last_checkpoint_ms = kNow - 30 * kMinute;
  input.running[1].last_checkpoint_ms = kNow - 1 * kMinute;
  input.queue = {Job("urgent", 90, 1, 4)};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_THAT(Victims(d), ElementsAre("fresh"));
  EXPECT_EQ(d.preemptions[0].for_job_id, "urgent");
  EXPECT_THAT(d.preemptions[0].reason, HasSubstr("priority 90 > 10"));
  EXPECT_THAT(d.placements, IsEmpty());  // it starts once the victim stops
  ASSERT_EQ(d.reservations.size(), 1u);
  EXPECT_EQ(d.reservations[0].job_id, "urgent");
  EXPECT_THAT(ReasonOf(input, d, "urgent"),
              HasSubstr("waiting for 1 preempted attempt to stop"));
}

TEST(LabPolicyTest, PreemptionPrefersFewerVictimsAtEqualLoss) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.config = Config(true);
  input.nodes = {Node("a", {}), Node("b", {})};
  // a: two 4-GPU attempts; b: one 8-GPU attempt that lost as much as both.
  input.running = {Running("a1", 10, {{"a", {0, 1, 2, 3}}}),
                   Running("a2", 10, {{"a", {4, 5, 6, 7}}}),
                   Running("b1", 10, {{"b", {0, 1, 2, 3, 4, 5, 6, 7}}})};
  for (RunningAttempt& r : input.running) r.last_checkpoint_ms = kNow - kHour;
  input.queue = {Job("urgent", 90, 1, 8)};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_THAT(Victims(d), ElementsAre("b1"));
}

TEST(LabPolicyTest, NoPreemptionForAJobThatStillWouldNotFit) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.config = Config(true);
  input.nodes = {Node("a", {}), Node("b", {})};
  // Only a's attempt is of lower priority; the gang needs both nodes.
  input.running = {Running("low", 10, {{"a", {0, 1, 2, 3, 4, 5, 6, 7}}}),
                   Running("high", 95, {{"b", {0, 1, 2, 3, 4, 5, 6, 7}}})};
  input.queue = {Job("gang", 90, 2, 8)};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_THAT(d.preemptions, IsEmpty());
  EXPECT_THAT(d.placements, IsEmpty());
}

TEST(LabPolicyTest, NoPreemptionLoops) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.config = Config(true);
  input.nodes = {Node("a", {})};
  input.running = {Running("victim", 10, {{"a", {0, 1, 2, 3, 4, 5, 6, 7}}})};
  input.queue = {Job("urgent", 90, 1, 8), Job("peer", 10, 1, 8)};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  ASSERT_THAT(Victims(d), ElementsAre("victim"));

  // Next pass: the victim is stopping. Nothing more is preempted, and the
  // job holds the GPUs being freed.
  input.now_ms += 5 * kSecond;
  input.running[0].stopping = true;
  input.running[0].stop_deadline_ms = kNow + 30 * kSecond;
  d = LabPolicy().Schedule(input);
  EXPECT_THAT(d.preemptions, IsEmpty());
  ASSERT_EQ(d.reservations.size(), 1u);
  EXPECT_EQ(d.reservations[0].job_id, "urgent");
  EXPECT_THAT(ReasonOf(input, d, "urgent"), HasSubstr("being freed"));

  // The victim stopped and the urgent job runs; the requeued victim (same
  // priority as before) and its peers cannot preempt it back.
  input.running = {Running("urgent", 90, {{"a", {0, 1, 2, 3, 4, 5, 6, 7}}})};
  input.queue = {Job("victim", 10, 1, 8), Job("peer", 10, 1, 8)};
  d = LabPolicy().Schedule(input);
  EXPECT_THAT(d.preemptions, IsEmpty());

  // Equal priority never preempts.
  input.queue = {Job("equal", 90, 1, 8)};
  d = LabPolicy().Schedule(input);
  EXPECT_THAT(d.preemptions, IsEmpty());
}

// A low-priority job that aging ranked above the preemptor when it started
// is not a victim: requeued, it would rank above the preemptor again, take
// the freed GPUs back and be preempted again, forever.
TEST(LabPolicyTest, AgedAttemptThatOutrankedThePreemptorIsNoVictim) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.config = Config(true);
  input.nodes = {Node("a", {}), Node("b", {})};
  input.running = {Running("aged", 10, {{"a", {0, 1, 2, 3, 4, 5, 6, 7}}}),
                   Running("young", 10, {{"b", {0, 1, 2, 3, 4, 5, 6, 7}}})};
  input.running[0].submit_ms = input.running[0].started_ms - 45 * kHour;
  input.running[1].submit_ms = input.running[1].started_ms - kHour;
  input.queue = {Job("urgent", 50, 1, 8)};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_THAT(Victims(d), ElementsAre("young"));
}

TEST(LabPolicyTest, PreemptionIsOffByDefault) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.nodes = {Node("a", {})};
  input.running = {Running("low", 10, {{"a", {0, 1, 2, 3, 4, 5, 6, 7}}})};
  input.queue = {Job("urgent", 90, 1, 8)};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_THAT(d.preemptions, IsEmpty());
}

TEST(LabPolicyTest, MultiNodeVictimMakesOthersRedundant) {
  SchedulerInput input;
  input.now_ms = kNow;
  input.config = Config(true);
  input.nodes = {Node("a", {}), Node("b", {})};
  // A 2-node gang with little lost work, and a single-node attempt on b
  // that lost even less; freeing the gang alone frees both nodes.
  input.running = {
      Running("gang", 10,
              {{"a", {0, 1, 2, 3, 4, 5, 6, 7}}, {"b", {0, 1, 2, 3}}}),
      Running("single", 10, {{"b", {4, 5, 6, 7}}})};
  input.running[0].last_checkpoint_ms = kNow - 2 * kMinute;
  input.running[1].last_checkpoint_ms = kNow - 1 * kMinute;
  input.queue = {Job("urgent", 90, 2, 4)};
  SchedulerDecisions d = LabPolicy().Schedule(input);
  EXPECT_THAT(Victims(d), ElementsAre("gang"));
}

// With no reservation left to make, a blocked job still holds GPUs that
// come free within the default grace, as many as it needs and no fewer.
TEST(LabPolicyTest, JobHoldsGpusBeingFreedWhenNoReservationIsLeft) {
  for (const int stopping_gpus : {1, 2}) {
    for (const int needed : {1, 2, 3}) {
      for (const bool explain : {true, false}) {
        SchedulerInput input;
        input.now_ms = kNow;
        input.explain = explain;
        auto config = std::make_shared<ClusterConfig>();
        config->max_reservations = 0;
        input.config = config;
        input.nodes = {Node("a", {})};
        RunningAttempt stopping = Running("stopping", 50, {{"a", {}}});
        RunningAttempt busy = Running("busy", 50, {{"a", {}}});
        for (int gpu = 0; gpu < 8; ++gpu) {
          (gpu < stopping_gpus ? stopping : busy)
              .placements[0]
              .gpus.push_back(gpu);
        }
        stopping.stopping = true;
        stopping.stop_deadline_ms = kNow + 10 * kSecond;
        input.running = {stopping, busy};
        input.queue = {Job("job", 50, 1, needed)};
        SchedulerDecisions d = LabPolicy().Schedule(input);
        SCOPED_TRACE(absl::StrCat("stopping ", stopping_gpus, " needed ",
                                  needed, " explain ", explain));
        if (needed > stopping_gpus) {
          EXPECT_THAT(d.reservations, IsEmpty());
          continue;
        }
        ASSERT_EQ(d.reservations.size(), 1u);
        EXPECT_EQ(d.reservations[0].job_id, "job");
        EXPECT_EQ(d.reservations[0].start_ms, kNow + 10 * kSecond);
        EXPECT_THAT(d.reservations[0].nodes, ElementsAre("a"));
      }
    }
  }
}

// --- Explaining ------------------------------------------------------------

// Everything a pass decides, as text: placements, reservations, preemptions
// and fair shares, in the decisions' order.
std::string Decided(const SchedulerDecisions& d) {
  std::string out;
  for (const Placement& p : d.placements) {
    absl::StrAppend(&out, "place ", p.job_id);
    for (const NodePlacement& np : p.nodes) {
      absl::StrAppend(&out, " ", np.node, "[", absl::StrJoin(np.gpus, ","),
                      "]");
    }
    out += "\n";
  }
  for (const Reservation& r : d.reservations) {
    absl::StrAppend(&out, "reserve ", r.job_id, " at ", r.start_ms, " ",
                    r.gpus_per_node, " on ", absl::StrJoin(r.nodes, ","), "\n");
  }
  for (const Preemption& p : d.preemptions) {
    absl::StrAppend(&out, "preempt ", p.job_id, "#", p.attempt, " for ",
                    p.for_job_id, ": ", p.reason, "\n");
  }
  for (const FairShare& f : d.fair_shares) {
    absl::StrAppend(&out, "share ", f.user, " ", f.group, " ", f.factor, "\n");
  }
  return out;
}

// Random clusters, queues and configurations on a fake clock: a pass that
// does not explain decides exactly what one that explains decides, also on
// the next pass, after the first one's decisions were applied.
TEST(LabPolicyTest, PassesThatDoNotExplainDecideTheSame) {
  std::mt19937 rng(11);
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  int decided = 0, preempted = 0, short_queues = 0;
  for (int round = 0; round < 400; ++round) {
    SchedulerInput input;
    input.now_ms = kNow;
    auto config = std::make_shared<ClusterConfig>();
    config->preemption = pick(2) == 0;
    config->max_reservations = pick(4);
    config->default_grace_s = pick(2) == 0 ? 30 : 300;
    config->aging_points_per_hour = pick(3);
    if (pick(4) == 0) config->users["u1"].max_gpus = 1 + pick(16);
    if (pick(4) == 0) {
      config->users["u2"].group = "g";
      config->groups["g"].max_gpus = 1 + pick(24);
    }
    input.config = config;
    const int node_count = 1 + pick(10);
    for (int n = 0; n < node_count; ++n) {
      NodeSnapshot node = FreeNode(absl::StrCat("n", n));
      if (pick(3) == 0) node.gpu_domain = {0, 0, 0, 0, 1, 1, 1, 1};
      int gpu = 0;
      while (gpu < 8 && pick(4) != 0) {
        const int size = std::min(8 - gpu, 1 << pick(4));
        RunningAttempt r =
            Running(absl::StrCat("r", n, "-", gpu), pick(3) == 0 ? 20 : 50,
                    {{node.name, {}}}, absl::StrCat("u", pick(4)));
        for (int k = 0; k < size; ++k) r.placements[0].gpus.push_back(gpu + k);
        r.started_ms = kNow - pick(200) * kMinute;
        r.submit_ms = r.started_ms - pick(100) * kHour;
        r.last_checkpoint_ms = r.started_ms + pick(60) * kMinute;
        // Limits that end long ago, within a grace, or much later.
        r.time_limit_ms = pick(5) == 0 ? 0 : (1 + pick(400)) * kMinute;
        if (pick(8) == 0) {
          r.stopping = true;
          r.stop_deadline_ms = kNow + pick(600) * kSecond;
        }
        input.running.push_back(r);
        gpu += size;
      }
      node.free_gpus.erase(node.free_gpus.begin(),
                           node.free_gpus.begin() + gpu);
      input.nodes.push_back(node);
    }
    const int jobs = 1 + pick(pick(5) == 0 ? 8 : 60);
    short_queues += jobs <= 8;
    for (int j = 0; j < jobs; ++j) {
      // Up to one node more than the cluster has.
      const int max_nodes = std::min(node_count + 1, 4);
      PendingJob job =
          Job(absl::StrCat("q", j), pick(4) == 0 ? 90 : 50,
              pick(4) == 0 ? 1 + pick(max_nodes) : 1,
              pick(10) == 0 ? 0 : 1 << pick(4), absl::StrCat("u", pick(4)),
              pick(4) == 0 ? 0 : (1 + pick(600)) * kMinute);
      job.submit_ms = kNow - pick(50) * kHour;
      input.queue.push_back(job);
    }
    input.usage.user_gpu_s["u0"] = pick(1000);
    input.usage.user_gpu_s["u3"] = pick(1000);
    for (int pass = 0; pass < 2; ++pass) {
      input.explain = true;
      const SchedulerDecisions explained = LabPolicy().Schedule(input);
      input.explain = false;
      const SchedulerDecisions quiet = LabPolicy().Schedule(input);
      ASSERT_EQ(Decided(quiet), Decided(explained))
          << "round " << round << " pass " << pass;
      // Node indices are hints: wrong ones are looked up by name.
      SchedulerInput misled = input;
      for (RunningAttempt& r : misled.running) {
        for (NodePlacement& p : r.placements) {
          p.node_index = pick(node_count + 2) - 1;
        }
      }
      ASSERT_EQ(Decided(LabPolicy().Schedule(misled)), Decided(explained))
          << "round " << round << " pass " << pass;
      EXPECT_THAT(quiet.queue, IsEmpty());
      EXPECT_THAT(quiet.reasons, IsEmpty());
      ASSERT_EQ(explained.queue.size(), input.queue.size());
      decided +=
          !explained.placements.empty() + !explained.reservations.empty();
      preempted += !explained.preemptions.empty();
      // The next pass: placements run (with their limits), victims stop.
      for (const Placement& p : explained.placements) {
        int64_t limit = 0;
        for (const PendingJob& job : input.queue) {
          if (job.id == p.job_id) limit = job.time_limit_ms;
        }
        Apply(&input, p, limit);
      }
      for (const Preemption& p : explained.preemptions) {
        for (RunningAttempt& r : input.running) {
          if (r.job_id != p.job_id) continue;
          r.stopping = true;
          r.stop_deadline_ms = input.now_ms + 30 * kSecond;
        }
      }
      input.now_ms += 30 * kSecond;
    }
  }
  // The rounds exercised what they are meant to.
  EXPECT_GT(decided, 200);
  EXPECT_GT(preempted, 20);
  EXPECT_GT(short_queues, 20);
}

}  // namespace
}  // namespace dcvlr
