// The agent's Prometheus exporter: each GPU of the node, labelled node, gpu
// (index), uuid and job_id (the job holding it, empty when free), so that
// GPU panels join with job panels. Utilisation, memory, temperature and
// power come from NVML and are absent where there is none (pretend GPUs
// export their allocation only). Built at each scrape.
//
// Thread-safety: Collect() may be called from any thread.
#ifndef DCVLR_WORKER_AGENT_AGENT_METRICS_H_
#define DCVLR_WORKER_AGENT_AGENT_METRICS_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dcvlr/v1/client.pb.h"
#include "prometheus/collectable.h"
#include "worker/agent/gpu_discovery.h"

namespace dcvlr {

class AgentMetrics final : public prometheus::Collectable {
 public:
  struct Sources {
    std::string node;
    std::vector<v1::Gpu> gpus;
    // Null where the GPUs are pretended.
    std::unique_ptr<GpuSampler> sampler;
    // GPU index -> job id holding it.
    std::function<std::map<int, std::string>()> gpu_jobs;
    std::function<int64_t()> points_relayed;
  };
  explicit AgentMetrics(Sources sources) : sources_(std::move(sources)) {}

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  Sources sources_;
};

}  // namespace dcvlr

#endif  // DCVLR_WORKER_AGENT_AGENT_METRICS_H_
