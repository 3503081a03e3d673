#include "coordinator/metrics.h"

#include <algorithm>
#include <cctype>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace dcvlr {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Keys of the metrics file exported as per-job gauges, and their names.
struct TrainingGauge {
  const char* key;
  const char* name;
  const char* help;
};
constexpr TrainingGauge kTrainingGauges[] = {
    {"step", "dcvlr_job_step", "Newest training step the job reported."},
    {"loss", "dcvlr_job_loss", "Newest training loss the job reported."},
    {"lr", "dcvlr_job_learning_rate", "Newest learning rate."},
    {"grad_norm", "dcvlr_job_grad_norm", "Newest gradient norm."},
    {"tokens_per_s", "dcvlr_job_tokens_per_second",
     "Training throughput in tokens per second."},
    {"samples_per_s", "dcvlr_job_samples_per_second",
     "Training throughput in samples per second."},
    {"mfu", "dcvlr_job_mfu_ratio", "Model FLOPs utilisation (0-1)."},
};

// Eval keys: "eval_accuracy" and "eval_accuracy/<benchmark>", etc.
struct EvalGauge {
  const char* key;
  const char* name;
  const char* help;
};
constexpr EvalGauge kEvalGauges[] = {
    {"eval_accuracy", "dcvlr_eval_accuracy",
     "Accuracy (0-1) on a benchmark, or overall without one."},
    {"eval_hits", "dcvlr_eval_hits", "Correct answers on a benchmark."},
    {"eval_total", "dcvlr_eval_total", "Questions asked of a benchmark."},
};

std::string Lower(std::string text) {
  for (char& c : text)
    c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string NodeStateLabel(v1::NodeState state) {
  std::string name = v1::NodeState_Name(state);
  const std::string prefix = "NODE_STATE_";
  if (absl::StartsWith(name, prefix)) name = name.substr(prefix.size());
  return Lower(name);
}

std::string JobStateLabel(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  const std::string prefix = "JOB_STATE_";
  if (absl::StartsWith(name, prefix)) name = name.substr(prefix.size());
  return Lower(name);
}

MetricFamily Family(const std::string& name, const std::string& help) {
  MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = MetricType::Gauge;
  return family;
}

void AddGauge(MetricFamily& family, std::vector<ClientMetric::Label> labels,
              double value) {
  ClientMetric& metric = family.metric.emplace_back();
  std::sort(labels.begin(), labels.end());
  metric.label = std::move(labels);
  metric.gauge.value = value;
}

std::vector<ClientMetric::Label> JobLabels(
    const ClusterSnapshot::JobLabels& job) {
  return {{"job_id", job.id}, {"job_name", job.name}, {"user", job.user}};
}

}  // namespace

CoordinatorMetrics::CoordinatorMetrics(const MetricHistory* history,
                                       size_t eval_jobs_kept)
    : history_(history),
      eval_jobs_kept_(eval_jobs_kept),
      registry_(std::make_shared<prometheus::Registry>()) {
  pass_seconds_ = &prometheus::BuildHistogram()
                       .Name("dcvlr_scheduling_pass_duration_seconds")
                       .Help(
                           "Time one scheduling pass over a non-empty "
                           "queue took.")
                       .Register(*registry_);
  pass_histogram_ =
      &pass_seconds_->Add({}, prometheus::Histogram::BucketBoundaries{
                                  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                  0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5});
  submit_to_running_ = &prometheus::BuildHistogram()
                            .Name("dcvlr_job_submit_to_running_seconds")
                            .Help(
                                "Time from a job's submission until its "
                                "first attempt ran.")
                            .Register(*registry_);
  submit_to_running_histogram_ =
      &submit_to_running_->Add({}, prometheus::Histogram::BucketBoundaries{
                                       0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600,
                                       1800, 3600, 7200, 14400, 43200, 86400});
  preemptions_ = &prometheus::BuildCounter()
                      .Name("dcvlr_preemptions_total")
                      .Help("Attempts that ended preempted, by reason.")
                      .Register(*registry_);
  requeues_ = &prometheus::BuildCounter()
                   .Name("dcvlr_requeues_total")
                   .Help("Jobs put back in the queue, by reason.")
                   .Register(*registry_);
  // Known reasons start at zero, so rate() sees their first increase.
  for (const char* reason :
       {"node_lost", "priority", "drain", "requeue_exit", "stopped"}) {
    preemptions_->Add({{"reason", reason}});
    requeues_->Add({{"reason", reason}});
  }
  requeues_->Add({{"reason", "failure"}});
  client_refused_ =
      &prometheus::BuildCounter()
           .Name("dcvlr_client_calls_refused_total")
           .Help(
               "Client calls refused: reason unauthenticated (no good "
               "credential) or permission_denied (not the caller's to do).")
           .Register(*registry_);
  agent_messages_refused_ =
      &prometheus::BuildCounter()
           .Name("dcvlr_agent_messages_refused_total")
           .Help(
               "Agents' reports, log chunks and metrics refused, by node and "
               "reason (not_placed_here, unknown_attempt, bad_offset).")
           .Register(*registry_);
  registrations_refused_ =
      &prometheus::BuildCounter()
           .Name("dcvlr_agent_registrations_refused_total")
           .Help(
               "Agent registrations refused, by reason (no_certificate, "
               "wrong_certificate, name_mismatch, duplicate).")
           .Register(*registry_);
  for (const char* reason : {"unauthenticated", "permission_denied"}) {
    client_refused_->Add({{"reason", reason}});
  }
  for (const char* reason :
       {"no_certificate", "wrong_certificate", "name_mismatch", "duplicate"}) {
    registrations_refused_->Add({{"reason", reason}});
  }
}

