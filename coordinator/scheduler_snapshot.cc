#include "coordinator/scheduler_snapshot.h"

#include <map>
#include <set>
#include <string>
#include <utility>

#include "coordinator/lifecycle.h"

namespace dcvlr {
namespace {

RunningAttempt Running(const v1::Job& job, const ClusterConfig& config) {
  const v1::Attempt& attempt = *job.attempts().rbegin();
  RunningAttempt running;
  running.job_id = job.id();
  running.attempt = attempt.number();
  running.user = job.user();
  running.priority = job.spec().priority();
  for (const v1::Placement& p : attempt.placements()) {
    if (Lists(attempt.exited_nodes(), p.node())) continue;
    running.placements.push_back(
        {p.node(), std::vector<int>(p.gpus().begin(), p.gpus().end())});
  }
  running.submit_ms = job.submit_time_ms();
  running.started_ms = attempt.scheduled_ms();
  running.time_limit_ms =
      static_cast<int64_t>(job.spec().time_limit_s() * 1000);
  running.last_checkpoint_ms = attempt.last_checkpoint_ms();
  running.stopping = attempt.stop_ms() > 0;
  running.stop_deadline_ms =
      attempt.stop_ms() + static_cast<int64_t>(StopGrace(job, config) * 1000);
  return running;
}

bool DependenciesSucceeded(const v1::Job& job, const JobTable& jobs) {
  for (const std::string& dep : job.spec().after()) {
    const v1::Job* d = jobs.Find(dep);
    if (d == nullptr || d->state() != v1::JOB_STATE_SUCCEEDED) return false;
  }
  return true;
}

PendingJob Pending(int64_t seq, const v1::Job& job) {
  PendingJob pending;
  pending.id = job.id();
  pending.priority = job.spec().priority();
  pending.seq = seq;
  pending.nodes = job.spec().resources().nodes();
  pending.gpus_per_node = job.spec().resources().gpus_per_node();
  pending.user = job.user();
  pending.submit_ms = job.submit_time_ms();
  pending.time_limit_ms =
      static_cast<int64_t>(job.spec().time_limit_s() * 1000);
  return pending;
}

}  // namespace

double StopGrace(const v1::Job& job, const ClusterConfig& config) {
  return job.spec().grace_s() > 0 ? job.spec().grace_s()
                                  : config.default_grace_s;
}

SchedulerInput BuildSchedulerInput(int64_t now_ms,
                                   std::shared_ptr<const ClusterConfig> config,
                                   Usage usage, const JobTable& jobs,
                                   const NodeRegistry& nodes) {
  SchedulerInput input;
  input.now_ms = now_ms;
  input.config = config != nullptr ? std::move(config)
                                   : std::make_shared<const ClusterConfig>();
  input.usage = std::move(usage);
  for (const auto& [seq, live] : jobs.live()) {
    const v1::Job& job = *live;
    if (IsActive(job.state())) {
      input.running.push_back(Running(job, *input.config));
    } else if (job.state() == v1::JOB_STATE_PENDING &&
               job.not_before_ms() <= now_ms &&
               DependenciesSucceeded(job, jobs)) {
      input.queue.push_back(Pending(seq, job));
    }
  }
  if (!input.queue.empty()) input.nodes = SchedulableNodes(nodes);
  return input;
}

std::vector<NodeSnapshot> SchedulableNodes(const NodeRegistry& nodes) {
  std::vector<NodeSnapshot> out;
  for (const auto& [name, node] : nodes.nodes()) {
    if (node.state != v1::NODE_STATE_READY || node.info.drained()) continue;
    NodeSnapshot snapshot{name, node.info.gpus_size(), {}};
    bool topology = false;
    for (const v1::Gpu& gpu : node.info.gpus()) topology |= gpu.domain() >= 0;
    if (topology) {
      snapshot.gpu_domain.assign(node.info.gpus_size(), -1);
      for (const v1::Gpu& gpu : node.info.gpus()) {
        if (gpu.index() >= 0 && gpu.index() < node.info.gpus_size()) {
          snapshot.gpu_domain[gpu.index()] = gpu.domain();
        }
      }
    }
    std::set<int> used;
    for (const auto& [key, gpus] : node.holds) {
      used.insert(gpus.begin(), gpus.end());
    }
    for (const v1::Gpu& gpu : node.info.gpus()) {
      if (!used.count(gpu.index())) snapshot.free_gpus.push_back(gpu.index());
    }
    out.push_back(std::move(snapshot));
  }
  return out;
}

v1::GetQueueResponse QueueView(const SchedulerInput& input,
                               const SchedulerDecisions& decisions,
                               JobTable& jobs, const NodeRegistry& nodes) {
  v1::GetQueueResponse view;
  view.set_as_of_ms(input.now_ms);
  for (const QueueEntry& entry : decisions.queue) {
    if (entry.reason < 0) continue;  // placed in this pass
    const PendingJob& pending = input.queue[entry.job];
    const FairShare& account = decisions.fair_shares[entry.account];
    const std::string& reason = decisions.reasons[entry.reason];
    v1::Job* job = jobs.Find(pending.id);
    if (job != nullptr && job->state() == v1::JOB_STATE_PENDING &&
        job->reason() != reason) {
      job->set_reason(reason);
    }
    v1::QueueEntry* out = view.add_entries();
    out->set_job_id(pending.id);
    out->set_name(job != nullptr ? job->spec().name() : "");
    out->set_user(account.user);
    out->set_group(account.group);
    out->set_priority(pending.priority);
    out->set_effective_priority(entry.effective_priority);
    out->set_fair_share(account.factor);
    out->set_reason(reason);
    out->set_gpus(pending.nodes * pending.gpus_per_node);
  }
  // GPUs held now, this pass's placements included.
  std::map<std::string, int> in_use;
  for (const auto& [name, node] : nodes.nodes()) {
    for (const auto& [key, gpus] : node.holds) {
      if (const v1::Job* job = jobs.Find(key.job_id)) {
        in_use[job->user()] += static_cast<int>(gpus.size());
      }
    }
  }
  for (const FairShare& share : decisions.fair_shares) {
    v1::UserShare* out = view.add_users();
    out->set_user(share.user);
    out->set_group(share.group);
    out->set_shares_norm(share.shares_norm);
    out->set_usage_norm(share.usage_norm);
    out->set_factor(share.factor);
    out->set_gpus_in_use(in_use[share.user]);
  }
  return view;
}

}  // namespace dcvlr
