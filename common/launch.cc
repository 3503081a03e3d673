#include "common/launch.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/job_file.h"
#include "common/process_contract.h"

namespace dcvlr {
namespace {

// The variables every process of the node gets (common/process_contract.h),
// less the per-rank ones.
std::map<std::string, std::string> NodeEnvironment(const v1::JobSpec& spec,
                                                   const NodeContext& node) {
  std::map<std::string, std::string> env(spec.env().begin(), spec.env().end());
  const int gpus_per_node = static_cast<int>(node.gpus.size());
  std::vector<std::string> gpus;
  for (int gpu : node.gpus) gpus.push_back(std::to_string(gpu));
  env[contract::kNodeRank] = std::to_string(node.node_rank);
  env[contract::kGroupRank] = std::to_string(node.node_rank);
  env[contract::kMasterAddr] = node.master_addr;
  env[contract::kMasterPort] = std::to_string(node.master_port);
  env[contract::kCudaVisibleDevices] = absl::StrJoin(gpus, ",");
  env[contract::kJobId] = node.job_id;
  env[contract::kJobName] = spec.name();
  env[contract::kUser] = node.user;
  env[contract::kAttempt] = std::to_string(node.attempt);
  env[contract::kNode] = node.node;
  env[contract::kNumNodes] = std::to_string(node.num_nodes);
  env[contract::kGpusPerNode] = std::to_string(gpus_per_node);
  env[contract::kAgentDir] = node.agent_dir;
  env[contract::kCheckpointDir] = node.checkpoint_dir;
  env[contract::kOutputDir] = node.output_dir;
  env[contract::kMetricsFile] =
      absl::StrCat(node.attempt_dir, "/metrics.jsonl");
  env[contract::kCacheDir] = node.cache_dir;
  // The names Oumi's launcher scripts read (it exports them on SkyPilot).
  env[contract::kOumiNumNodes] = std::to_string(node.num_nodes);
  env[contract::kOumiMasterAddr] = node.master_addr;
  env[contract::kOumiTotalNumGpus] =
      std::to_string(node.num_nodes * gpus_per_node);
  return env;
}

}  // namespace

std::string ShellQuote(const std::string& word) {
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::vector<std::string> OumiTorchrunArgv(const v1::JobSpec& spec,
                                          const NodeContext& node) {
  // The underscore spellings: every torchrun takes them (1.x knows no
  // --node-rank).
  const int procs = std::max(1, spec.resources().procs_per_node());
  return {node.torchrun, "--nnodes", std::to_string(node.num_nodes),
          "--node_rank", std::to_string(node.node_rank), "--nproc_per_node",
          std::to_string(procs), "--master_addr", node.master_addr,
          "--master_port", std::to_string(node.master_port), "-m", "oumi",
          "train", "-c",
          absl::StrCat(node.attempt_dir, "/", spec.attached_file_name()),
          // Every attempt writes and resumes in the job's checkpoint dir.
          "--training.output_dir", node.checkpoint_dir};
}

absl::StatusOr<NodePlan> PlanNode(const v1::JobSpec& spec,
                                  const NodeContext& node) {
  NodePlan plan;
  if (!spec.attached_file_name().empty()) {
    plan.files.push_back(
        {absl::StrCat(node.attempt_dir, "/", spec.attached_file_name()),
         spec.attached_file()});
  }
  const std::map<std::string, std::string> base = NodeEnvironment(spec, node);
  const int procs = std::max(1, spec.resources().procs_per_node());

  if (spec.launcher() == v1::LAUNCHER_TORCHRUN_OUMI) {
    // One torchrun per node; it starts `procs` workers and gives each its
    // RANK and LOCAL_RANK.
    PlannedProcess process;
    process.rank = node.node_rank;
    process.argv = OumiTorchrunArgv(spec, node);
    process.env = base;
    process.env[contract::kWorldSize] = std::to_string(procs * node.num_nodes);
    process.env[contract::kLocalWorldSize] = std::to_string(procs);
    process.log_name = absl::StrCat("rank-", node.node_rank, ".log");
    plan.processes.push_back(std::move(process));
    return plan;
  }

  std::vector<std::string> argv;
  switch (spec.kind()) {
    case v1::JOB_KIND_COMMAND:
      if (!spec.run().empty()) {
        const std::string script = absl::StrCat(node.attempt_dir, "/run.sh");
        plan.files.push_back({script, spec.run()});
        argv = {"/bin/bash", script};
      } else {
        argv.assign(spec.command().begin(), spec.command().end());
      }
      break;
    case v1::JOB_KIND_TRAIN:
    case v1::JOB_KIND_EVAL: {
      const std::string config = absl::StrCat(node.attempt_dir, "/config.json");
      plan.files.push_back({config, spec.worker_config_json()});
      argv = {
          spec.kind() == v1::JOB_KIND_TRAIN ? node.trainer_bin : node.eval_bin,
          "--config", config};
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("job kind ", spec.kind(), " cannot be launched"));
  }
  for (int local = 0; local < procs; ++local) {
    PlannedProcess process;
    process.rank = node.node_rank * procs + local;
    process.argv = argv;
    process.env = base;
    process.env[contract::kRank] = std::to_string(process.rank);
    process.env[contract::kLocalRank] = std::to_string(local);
    process.env[contract::kWorldSize] = std::to_string(procs * node.num_nodes);
    process.env[contract::kLocalWorldSize] = std::to_string(procs);
    process.log_name = absl::StrCat("rank-", process.rank, ".log");
    plan.processes.push_back(std::move(process));
  }
  return plan;
}

}  // namespace dcvlr
