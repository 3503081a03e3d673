// The process contract: what an agent promises the processes it starts (the
// environment below, a working directory, SIGTERM then SIGKILL on a stop)
// and what it reads back (the exit code). The one definition, shared by the
// coordinator, the agent and the worker programs; dependency-free so that
// dcvlr-train and dcvlr-eval, which build without the control plane on a
// GPU machine, include it too.
#ifndef DCVLR_COMMON_PROCESS_CONTRACT_H_
#define DCVLR_COMMON_PROCESS_CONTRACT_H_

#include <array>
#include <cstdlib>
#include <string>
#include <string_view>

namespace dcvlr::contract {

// Exit codes. 0 succeeds; 75 (EX_TEMPFAIL) asks to be requeued (a worker
// program stopped by SIGTERM after checkpointing); anything else is a
// failure, counted against the job's retry.on_failure. The worker programs
// also distinguish a bad config (2) from other errors (1).
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitBadConfig = 2;
inline constexpr int kExitRequeue = 75;

// torchrun's variables, set for every process.
inline constexpr char kRank[] = "RANK";
inline constexpr char kLocalRank[] = "LOCAL_RANK";
inline constexpr char kWorldSize[] = "WORLD_SIZE";
inline constexpr char kLocalWorldSize[] = "LOCAL_WORLD_SIZE";
inline constexpr char kNodeRank[] = "NODE_RANK";
inline constexpr char kGroupRank[] = "GROUP_RANK";
inline constexpr char kMasterAddr[] = "MASTER_ADDR";
inline constexpr char kMasterPort[] = "MASTER_PORT";
inline constexpr char kCudaVisibleDevices[] = "CUDA_VISIBLE_DEVICES";

// dcvlr's own; every variable named DCVLR_* belongs to the contract.
inline constexpr char kPrefix[] = "DCVLR_";
inline constexpr char kJobId[] = "DCVLR_JOB_ID";
inline constexpr char kJobName[] = "DCVLR_JOB_NAME";
inline constexpr char kUser[] = "DCVLR_USER";
inline constexpr char kAttempt[] = "DCVLR_ATTEMPT";
inline constexpr char kNode[] = "DCVLR_NODE";
inline constexpr char kNumNodes[] = "DCVLR_NUM_NODES";
inline constexpr char kGpusPerNode[] = "DCVLR_GPUS_PER_NODE";
inline constexpr char kAgentDir[] = "DCVLR_AGENT_DIR";
inline constexpr char kCheckpointDir[] = "DCVLR_CHECKPOINT_DIR";
inline constexpr char kOutputDir[] = "DCVLR_OUTPUT_DIR";  // also the cwd
inline constexpr char kMetricsFile[] = "DCVLR_METRICS_FILE";
inline constexpr char kCacheDir[] = "DCVLR_CACHE_DIR";

// Oumi's launcher scripts read these (it exports them on SkyPilot).
inline constexpr char kOumiNumNodes[] = "OUMI_NUM_NODES";
inline constexpr char kOumiMasterAddr[] = "OUMI_MASTER_ADDR";
inline constexpr char kOumiTotalNumGpus[] = "OUMI_TOTAL_NUM_GPUS";

inline constexpr std::array<std::string_view, 9> kTorchrunVariables = {
    kRank,      kLocalRank,  kWorldSize,  kLocalWorldSize,    kNodeRank,
    kGroupRank, kMasterAddr, kMasterPort, kCudaVisibleDevices};

// Whether the contract sets `name`: a job's env: may not override it, and
// the agent does not pass its own value on.
inline bool IsContractVariable(std::string_view name) {
  for (std::string_view v : kTorchrunVariables)
    if (name == v) return true;
  return name.substr(0, sizeof(kPrefix) - 1) == kPrefix;
}

// A variable's value, or "" when unset.
inline std::string GetEnv(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// Models dcvlr-train has a preset for: an Oumi config naming one runs
// natively, any other under torchrun -m oumi.
inline constexpr std::array<std::string_view, 3> kNativeModels = {
    "tiny-vlm", "qwen2-vl-0.5b", "qwen2-vl-2b"};

inline bool IsNativeModel(std::string_view name) {
  for (std::string_view m : kNativeModels)
    if (name == m) return true;
  return false;
}

}  // namespace dcvlr::contract

#endif  // DCVLR_COMMON_PROCESS_CONTRACT_H_
