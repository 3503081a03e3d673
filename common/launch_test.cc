#include "common/launch.h"

#include <string>

#include "common/job_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Pair;

constexpr char kOumiConfig[] =
    "model: {model_name: Qwen/Qwen2.5-VL-7B-Instruct}\n"
    "training: {save_steps: 100, try_resume_from_last_checkpoint: true}\n";

NodeContext Node(int rank, int num_nodes, int gpus) {
  NodeContext node;
  node.job_id = "j-7";
  node.attempt = 2;
  node.user = "ada";
  node.node = rank == 0 ? "gpu-a" : "gpu-b";
  node.node_rank = rank;
  node.num_nodes = num_nodes;
  node.master_addr = "10.0.0.1";
  node.master_port = 29411;
  for (int g = 0; g < gpus; ++g) node.gpus.push_back(g);
  node.agent_dir = "/var/lib/dcvlr";
  node.attempt_dir = "/var/lib/dcvlr/jobs/j-7/attempt-2";
  node.output_dir = "/var/lib/dcvlr/jobs/j-7/output";
  node.checkpoint_dir = "/shared/ckpt/j-7";
  node.cache_dir = "/var/lib/dcvlr/cache";
  node.torchrun = "/opt/venv/bin/torchrun";
  return node;
}

v1::JobSpec OumiSpec(int nodes, int gpus) {
  JobFileOptions options;
  options.nodes = nodes;
  options.gpus_per_node = gpus;
  auto parsed = ParseJobFile("qwen.yaml", kOumiConfig, options);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed->spec;
}

TEST(LaunchTest, OumiConfigOnOneNode) {
  const v1::JobSpec spec = OumiSpec(1, 8);
  auto plan = PlanNode(spec, Node(0, 1, 8));
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->files.size(), 1u);
  EXPECT_EQ(plan->files[0].path,
            "/var/lib/dcvlr/jobs/j-7/attempt-2/oumi_config.yaml");
  EXPECT_EQ(plan->files[0].content, spec.attached_file());
  ASSERT_EQ(plan->processes.size(), 1u);  // torchrun starts the 8 workers
  const PlannedProcess& p = plan->processes[0];
  EXPECT_THAT(
      p.argv,
      ElementsAre("/opt/venv/bin/torchrun", "--nnodes", "1", "--node_rank", "0",
                  "--nproc_per_node", "8", "--master_addr", "10.0.0.1",
                  "--master_port", "29411", "-m", "oumi", "train", "-c",
                  "/var/lib/dcvlr/jobs/j-7/attempt-2/oumi_config.yaml",
                  "--training.output_dir", "/shared/ckpt/j-7"));
  EXPECT_THAT(p.env, ElementsAreArray(std::map<std::string, std::string>{
                         {"CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7"},
                         {"DCVLR_AGENT_DIR", "/var/lib/dcvlr"},
                         {"DCVLR_ATTEMPT", "2"},
                         {"DCVLR_CACHE_DIR", "/var/lib/dcvlr/cache"},
                         {"DCVLR_CHECKPOINT_DIR", "/shared/ckpt/j-7"},
                         {"DCVLR_GPUS_PER_NODE", "8"},
                         {"DCVLR_JOB_ID", "j-7"},
                         {"DCVLR_JOB_NAME", "qwen"},
                         {"DCVLR_METRICS_FILE",
                          "/var/lib/dcvlr/jobs/j-7/attempt-2/metrics.jsonl"},
                         {"DCVLR_NODE", "gpu-a"},
                         {"DCVLR_NUM_NODES", "1"},
                         {"DCVLR_OUTPUT_DIR", "/var/lib/dcvlr/jobs/j-7/output"},
                         {"DCVLR_USER", "ada"},
                         {"GROUP_RANK", "0"},
                         {"LOCAL_WORLD_SIZE", "8"},
                         {"MASTER_ADDR", "10.0.0.1"},
                         {"MASTER_PORT", "29411"},
                         {"NODE_RANK", "0"},
                         {"OUMI_MASTER_ADDR", "10.0.0.1"},
                         {"OUMI_NUM_NODES", "1"},
                         {"OUMI_TOTAL_NUM_GPUS", "8"},
                         {"WORLD_SIZE", "8"},
                     }));
  // torchrun gives each worker its own RANK and LOCAL_RANK.
  EXPECT_EQ(p.env.count("RANK"), 0u);
  EXPECT_EQ(p.env.count("LOCAL_RANK"), 0u);
}

