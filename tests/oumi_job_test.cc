// An Oumi training config for a model the native trainer does not run goes
// through the whole system as `torchrun ... -m oumi train -c FILE` on every
// node: a real torchrun (Debian's python3-torch, through
// tests/torchrun_compat.py, which fixes the one bug that keeps it from
// starting on Python 3.11) starts the per-GPU workers and they rendezvous
// across two agents. Oumi itself is not installed here, so `-m oumi` finds
// tests/fake_oumi, which joins a Gloo process group and records what it was
// given.
#include <filesystem>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster.h"
#include "yaml-cpp/yaml.h"

namespace dcvlr::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(OumiJobTest, TwoNodeOumiConfigRunsUnderTorchrunOnEveryNode) {
  if (!fs::exists("/usr/bin/torchrun")) {
    GTEST_SKIP() << "no torchrun (python3-torch)";
  }
  const std::string torchrun =
      std::string(DCVLR_SOURCE_DIR) + "/tests/torchrun_compat.py";
  Cluster cluster;
  const std::string root = cluster.dir() + "/shared-checkpoints";
  cluster.StartCoordinator({"--checkpoint-root", root});
  for (const char* node : {"n1", "n2"}) {
    cluster.StartAgent(node, 2, {"--torchrun", torchrun});
  }
  ASSERT_TRUE(cluster.AwaitReadyNodes(2));

  const std::string fake_oumi =
      std::string(DCVLR_SOURCE_DIR) + "/tests/fake_oumi";
  const std::string file =
      cluster.WriteFile("qwen.yaml",
                        "dcvlr:\n"
                        "  retry: {max_attempts: 1}\n"
                        "  env: {PYTHONPATH: " +
                            fake_oumi +
                            ", OMP_NUM_THREADS: \"1\"}\n"
                            "model:\n"
                            "  model_name: \"Qwen/Qwen2.5-VL-7B-Instruct\"\n"
                            "  torch_dtype_str: \"bfloat16\"\n"
                            "training:\n"
                            "  output_dir: output/qwen\n"
                            "  save_steps: 0\n");
  CommandResult submit = cluster.Ctl(
      {"submit", file, "--nodes", "2", "--gpus-per-node", "2", "-o", "json"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  // The starter kit's save_steps: 0 cannot resume, and says so.
  EXPECT_THAT(submit.err,
              HasSubstr("training.save_steps: 0 saves no checkpoint"));
  const std::string id = nlohmann::json::parse(submit.out)["id"];

  v1::Job job = cluster.AwaitEnd(id, std::chrono::seconds(240));
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED)
      << job.reason() << "\n"
      << cluster.Ctl({"logs", id}).out;
  ASSERT_EQ(job.attempts(0).placements_size(), 2);

  // Four workers, two per node, in one process group.
  const fs::path checkpoints = fs::path(root) / id;
  std::set<int> ranks;
  for (int rank = 0; rank < 4; ++rank) {
    const nlohmann::json record = nlohmann::json::parse(
        ReadAll(checkpoints / ("rank-" + std::to_string(rank) + ".json")));
    const nlohmann::json& env = record["env"];
    ranks.insert(std::stoi(env["RANK"].get<std::string>()));
    EXPECT_EQ(env["WORLD_SIZE"], "4");
    EXPECT_EQ(env["LOCAL_WORLD_SIZE"], "2");
    EXPECT_EQ(env["LOCAL_RANK"], std::to_string(rank % 2));
    EXPECT_EQ(env["NODE_RANK"], std::to_string(rank / 2));
    EXPECT_EQ(env["DCVLR_JOB_ID"], id);
    EXPECT_EQ(env["DCVLR_CHECKPOINT_DIR"], checkpoints.string());
    EXPECT_EQ(record["rank_sum"], 0 + 1 + 2 + 3);
    // oumi train -c <the attempt's copy of the config>, writing to the
    // job's checkpoint dir.
    const auto argv = record["argv"].get<std::vector<std::string>>();
    ASSERT_EQ(argv.size(), 5u);
    EXPECT_EQ(argv[0], "train");
    EXPECT_EQ(argv[1], "-c");
    EXPECT_THAT(argv[2],
                HasSubstr("/jobs/" + id + "/attempt-1/oumi_config.yaml"));
    EXPECT_THAT(argv, ::testing::Contains("--training.output_dir"));
    EXPECT_EQ(argv[4], checkpoints.string());
    // The config Oumi reads is the submitted one without the dcvlr section.
    YAML::Node config = YAML::Load(record["config"].get<std::string>());
    EXPECT_FALSE(config["dcvlr"]);
    EXPECT_EQ(config["model"]["model_name"].as<std::string>(),
              "Qwen/Qwen2.5-VL-7B-Instruct");
    EXPECT_EQ(config["training"]["save_steps"].as<int>(), 0);
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2, 3}));
}

}  // namespace
}  // namespace dcvlr::testing
