// The coordinator's Prometheus exporter (docs/architecture.md "Observability").
//
// Gauges are built at each scrape from a Core snapshot and the metric
// history's newest values, so a series exists exactly while what it
// describes does: a job's training gauges vanish when the job ends, with
// no labels left behind. Eval scores (dcvlr_eval_*) stay for the most
// recent `eval_jobs_kept` ended jobs, since eval jobs are short. Counters
// and histograms (scheduling latency, preemptions) live in a registry that
// the Core feeds through CoreObserver.
//
// Thread-safety: Collect() and the CoreObserver calls may come from any
// thread.
#ifndef DCVLR_COORDINATOR_METRICS_H_
#define DCVLR_COORDINATOR_METRICS_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/core.h"
#include "coordinator/metric_history.h"
#include "coordinator/service_observer.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace dcvlr {

class CoordinatorMetrics final : public prometheus::Collectable,
                                 public CoreObserver,
                                 public ServiceObserver {
 public:
  explicit CoordinatorMetrics(const MetricHistory* history,
                              size_t eval_jobs_kept = 200);

  // The Core is made after its observer; set it before the first scrape.
  void SetCore(const Core* core) { core_ = core; }

  std::vector<prometheus::MetricFamily> Collect() const override;

  void OnSchedulePass(double seconds) override;
  void OnJobRunning(double seconds) override;
  void OnPreemption(const std::string& reason) override;
  void OnRequeue(const std::string& reason) override;

  void OnClientRefused(const absl::Status& why) override;
  void OnAgentMessageRefused(const std::string& node,
                             const std::string& reason) override;
  void OnRegistrationRefused(const std::string& reason) override;

 private:
  const MetricHistory* const history_;
  const size_t eval_jobs_kept_;
  std::atomic<const Core*> core_{nullptr};
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Histogram>* pass_seconds_;
  prometheus::Histogram* pass_histogram_;
  prometheus::Family<prometheus::Histogram>* submit_to_running_;
  prometheus::Histogram* submit_to_running_histogram_;
  prometheus::Family<prometheus::Counter>* preemptions_;
  prometheus::Family<prometheus::Counter>* requeues_;
  prometheus::Family<prometheus::Counter>* client_refused_;
  prometheus::Family<prometheus::Counter>* agent_messages_refused_;
  prometheus::Family<prometheus::Counter>* registrations_refused_;
};

// Prometheus file-based service discovery targets (a JSON list of target
// groups): the coordinator's own metrics address, and each agent's that
// reported one (lost nodes left out).
std::string PrometheusTargets(const ClusterSnapshot& snapshot,
                              const std::string& coordinator_metrics_address);

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_METRICS_H_
