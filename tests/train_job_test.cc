// kind: train jobs through the whole system: dcvlrctl submits, the
// coordinator places two ranks, the agent runs dcvlr-train with torchrun's
// environment, and the trainer's checkpoints land in DCVLR_CHECKPOINT_DIR.
#include <filesystem>
#include <map>
#include <regex>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster.h"

namespace dcvlr::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kTinyTrain[] = R"(name: tiny-train
kind: train
resources: {nodes: 1, gpus_per_node: 2}
retry: {max_attempts: 1}
model: {model_name: tiny-vlm}
data:
  train:
    datasets:
      - dataset_name: synthetic_shapes
        dataset_kwargs: {split: train, num_samples: 64, seed: 3}
  validation:
    datasets:
      - dataset_name: synthetic_shapes
        dataset_kwargs: {split: test, num_samples: 16, seed: 3}
training:
  learning_rate: 1e-3
  max_steps: 4
  per_device_train_batch_size: 4
  logging_steps: 1
  save_steps: 2
  eval_steps: 4
  seed: 1
)";

TEST(TrainJobTest, TwoRankTrainJobRunsToTheEndAndCheckpoints) {
  if (!std::filesystem::exists(BinDir() + "/dcvlr-train")) {
    GTEST_SKIP() << "dcvlr-train is not built (DCVLR_WORKER=OFF)";
  }
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 2);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string id = cluster.Submit("train.yaml", kTinyTrain);
  v1::Job job = cluster.AwaitEnd(id, std::chrono::seconds(300));
  CommandResult logs = cluster.Ctl({"logs", id});
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason() << "\n"
                                                  << logs.out;
  EXPECT_THAT(logs.out, HasSubstr("rank=0 done step=4"));
  // Both ranks ran and ended with the same weights.
  const std::regex hash(R"(rank=(\d) params_fnv64=([0-9a-f]+))");
  std::map<std::string, std::string> hashes;
  for (std::sregex_iterator it(logs.out.begin(), logs.out.end(), hash), end;
       it != end; ++it) {
    hashes[(*it)[1]] = (*it)[2];
  }
  ASSERT_EQ(hashes.size(), 2u) << logs.out;
  EXPECT_EQ(hashes["0"], hashes["1"]);
  const std::filesystem::path checkpoints =
      cluster.dir() + "/work-n1/jobs/" + id + "/checkpoints";
  bool found = false;
  for (const auto& entry : std::filesystem::directory_iterator(checkpoints)) {
    found |= entry.path().filename().string().rfind("step-", 0) == 0;
  }
  EXPECT_TRUE(found) << "no step-N checkpoint in " << checkpoints;

  // The trainer's metrics lines reached the coordinator's history...
  CommandResult metrics = cluster.Ctl({"metrics", id, "-o", "json"});
  ASSERT_EQ(metrics.exit_code, 0) << metrics.err;
  auto history = nlohmann::json::parse(metrics.out);
  const auto& loss = history["series"]["loss"]["points"];
  ASSERT_EQ(loss.size(), 4u) << metrics.out;  // logging_steps: 1
  EXPECT_EQ(loss[3]["step"], 4);
  EXPECT_TRUE(history["series"].contains("tokens_per_s")) << metrics.out;
  // ...and watch takes max_steps from the training config.
  CommandResult watch = cluster.Ctl({"watch", id});
  EXPECT_EQ(watch.exit_code, 0) << watch.err;
  EXPECT_THAT(watch.out, HasSubstr("step 4/4 [")) << watch.out;
}

}  // namespace
}  // namespace dcvlr::testing
