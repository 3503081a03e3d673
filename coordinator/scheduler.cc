#include "coordinator/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace dcvlr {

SchedulerDecisions FirstFitPolicy::Schedule(const SchedulerInput& input) const {
  std::vector<const PendingJob*> order;
  order.reserve(input.queue.size());
  for (const PendingJob& job : input.queue) order.push_back(&job);
  std::stable_sort(order.begin(), order.end(),
                   [](const PendingJob* a, const PendingJob* b) {
                     if (a->priority != b->priority) {
                       return a->priority > b->priority;
                     }
                     return a->seq < b->seq;
                   });

  std::vector<std::vector<int>> free;
  free.reserve(input.nodes.size());
  for (const NodeSnapshot& node : input.nodes) free.push_back(node.free_gpus);

  SchedulerDecisions decisions;
  for (const PendingJob* job : order) {
    std::vector<size_t> chosen;
    for (size_t i = 0; i < free.size() && chosen.size() < size_t(job->nodes);
         ++i) {
      if (free[i].size() >= size_t(job->gpus_per_node)) chosen.push_back(i);
    }
    if (chosen.size() < size_t(job->nodes)) {
      decisions.waiting.push_back(
          {job->id,
           absl::StrCat("waiting for ", job->nodes, " node",
                        job->nodes == 1 ? "" : "s", " with ",
                        job->gpus_per_node, " free GPU",
                        job->gpus_per_node == 1 ? "" : "s")});
      continue;
    }
    Placement placement{job->id, {}};
    for (size_t i : chosen) {
      std::vector<int>& gpus = free[i];
      placement.nodes.push_back(
          {input.nodes[i].name,
           std::vector<int>(gpus.begin(), gpus.begin() + job->gpus_per_node)});
      gpus.erase(gpus.begin(), gpus.begin() + job->gpus_per_node);
    }
    decisions.placements.push_back(std::move(placement));
  }
  return decisions;
}

}  // namespace dcvlr
