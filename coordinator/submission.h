// A job file against the cluster it is submitted to: what a file alone
// cannot check (the jobs it names, the benchmarks the coordinator knows,
// the nodes it must fit on) and what the cluster's submit limits allow.
#ifndef DCVLR_COORDINATOR_SUBMISSION_H_
#define DCVLR_COORDINATOR_SUBMISSION_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/job_file.h"
#include "coordinator/benchmarks.h"
#include "coordinator/cluster_config.h"
#include "coordinator/job_table.h"
#include "coordinator/node_registry.h"

namespace dcvlr {

struct SubmitContext {
  const JobTable& jobs;
  const NodeRegistry& nodes;
  const BenchmarkRegistry& benchmarks;
  // The jobs of the file's earlier documents, not stored yet, which later
  // documents may name by id or name (before the table's jobs).
  const std::vector<v1::Job>& earlier;
  // Who submits: names resolve within their jobs (JobTable::Resolve).
  const std::string& user;
};

// Checks `spec` (parsed from `file`) against the cluster and makes it
// concrete: `after:` entries become job ids; an eval job's `model.from`
// becomes the trained job's checkpoint (and a dependency on it) and its
// benchmark names become their definitions. Every problem is reported, one
// per line, at its key's FILE:LINE:COL.
absl::Status ResolveSpec(const ParsedJobFile& file,
                         const SubmitContext& context, v1::JobSpec& spec);

// The cluster config's submit_limits, per user: at most max_pending_jobs
// jobs that have not ended (the user's own limit first), and a token bucket
// of jobs_per_s with `burst` jobs. Admitted jobs are in flight until
// Finish(): they count against max_pending_jobs before they are durable.
// Not thread-safe: the core guards it with its mutex.
class SubmitLimiter {
 public:
  // Admits `jobs` more jobs of `user`, who has `live` jobs that have not
  // ended, at `now_ms` (taking them from the user's bucket), or refuses
  // them with RESOURCE_EXHAUSTED and what to do about it.
  absl::Status Admit(const ClusterConfig& config, const std::string& user,
                     int64_t jobs, int64_t live, int64_t now_ms);
  // Admitted jobs of `user` whose submission has been written or dropped.
  void Finish(const std::string& user, int64_t jobs);
  int64_t in_flight(const std::string& user) const;

 private:
  struct Bucket {
    double tokens = 0;
    int64_t at_ms = 0;
  };
  std::map<std::string, Bucket> buckets_;
  std::map<std::string, int64_t> in_flight_;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_SUBMISSION_H_
