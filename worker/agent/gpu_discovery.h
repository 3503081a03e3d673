// Finds the machine's GPUs through NVML, loaded at run time with dlopen so
// that the agent builds and runs on machines without the NVIDIA driver.
#ifndef DCVLR_WORKER_AGENT_GPU_DISCOVERY_H_
#define DCVLR_WORKER_AGENT_GPU_DISCOVERY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dcvlr/v1/client.pb.h"

namespace dcvlr {

// The GPUs NVML reports, or an error saying why there are none to be had
// (no libnvidia-ml, no driver, ...).
absl::StatusOr<std::vector<v1::Gpu>> DiscoverGpus();

// `count` stand-in GPUs for machines without any (`dcvlr-agent --gpus N`),
// with locality domains from `domains` (`--gpu-domains 0,0,1,1`; -1 beyond).
std::vector<v1::Gpu> PretendGpus(const std::string& node, int count,
                                 const std::vector<int>& domains = {});

}  // namespace dcvlr

#endif  // DCVLR_WORKER_AGENT_GPU_DISCOVERY_H_
