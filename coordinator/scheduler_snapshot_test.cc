#include "coordinator/scheduler_snapshot.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::ElementsAre;

class NullChannel : public AgentChannel {
 public:
  void Send(const v1::CoordinatorMessage&) override {}
  void Close() override {}
};

class SchedulerSnapshotTest : public ::testing::Test {
 protected:
  v1::Job& Add(int64_t seq, v1::JobState state, int gpus = 1) {
    v1::Job job;
    job.set_id(absl::StrCat("j-", seq));
    job.mutable_spec()->set_name(absl::StrCat("job", seq));
    job.mutable_spec()->mutable_resources()->set_nodes(1);
    job.mutable_spec()->mutable_resources()->set_gpus_per_node(gpus);
    job.set_user("alice");
    job.set_state(state);
    job.set_submit_time_ms(seq);
    jobs_.Add(job);
    return *jobs_.Find(job.id());
  }
  NodeEntry& Node(const std::string& name, int gpus,
                  std::vector<int> domains = {}) {
    v1::RegisterRequest request;
    request.set_name(name);
    for (int i = 0; i < gpus; ++i) {
      v1::Gpu* gpu = request.add_gpus();
      gpu->set_index(i);
      gpu->set_domain(domains.empty() ? -1 : domains[i]);
    }
    return nodes_.Register(request, "h", std::make_shared<NullChannel>(), 0);
  }
  SchedulerInput Build(int64_t now = 1000) {
    return BuildSchedulerInput(now, config_, Usage{}, jobs_, nodes_);
  }

  JobTable jobs_;
  NodeRegistry nodes_;
  std::shared_ptr<const ClusterConfig> config_ =
      std::make_shared<ClusterConfig>();
};

std::vector<std::string> QueueIds(const SchedulerInput& input) {
  std::vector<std::string> out;
  for (const PendingJob& job : input.queue) out.push_back(job.id);
  return out;
}

TEST_F(SchedulerSnapshotTest, OnlyJobsThatMayStartNowAreQueued) {
  Node("n1", 2);
  Add(1, v1::JOB_STATE_PENDING);
  v1::Job& backing_off = Add(2, v1::JOB_STATE_PENDING);
  backing_off.set_not_before_ms(5000);
  v1::Job& dep_done = Add(3, v1::JOB_STATE_SUCCEEDED);
  v1::Job& waits = Add(4, v1::JOB_STATE_PENDING);
  waits.mutable_spec()->add_after("j-5");
  Add(5, v1::JOB_STATE_RUNNING)
      .add_attempts()
      ->add_placements()
      ->set_node("n1");
  v1::Job& ready = Add(6, v1::JOB_STATE_PENDING);
  ready.mutable_spec()->add_after(dep_done.id());
  Add(7, v1::JOB_STATE_FAILED);

  EXPECT_THAT(QueueIds(Build()), ElementsAre("j-1", "j-6"));
  EXPECT_THAT(QueueIds(Build(5000)), ElementsAre("j-1", "j-2", "j-6"));
}

TEST_F(SchedulerSnapshotTest, RunningAttemptsKeepOnlyTheNodesStillRunning) {
  Node("a", 2);
  Node("b", 2);
  v1::Job& job = Add(1, v1::JOB_STATE_RUNNING);
  job.mutable_spec()->set_grace_s(7);
  v1::Attempt* attempt = job.add_attempts();
  attempt->set_number(2);
  attempt->set_scheduled_ms(100);
  attempt->set_stop_ms(900);
  for (const char* node : {"a", "b"}) {
    v1::Placement* p = attempt->add_placements();
    p->set_node(node);
    p->add_gpus(1);
  }
  attempt->add_exited_nodes("a");
  const SchedulerInput input = Build();
  ASSERT_EQ(input.running.size(), 1u);
  const RunningAttempt& running = input.running[0];
  EXPECT_EQ(running.attempt, 2);
  ASSERT_EQ(running.placements.size(), 1u);
  EXPECT_EQ(running.placements[0].node, "b");
  EXPECT_TRUE(running.stopping);
  EXPECT_EQ(running.stop_deadline_ms, 900 + 7000);
  EXPECT_TRUE(input.nodes.empty());  // an empty queue needs no nodes
}

TEST_F(SchedulerSnapshotTest, NodesOfferWhatNoAttemptHolds) {
  Node("a", 4, {0, 0, 1, 1});
  Node("b", 2).info.set_drained(true);
  NodeEntry& lost = Node("c", 2);
  nodes_.MarkLost(lost);
  nodes_.Hold("a", {"j-9", 1}, {1, 2});
  Add(1, v1::JOB_STATE_PENDING);
  const SchedulerInput input = Build();
  ASSERT_EQ(input.nodes.size(), 1u);
  EXPECT_EQ(input.nodes[0].name, "a");
  EXPECT_EQ(input.nodes[0].total_gpus, 4);
  EXPECT_THAT(input.nodes[0].free_gpus, ElementsAre(0, 3));
  EXPECT_THAT(input.nodes[0].gpu_domain, ElementsAre(0, 0, 1, 1));
}

TEST_F(SchedulerSnapshotTest, TheQueueViewGivesPendingJobsTheirReasons) {
  Node("a", 1);
  nodes_.Hold("a", {"j-1", 1}, {0});
  Add(1, v1::JOB_STATE_RUNNING).add_attempts()->set_number(1);
  Add(2, v1::JOB_STATE_PENDING);
  Add(3, v1::JOB_STATE_PENDING);
  SchedulerInput input = Build();
  input.explain = true;
  const SchedulerDecisions decisions = FirstFitPolicy().Schedule(input);
  const v1::GetQueueResponse view = QueueView(input, decisions, jobs_, nodes_);
  ASSERT_EQ(view.entries_size(), 2);
  EXPECT_EQ(view.entries(0).job_id(), "j-2");
  EXPECT_EQ(view.entries(0).name(), "job2");
  EXPECT_FALSE(view.entries(0).reason().empty());
  EXPECT_EQ(jobs_.Find("j-2")->reason(), view.entries(0).reason());
  ASSERT_EQ(view.users_size(), 1);
  EXPECT_EQ(view.users(0).user(), "alice");
  EXPECT_EQ(view.users(0).gpus_in_use(), 1);
  EXPECT_EQ(view.as_of_ms(), 1000);
}

}  // namespace
}  // namespace dcvlr
