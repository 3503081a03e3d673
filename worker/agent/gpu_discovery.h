// Finds the machine's GPUs through NVML, loaded at run time with dlopen so
// that the agent builds and runs on machines without the NVIDIA driver.
#ifndef DCVLR_WORKER_AGENT_GPU_DISCOVERY_H_
#define DCVLR_WORKER_AGENT_GPU_DISCOVERY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dcvlr/v1/client.pb.h"

namespace dcvlr {

// The GPUs NVML reports, or an error saying why there are none to be had
// (no libnvidia-ml, no driver, ...). Their domains come from
// LocalityDomains() over what NVML and sysfs say of their links.
absl::StatusOr<std::vector<v1::Gpu>> DiscoverGpus();

// Where one GPU sits: what LocalityDomains() groups by.
struct GpuTopology {
  std::string bus_id;  // its PCI bus id, as NVML writes it
  int numa_node = -1;  // -1: unknown
  // The PCI bus ids at the far end of its active NVLinks: other GPUs, or
  // NVSwitches that join every GPU linked to them.
  std::vector<std::string> nvlink_remotes;
};

// A locality domain per GPU, in the same order:
//   1. GPUs joined by NVLink, directly or through NVSwitches (through any
//      chain of them), form an NVLink island; islands of two or more GPUs
//      are domains 0, 1, ... in the order of their lowest GPU.
//   2. A GPU with no NVLink to another GPU falls back to its NUMA node,
//      numbered after the islands; -1 when that is unknown too.
// So on a machine without NVLink the domains are the NUMA nodes, and on an
// NVSwitch machine (HGX/DGX) all GPUs are one domain. Bus ids compare
// without regard to case or the width of their PCI domain part.
std::vector<int> LocalityDomains(const std::vector<GpuTopology>& gpus);

// `count` stand-in GPUs for machines without any (`dcvlr-agent --gpus N`),
// with locality domains from `domains` (`--gpu-domains 0,0,1,1`; -1 beyond).
std::vector<v1::Gpu> PretendGpus(const std::string& node, int count,
                                 const std::vector<int>& domains = {});

// One GPU's readings; a reading NVML could not give is negative.
struct GpuSample {
  int index = 0;
  std::string uuid;
  double utilization = -1;  // 0-1, over NVML's last sample period
  double memory_used_bytes = -1;
  double memory_total_bytes = -1;
  double temperature_celsius = -1;
  double power_watts = -1;
};

// Reads utilisation, memory, temperature and power of every GPU through
// NVML. Thread-safe (NVML is).
class GpuSampler {
 public:
  // NotFound or Unavailable where NVML or its GPUs are not to be had.
  static absl::StatusOr<std::unique_ptr<GpuSampler>> Open();
  ~GpuSampler();

  std::vector<GpuSample> Sample() const;

 private:
  struct Nvml;
  explicit GpuSampler(std::unique_ptr<Nvml> nvml);
  std::unique_ptr<Nvml> nvml_;
};

}  // namespace dcvlr

#endif  // DCVLR_WORKER_AGENT_GPU_DISCOVERY_H_
