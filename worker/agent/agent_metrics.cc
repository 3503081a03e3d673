#include "worker/agent/agent_metrics.h"

#include <algorithm>

#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"

namespace dcvlr {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Gauges(const std::string& name, const std::string& help) {
  MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = MetricType::Gauge;
  return family;
}

void Add(MetricFamily& family, const std::vector<ClientMetric::Label>& labels,
         double value) {
  ClientMetric& metric = family.metric.emplace_back();
  metric.label = labels;
  metric.gauge.value = value;
}

}  // namespace

std::vector<MetricFamily> AgentMetrics::Collect() const {
  const std::map<int, std::string> jobs =
      sources_.gpu_jobs ? sources_.gpu_jobs() : std::map<int, std::string>();
  std::map<int, GpuSample> samples;
  if (sources_.sampler != nullptr) {
    for (GpuSample& s : sources_.sampler->Sample()) samples[s.index] = s;
  }
  MetricFamily allocated = Gauges(
      "dcvlr_agent_gpu_allocated",
      "1 while a job's attempt runs on the GPU (job_id names it), else 0.");
  MetricFamily utilization =
      Gauges("dcvlr_gpu_utilization_ratio",
             "Fraction of the last sample period the GPU was busy (NVML).");
  MetricFamily memory_used =
      Gauges("dcvlr_gpu_memory_used_bytes", "GPU memory in use (NVML).");
  MetricFamily memory_total =
      Gauges("dcvlr_gpu_memory_total_bytes", "GPU memory in all (NVML).");
  MetricFamily temperature =
      Gauges("dcvlr_gpu_temperature_celsius", "GPU core temperature (NVML).");
  MetricFamily power =
      Gauges("dcvlr_gpu_power_watts", "GPU power draw (NVML).");
  for (const v1::Gpu& gpu : sources_.gpus) {
    auto job = jobs.find(gpu.index());
    std::vector<ClientMetric::Label> labels = {
        {"gpu", std::to_string(gpu.index())},
        {"job_id", job == jobs.end() ? "" : job->second},
        {"node", sources_.node},
        {"uuid", gpu.uuid()}};
    Add(allocated, labels, job == jobs.end() ? 0 : 1);
    auto sample = samples.find(gpu.index());
    if (sample == samples.end()) continue;
    const GpuSample& s = sample->second;
    if (s.utilization >= 0) Add(utilization, labels, s.utilization);
    if (s.memory_used_bytes >= 0) Add(memory_used, labels, s.memory_used_bytes);
    if (s.memory_total_bytes >= 0) {
      Add(memory_total, labels, s.memory_total_bytes);
    }
    if (s.temperature_celsius >= 0) {
      Add(temperature, labels, s.temperature_celsius);
    }
    if (s.power_watts >= 0) Add(power, labels, s.power_watts);
  }
  MetricFamily relayed;
  relayed.name = "dcvlr_agent_metric_points_relayed_total";
  relayed.help = "Lines of jobs' metrics files relayed to the coordinator.";
  relayed.type = MetricType::Counter;
  ClientMetric& points = relayed.metric.emplace_back();
  points.label = {{"node", sources_.node}};
  points.counter.value = sources_.points_relayed
                             ? static_cast<double>(sources_.points_relayed())
                             : 0;

  // Families without GPUs to read are still declared (HELP and TYPE, no
  // samples), so dashboards and their checks find every name.
  std::vector<MetricFamily> out;
  for (MetricFamily* family : {&allocated, &utilization, &memory_used,
                               &memory_total, &temperature, &power, &relayed}) {
    out.push_back(std::move(*family));
  }
  return out;
}

}  // namespace dcvlr
