#include "coordinator/scheduler.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::ElementsAre;

NodeSnapshot Node(std::string name, std::vector<int> free) {
  return {std::move(name), 8, std::move(free)};
}

TEST(FirstFitPolicyTest, PlacesHighPriorityFirstThenBySubmission) {
  SchedulerInput input;
  input.queue = {{"j-1", 50, 1, 1, 2}, {"j-2", 90, 2, 1, 2}, {"j-3", 50, 3, 1, 2}};
  input.nodes = {Node("a", {0, 1, 2, 3})};
  SchedulerDecisions d = FirstFitPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 2u);
  EXPECT_EQ(d.placements[0].job_id, "j-2");
  EXPECT_THAT(d.placements[0].nodes[0].gpus, ElementsAre(0, 1));
  EXPECT_EQ(d.placements[1].job_id, "j-1");
  EXPECT_THAT(d.placements[1].nodes[0].gpus, ElementsAre(2, 3));
  ASSERT_EQ(d.waiting.size(), 1u);
  EXPECT_EQ(d.waiting[0].job_id, "j-3");
}

TEST(FirstFitPolicyTest, GangGoesOnDistinctNodesOrNotAtAll) {
  SchedulerInput input;
  input.queue = {{"j-1", 50, 1, 2, 4}};
  input.nodes = {Node("a", {0, 1, 2, 3, 4, 5, 6, 7}), Node("b", {0, 1, 2})};
  SchedulerDecisions d = FirstFitPolicy().Schedule(input);
  EXPECT_TRUE(d.placements.empty());
  ASSERT_EQ(d.waiting.size(), 1u);
  EXPECT_EQ(d.waiting[0].reason, "waiting for 2 nodes with 4 free GPUs");

  input.nodes[1] = Node("b", {4, 5, 6, 7});
  d = FirstFitPolicy().Schedule(input);
  ASSERT_EQ(d.placements.size(), 1u);
  ASSERT_EQ(d.placements[0].nodes.size(), 2u);
  EXPECT_EQ(d.placements[0].nodes[0].node, "a");
  EXPECT_EQ(d.placements[0].nodes[1].node, "b");
  EXPECT_THAT(d.placements[0].nodes[1].gpus, ElementsAre(4, 5, 6, 7));
}

TEST(FirstFitPolicyTest, CpuJobsNeedNoGpus) {
  SchedulerInput input;
  input.queue = {{"j-1", 50, 1, 1, 0}, {"j-2", 50, 2, 1, 0}};
  input.nodes = {Node("a", {})};
  SchedulerDecisions d = FirstFitPolicy().Schedule(input);
  EXPECT_EQ(d.placements.size(), 2u);
}

}  // namespace
}  // namespace dcvlr
