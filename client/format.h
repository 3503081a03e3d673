// How dcvlrctl prints jobs and nodes: aligned tables for people, JSON for
// scripts (`-o json`).
#ifndef DCVLR_CLIENT_FORMAT_H_
#define DCVLR_CLIENT_FORMAT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dcvlr/v1/client.pb.h"
#include "dcvlr/v1/job.pb.h"
#include "nlohmann/json.hpp"

namespace dcvlr {

nlohmann::json JobToJson(const v1::Job& job);
nlohmann::json NodeToJson(const v1::Node& node);

std::string JobsTable(const std::vector<v1::Job>& jobs);
std::string NodesTable(const std::vector<v1::Node>& nodes);
// The audit trail: time, principal (and how established), peer, action,
// target, outcome.
std::string AuditTable(const v1::ListAuditResponse& audit);
nlohmann::json AuditToJson(const v1::ListAuditResponse& audit);
// `dcvlrctl describe`: the spec in brief, attempts, and every event.
std::string DescribeJob(const v1::Job& job);

// `dcvlrctl queue`: pending jobs in scheduling order, then users' shares.
std::string QueueTables(const v1::GetQueueResponse& queue);
nlohmann::json QueueToJson(const v1::GetQueueResponse& queue);

// `dcvlrctl metrics`: one row per step, one column per key (blank where a
// key has no point at that step; rows for lines without a step show "-").
std::string MetricsTable(const v1::GetJobMetricsResponse& metrics);
std::string MetricsCsv(const v1::GetJobMetricsResponse& metrics);
nlohmann::json MetricsToJson(const v1::GetJobMetricsResponse& metrics);

// An eval job's scores from its newest metrics (`eval_accuracy/<benchmark>`,
// `eval_hits/...`, `eval_total/...`, `eval_accuracy`): {"benchmarks": {name:
// {accuracy, hits, total}}, "overall_accuracy": x}; null when it has none.
nlohmann::json ScoresFromMetrics(const v1::GetJobMetricsResponse& metrics);
// The same as lines for `dcvlrctl describe`; empty when there are none.
std::string ScoresTable(const nlohmann::json& scores);

// `dcvlrctl watch`: "step 40/100 [#####.....] 40%  loss 2.3100
// tokens/s 5123  ETA 1m20s". `max_steps` <= 0: no bar. `eta_s` < 0: none.
struct Progress {
  int64_t step = -1;
  int64_t max_steps = 0;
  double loss = 0;
  bool has_loss = false;
  double tokens_per_s = 0;
  bool has_tokens_per_s = false;
  double eta_s = -1;
};
std::string ProgressLine(const Progress& progress, int bar_width = 30);
// The training config's max_steps (0 when the job has none).
int64_t MaxStepsOf(const v1::Job& job);

// `dcvlrctl top`: GPUs by node, usage by user, and the running jobs with
// their newest step and loss (from `latest`, job id -> key -> value).
std::string TopTables(
    const std::vector<v1::Node>& nodes, const std::vector<v1::Job>& jobs,
    const v1::GetQueueResponse& queue,
    const std::map<std::string, std::map<std::string, double>>& latest);

// "1h02m", "3m20s", "45s".
std::string FormatDuration(double seconds);

// "2026-11-26 13:40:01" in local time; "-" for 0.
std::string FormatTime(int64_t time_ms);

}  // namespace dcvlr

#endif  // DCVLR_CLIENT_FORMAT_H_