TEST(LaunchTest, OumiConfigOnTwoNodes) {
  const v1::JobSpec spec = OumiSpec(2, 8);
  for (int rank : {0, 1}) {
    auto plan = PlanNode(spec, Node(rank, 2, 8));
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_EQ(plan->processes.size(), 1u);
    const PlannedProcess& p = plan->processes[0];
    EXPECT_EQ(p.rank, rank);
    EXPECT_EQ(p.log_name, "rank-" + std::to_string(rank) + ".log");
    EXPECT_THAT(
        p.argv,
        ElementsAre("/opt/venv/bin/torchrun", "--nnodes", "2", "--node_rank",
                    std::to_string(rank), "--nproc_per_node", "8",
                    "--master_addr", "10.0.0.1", "--master_port", "29411", "-m",
                    "oumi", "train", "-c",
                    "/var/lib/dcvlr/jobs/j-7/attempt-2/"
                    "oumi_config.yaml",
                    "--training.output_dir", "/shared/ckpt/j-7"));
    EXPECT_EQ(p.env.at("NODE_RANK"), std::to_string(rank));
    EXPECT_EQ(p.env.at("GROUP_RANK"), std::to_string(rank));
    EXPECT_EQ(p.env.at("WORLD_SIZE"), "16");
    EXPECT_EQ(p.env.at("LOCAL_WORLD_SIZE"), "8");
    EXPECT_EQ(p.env.at("MASTER_ADDR"), "10.0.0.1");
    EXPECT_EQ(p.env.at("MASTER_PORT"), "29411");
    EXPECT_EQ(p.env.at("OUMI_NUM_NODES"), "2");
    EXPECT_EQ(p.env.at("OUMI_TOTAL_NUM_GPUS"), "16");
    EXPECT_EQ(p.env.at("DCVLR_NODE"), rank == 0 ? "gpu-a" : "gpu-b");
  }
}

TEST(LaunchTest, NativeTrainerGetsOneProcessPerGpu) {
  auto parsed =
      ParseJobFile("t.yaml",
                   "kind: train\nresources: {nodes: 2, gpus_per_node: 2}\n"
                   "env: {OMP_NUM_THREADS: \"1\"}\ntraining: {max_steps: 5}\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  NodeContext node = Node(1, 2, 2);
  node.trainer_bin = "/usr/bin/dcvlr-train";
  auto plan = PlanNode(parsed->spec, node);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->files.size(), 1u);
  EXPECT_EQ(plan->files[0].path,
            "/var/lib/dcvlr/jobs/j-7/attempt-2/config.json");
  EXPECT_EQ(plan->files[0].content, parsed->spec.worker_config_json());
  ASSERT_EQ(plan->processes.size(), 2u);
  for (int local = 0; local < 2; ++local) {
    const PlannedProcess& p = plan->processes[local];
    EXPECT_EQ(p.rank, 2 + local);
    EXPECT_THAT(p.argv, ElementsAre("/usr/bin/dcvlr-train", "--config",
                                    plan->files[0].path));
    EXPECT_EQ(p.env.at("RANK"), std::to_string(2 + local));
    EXPECT_EQ(p.env.at("LOCAL_RANK"), std::to_string(local));
    EXPECT_EQ(p.env.at("WORLD_SIZE"), "4");
    EXPECT_EQ(p.env.at("OMP_NUM_THREADS"), "1");
  }
}

TEST(LaunchTest, ScriptsAreWrittenAndRunWithBash) {
  auto parsed = ParseJobFile("s.yaml", "kind: command\nrun: echo $RANK\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto plan = PlanNode(parsed->spec, Node(0, 1, 0));
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->files.size(), 1u);
  EXPECT_EQ(plan->files[0].content, "echo $RANK");
  EXPECT_THAT(plan->processes[0].argv,
              ElementsAre("/bin/bash", plan->files[0].path));
  EXPECT_EQ(plan->processes[0].env.at("CUDA_VISIBLE_DEVICES"), "");
}

}  // namespace
}  // namespace dcvlr
