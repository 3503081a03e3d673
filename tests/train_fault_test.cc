// Training survives faults with the real trainer: an agent killed mid-run
// (the job resumes on another node from its last checkpoint and ends with
// exactly the weights of an uninterrupted run) and a coordinator killed
// mid-run (the same attempt carries on to the end).
#include <signal.h>

#include <filesystem>
#include <map>
#include <regex>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace dcvlr::testing {
namespace {

std::string TrainJob(const std::string& checkpoint_dir) {
  return absl::StrCat(R"(kind: train
resources: {nodes: 1, gpus_per_node: 2}
retry: {max_attempts: 3}
checkpoint_dir: )",
                      checkpoint_dir, R"(
model: {model_name: tiny-vlm}
data:
  train:
    datasets:
      - dataset_name: synthetic_shapes
        dataset_kwargs: {split: train, num_samples: 96, seed: 5}
training:
  learning_rate: 1e-3
  max_steps: 16
  per_device_train_batch_size: 4
  logging_steps: 1
  save_steps: 2
  seed: 3
)");
}

// The weights' hash each rank prints at the end, by rank.
std::map<std::string, std::string> FinalHashes(const std::string& logs) {
  const std::regex hash(R"(rank=(\d) params_fnv64=([0-9a-f]+))");
  std::map<std::string, std::string> hashes;
  for (std::sregex_iterator it(logs.begin(), logs.end(), hash), end; it != end;
       ++it) {
    hashes[(*it)[1]] = (*it)[2];
  }
  return hashes;
}

bool HasCheckpoint(const std::string& dir, int step) {
  return std::filesystem::exists(absl::StrCat(dir, "/step-", step, "/COMMIT"));
}

class TrainFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(BinDir() + "/dcvlr-train")) {
      GTEST_SKIP() << "dcvlr-train is not built (DCVLR_WORKER=OFF)";
    }
  }
};

TEST_F(TrainFaultTest, KilledAgentResumesElsewhereWithIdenticalWeights) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 2);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));

  // The reference: the same run, never interrupted.
  const std::string reference =
      cluster.Submit("reference.yaml", TrainJob(cluster.dir() + "/ckpt-ref"));
  ASSERT_EQ(cluster.AwaitEnd(reference, std::chrono::seconds(300)).state(),
            v1::JOB_STATE_SUCCEEDED);
  std::map<std::string, std::string> expected =
      FinalHashes(cluster.Ctl({"logs", reference}).out);
  ASSERT_EQ(expected.size(), 2u);

  const std::string shared = cluster.dir() + "/ckpt-shared";
  const std::string id = cluster.Submit("victim.yaml", TrainJob(shared));
  cluster.StartAgent("n2", 2);
  ASSERT_TRUE(cluster.AwaitReadyNodes(2));
  ASSERT_TRUE(Eventually([&] { return HasCheckpoint(shared, 4); },
                         std::chrono::seconds(300)));
  ASSERT_NE(cluster.GetJob(id).state(), v1::JOB_STATE_SUCCEEDED)
      << "the run ended before the kill; the test proves nothing";
  cluster.KillAgent("n1", SIGKILL);

  v1::Job job = cluster.AwaitEnd(id, std::chrono::seconds(300));
  const std::string logs = cluster.Ctl({"logs", id}).out;
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason() << logs;
  ASSERT_EQ(job.attempts_size(), 2);
  EXPECT_EQ(job.attempts(1).placements(0).node(), "n2");
  EXPECT_THAT(logs, ::testing::HasSubstr("resum"));
  EXPECT_EQ(FinalHashes(logs), expected)
      << "the resumed run's weights differ from the uninterrupted run's";
}

TEST_F(TrainFaultTest, CoordinatorKilledMidRunLeavesTheAttemptUntouched) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 2);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string ckpt = cluster.dir() + "/ckpt";
  const std::string id = cluster.Submit("run.yaml", TrainJob(ckpt));
  ASSERT_TRUE(Eventually([&] { return HasCheckpoint(ckpt, 2); },
                         std::chrono::seconds(300)));
  cluster.KillCoordinator();
  cluster.StartCoordinator();
  v1::Job job = cluster.AwaitEnd(id, std::chrono::seconds(300));
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason();
  EXPECT_EQ(job.attempt(), 1) << "the coordinator's restart restarted the run";
  const std::string logs = cluster.Ctl({"logs", id}).out;
  EXPECT_THAT(logs, ::testing::HasSubstr("done step=16"));
  EXPECT_THAT(logs, ::testing::HasSubstr("step=1/16"))
      << "log lines from before the outage are missing";
}

}  // namespace
}  // namespace dcvlr::testing
