#include "coordinator/submission.h"

#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class NullChannel : public AgentChannel {
 public:
  void Send(const v1::CoordinatorMessage&) override {}
  void Close() override {}
};

ParsedJobFile Parse(const std::string& yaml) {
  auto file = ParseJobFile("f.yaml", yaml);
  EXPECT_TRUE(file.ok()) << file.status();
  return *std::move(file);
}

v1::Job Stored(const std::string& id, const std::string& name) {
  v1::Job job;
  job.set_id(id);
  job.set_user("alice");
  job.mutable_spec()->set_name(name);
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  return job;
}

class ResolveSpecTest : public ::testing::Test {
 protected:
  absl::Status Resolve(const std::string& yaml, v1::JobSpec* spec) {
    const ParsedJobFile file = Parse(yaml);
    *spec = file.spec;
    const SubmitContext context{jobs_, nodes_, benchmarks_, earlier_, user_};
    return ResolveSpec(file, context, *spec);
  }
  void AddNode(const std::string& name, int gpus) {
    v1::RegisterRequest request;
    request.set_name(name);
    for (int i = 0; i < gpus; ++i) request.add_gpus()->set_index(i);
    nodes_.Register(request, "h", std::make_shared<NullChannel>(), 0);
  }

  JobTable jobs_;
  NodeRegistry nodes_;
  std::string user_ = "alice";
  BenchmarkRegistry benchmarks_ = DefaultBenchmarks();
  std::vector<v1::Job> earlier_;
};

TEST_F(ResolveSpecTest, AfterNamesBecomeIdsAndTheFilesOwnJobsComeFirst) {
  jobs_.Add(Stored("j-3", "prep"));
  jobs_.Add(Stored("j-4", "train"));
  earlier_.push_back(Stored("j-9", "train"));  // an earlier document
  v1::JobSpec spec;
  ASSERT_TRUE(
      Resolve("name: c\nkind: command\nrun: x\nafter: [prep, train, j-4]\n",
              &spec)
          .ok());
  EXPECT_THAT(spec.after(), ElementsAre("j-3", "j-9", "j-4"));
}

TEST_F(ResolveSpecTest, EveryUnknownNameIsReportedAtItsKey) {
  v1::JobSpec spec;
  absl::Status status =
      Resolve("name: c\nkind: command\nrun: x\nafter: [a, b]\n", &spec);
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("f.yaml:4:9: after[0]: no job with id or name 'a'"));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("f.yaml:4:12: after[1]: no job with id or name 'b'"));
}

TEST_F(ResolveSpecTest, AJobTooBigForTheClusterIsRefusedOnlyWhenNodesAreKnown) {
  v1::JobSpec spec;
  const std::string big =
      "name: c\nkind: command\nrun: x\n"
      "resources: {nodes: 2, gpus_per_node: 8}\n";
  EXPECT_TRUE(Resolve(big, &spec).ok());  // no nodes yet: it may fit later
  AddNode("a", 8);
  AddNode("b", 4);
  absl::Status status = Resolve(big, &spec);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("resources.nodes: 2 nodes with 8 GPUs each asked "
                        "for, but the cluster has 1"));
  status = Resolve(
      "name: c\nkind: command\nrun: x\nresources: {gpus_per_node: 16}\n",
      &spec);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("16 GPUs per node asked for, but the largest node "
                        "has 8"));
}

TEST(SubmitLimiterTest, PendingJobsCountTheLiveAndTheInFlight) {
  ClusterConfig config;
  config.max_pending_jobs = 5;
  SubmitLimiter limiter;
  EXPECT_TRUE(limiter.Admit(config, "alice", 3, /*live=*/1, 0).ok());
  EXPECT_EQ(limiter.in_flight("alice"), 3);
  absl::Status refused = limiter.Admit(config, "alice", 2, 1, 0);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("user alice has 4 jobs that have not ended; the "
                        "cluster allows 5"));
  EXPECT_EQ(limiter.in_flight("alice"), 3);  // a refusal takes nothing
  limiter.Finish("alice", 3);
  EXPECT_EQ(limiter.in_flight("alice"), 0);
  EXPECT_TRUE(limiter.Admit(config, "bob", 5, 0, 0).ok());
  // A user's own limit overrides the cluster's.
  config.users["carol"].max_pending_jobs = 0;  // 0: no limit for carol
  EXPECT_TRUE(limiter.Admit(config, "carol", 50, 0, 0).ok());
}

TEST(SubmitLimiterTest, TheBucketRefillsAtTheRateUpToTheBurst) {
  ClusterConfig config;
  config.submit_jobs_per_s = 2;
  config.submit_burst = 4;
  SubmitLimiter limiter;
  EXPECT_TRUE(limiter.Admit(config, "alice", 4, 0, 0).ok());
  absl::Status empty = limiter.Admit(config, "alice", 1, 0, 0);
  EXPECT_EQ(empty.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(empty.message()), HasSubstr("retry in 0.5 s"));
  // Another user has a bucket of their own.
  EXPECT_TRUE(limiter.Admit(config, "bob", 1, 0, 0).ok());
  EXPECT_TRUE(limiter.Admit(config, "alice", 1, 0, 500).ok());
  EXPECT_FALSE(limiter.Admit(config, "alice", 1, 0, 500).ok());
  // A long quiet spell refills no more than the burst.
  EXPECT_TRUE(limiter.Admit(config, "alice", 4, 0, 100000).ok());
  EXPECT_FALSE(limiter.Admit(config, "alice", 1, 0, 100000).ok());
  absl::Status too_big = limiter.Admit(config, "dave", 5, 0, 0);
  EXPECT_THAT(std::string(too_big.message()),
              HasSubstr("a file of 5 jobs is more than the 4 jobs one user "
                        "may submit at once"));
}

}  // namespace
}  // namespace dcvlr