void CoordinatorMetrics::OnClientRefused(const absl::Status& why) {
  client_refused_
      ->Add({{"reason", why.code() == absl::StatusCode::kUnauthenticated
                            ? "unauthenticated"
                            : "permission_denied"}})
      .Increment();
}

void CoordinatorMetrics::OnAgentMessageRefused(const std::string& node,
                                               const std::string& reason) {
  agent_messages_refused_->Add({{"node", node}, {"reason", reason}})
      .Increment();
}

void CoordinatorMetrics::OnRegistrationRefused(const std::string& reason) {
  registrations_refused_->Add({{"reason", reason}}).Increment();
}

void CoordinatorMetrics::OnSchedulePass(double seconds) {
  pass_histogram_->Observe(seconds);
}

void CoordinatorMetrics::OnJobRunning(double seconds) {
  submit_to_running_histogram_->Observe(seconds);
}

void CoordinatorMetrics::OnPreemption(const std::string& reason) {
  preemptions_->Add({{"reason", reason}}).Increment();
}

void CoordinatorMetrics::OnRequeue(const std::string& reason) {
  requeues_->Add({{"reason", reason}}).Increment();
}

std::vector<MetricFamily> CoordinatorMetrics::Collect() const {
  std::vector<MetricFamily> out = registry_->Collect();
  const Core* core = core_.load();
  if (core == nullptr) return out;
  const ClusterSnapshot snapshot = core->Snapshot(eval_jobs_kept_);

  // ---- nodes and GPUs
  MetricFamily nodes = Family("dcvlr_nodes", "Nodes by state.");
  std::map<std::string, int> by_state;
  for (v1::NodeState state :
       {v1::NODE_STATE_READY, v1::NODE_STATE_DRAINED,
        v1::NODE_STATE_DISCONNECTED, v1::NODE_STATE_LOST}) {
    by_state[NodeStateLabel(state)] = 0;
  }
  MetricFamily node_up =
      Family("dcvlr_node_up", "1 while the node's agent is connected, else 0.");
  MetricFamily gpus = Family(
      "dcvlr_node_gpus", "GPUs a node has (0 once it is lost: gone capacity).");
  MetricFamily allocated =
      Family("dcvlr_node_gpus_allocated", "GPUs held by jobs on a node.");
  MetricFamily free = Family(
      "dcvlr_node_gpus_free",
      "GPUs free for new jobs on a node (0 while it is drained or down).");
  MetricFamily gpu_allocated =
      Family("dcvlr_gpu_allocated",
             "1 for a GPU held by a job (job_id names it), 0 for a free one.");
  for (const ClusterSnapshot::Node& node : snapshot.nodes) {
    ++by_state[NodeStateLabel(node.state)];
    const bool up = node.state == v1::NODE_STATE_READY ||
                    node.state == v1::NODE_STATE_DRAINED;
    AddGauge(node_up, {{"node", node.name}}, up ? 1 : 0);
    const int held = static_cast<int>(node.gpu_jobs.size());
    const bool lost = node.state == v1::NODE_STATE_LOST;
    AddGauge(gpus, {{"node", node.name}}, lost ? 0 : node.gpus_total);
    AddGauge(allocated, {{"node", node.name}}, held);
    AddGauge(free, {{"node", node.name}},
             node.state == v1::NODE_STATE_READY
                 ? std::max(0, node.gpus_total - held)
                 : 0);
    for (int gpu = 0; !lost && gpu < node.gpus_total; ++gpu) {
      auto it = node.gpu_jobs.find(gpu);
      const bool taken = it != node.gpu_jobs.end();
      AddGauge(gpu_allocated,
               {{"node", node.name},
                {"gpu", std::to_string(gpu)},
                {"job_id", taken ? it->second : ""}},
               taken ? 1 : 0);
    }
  }
  for (const auto& [state, count] : by_state) {
    AddGauge(nodes, {{"state", state}}, count);
  }

  MetricFamily store_healthy = Family(
      "dcvlr_store_healthy",
      "1 while the state store accepts writes; 0 while writes fail and the "
      "coordinator refuses submits, cancels and drains.");
  AddGauge(store_healthy, {}, snapshot.store_healthy ? 1 : 0);

  // ---- jobs and the queue
  MetricFamily jobs = Family("dcvlr_jobs", "Jobs by state.");
  for (int s = v1::JOB_STATE_PENDING; s <= v1::JOB_STATE_PREEMPTED; ++s) {
    const auto state = static_cast<v1::JobState>(s);
    auto it = snapshot.jobs_by_state.find(state);
    AddGauge(jobs, {{"state", JobStateLabel(state)}},
             it == snapshot.jobs_by_state.end() ? 0 : it->second);
  }
  MetricFamily pending_jobs =
      Family("dcvlr_pending_jobs", "Jobs waiting in the queue.");
  MetricFamily pending_gpus =
      Family("dcvlr_pending_gpus", "GPUs the waiting jobs ask for.");
  MetricFamily pending_wait = Family(
      "dcvlr_pending_oldest_wait_seconds",
      "How long the longest-waiting job of a user and priority has waited.");
  for (const auto& [key, pending] : snapshot.pending) {
    std::vector<ClientMetric::Label> labels = {
        {"user", key.first}, {"priority", std::to_string(key.second)}};
    AddGauge(pending_jobs, labels, pending.jobs);
    AddGauge(pending_gpus, labels, pending.gpus);
    AddGauge(pending_wait, labels,
             std::max<int64_t>(0, snapshot.now_ms - pending.oldest_submit_ms) /
                 1000.0);
  }

  // ---- per-job gauges from the relayed metrics files
  MetricFamily attempt = Family(
      "dcvlr_job_attempt",
      "Current attempt number of a job that is running or has run and waits "
      "again (above 1: it was requeued).");
  std::vector<std::string> ids;
  for (const auto& job : snapshot.active) {
    AddGauge(attempt, JobLabels(job), job.attempt);
    ids.push_back(job.id);
  }
  for (const auto& job : snapshot.recently_ended) ids.push_back(job.id);
  const auto latest =
      history_ != nullptr
          ? history_->Latest(ids)
          : std::map<std::string, std::map<std::string, double>>();

  std::vector<MetricFamily> training;
  for (const TrainingGauge& g : kTrainingGauges) {
    training.push_back(Family(g.name, g.help));
  }
  std::vector<MetricFamily> eval;
  for (const EvalGauge& g : kEvalGauges) eval.push_back(Family(g.name, g.help));
  auto add_eval = [&](const ClusterSnapshot::JobLabels& job,
                      const std::map<std::string, double>& values) {
    for (size_t i = 0; i < std::size(kEvalGauges); ++i) {
      const std::string key = kEvalGauges[i].key;
      for (auto it = values.lower_bound(key);
           it != values.end() && absl::StartsWith(it->first, key); ++it) {
        std::vector<ClientMetric::Label> labels = JobLabels(job);
        if (it->first.size() == key.size()) {
          AddGauge(eval[i], labels, it->second);
        } else if (it->first[key.size()] == '/') {
          labels.push_back({"benchmark", it->first.substr(key.size() + 1)});
          AddGauge(eval[i], labels, it->second);
        }
      }
    }
  };
  for (const auto& job : snapshot.active) {
    auto found = latest.find(job.id);
    if (found == latest.end()) continue;
    for (size_t i = 0; i < std::size(kTrainingGauges); ++i) {
      auto value = found->second.find(kTrainingGauges[i].key);
      if (value != found->second.end()) {
        AddGauge(training[i], JobLabels(job), value->second);
      }
    }
    add_eval(job, found->second);
  }
  for (const auto& job : snapshot.recently_ended) {
    auto found = latest.find(job.id);
    if (found != latest.end()) add_eval(job, found->second);
  }

  MetricFamily ingested;
  ingested.name = "dcvlr_metric_points_ingested_total";
  ingested.help = "Metric points (lines of jobs' metrics files) received.";
  ingested.type = MetricType::Counter;
  ClientMetric& points = ingested.metric.emplace_back();
  points.counter.value = history_ != nullptr
                             ? static_cast<double>(history_->points_ingested())
                             : 0;

  for (MetricFamily* family :
       {&store_healthy, &nodes, &node_up, &gpus, &allocated, &free,
        &gpu_allocated, &jobs, &pending_jobs, &pending_gpus, &pending_wait,
        &attempt, &ingested}) {
    out.push_back(std::move(*family));
  }
  for (MetricFamily& family : training) out.push_back(std::move(family));
  for (MetricFamily& family : eval) out.push_back(std::move(family));
  return out;
}

std::string PrometheusTargets(const ClusterSnapshot& snapshot,
                              const std::string& coordinator_metrics_address) {
  nlohmann::json groups = nlohmann::json::array();
  if (!coordinator_metrics_address.empty()) {
    groups.push_back({{"targets", {coordinator_metrics_address}},
                      {"labels", {{"dcvlr_role", "coordinator"}}}});
  }
  for (const ClusterSnapshot::Node& node : snapshot.nodes) {
    if (node.metrics_address.empty() || node.state == v1::NODE_STATE_LOST) {
      continue;
    }
    groups.push_back(
        {{"targets", {node.metrics_address}},
         {"labels", {{"dcvlr_role", "agent"}, {"dcvlr_node", node.name}}}});
  }
  return groups.dump(2) + "\n";
}

}  // namespace dcvlr
