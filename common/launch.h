// What one node runs for one attempt of a job: its processes (argv and the
// environment of the process contract, common/process_contract.h) and the
// files written before they start. The agent launches exactly this;
// `dcvlrctl render` prints it for every node of a job file, so what a user
// sees is what will run.
#ifndef DCVLR_COMMON_LAUNCH_H_
#define DCVLR_COMMON_LAUNCH_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dcvlr/v1/job.pb.h"

namespace dcvlr {

// Where and as what an attempt runs on one node.
struct NodeContext {
  std::string job_id;
  int attempt = 1;
  std::string user;
  std::string node;  // the agent's node name
  int node_rank = 0;
  int num_nodes = 1;
  std::string master_addr;
  int master_port = 0;
  std::vector<int> gpus;  // indices on this node
  std::string agent_dir;
  std::string attempt_dir;
  std::string output_dir;
  std::string checkpoint_dir;
  std::string cache_dir;
  // Programs.
  std::string trainer_bin = "dcvlr-train";
  std::string eval_bin = "dcvlr-eval";
  std::string torchrun = "torchrun";
};

struct PlannedFile {
  std::string path;
  std::string content;
};

struct PlannedProcess {
  int rank = 0;  // global rank (node rank for one-per-node launchers)
  std::vector<std::string> argv;
  // The contract's variables and the job's env; the agent adds its own
  // environment (PATH, HOME, ...) underneath.
  std::map<std::string, std::string> env;
  std::string log_name;  // "rank-R.log"
};

struct NodePlan {
  std::vector<PlannedFile> files;
  std::vector<PlannedProcess> processes;
};

// Fails only for a spec no validated job file produces (unknown kind).
absl::StatusOr<NodePlan> PlanNode(const v1::JobSpec& spec,
                                  const NodeContext& node);

// `word` single-quoted for bash, whatever it holds.
std::string ShellQuote(const std::string& word);

// The torchrun command line of an LAUNCHER_TORCHRUN_OUMI job on `node`.
std::vector<std::string> OumiTorchrunArgv(const v1::JobSpec& spec,
                                          const NodeContext& node);

}  // namespace dcvlr

#endif  // DCVLR_COMMON_LAUNCH_H_
