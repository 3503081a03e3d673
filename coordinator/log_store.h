// Job logs as the agents stream them: one file per (job, attempt, rank)
// under the coordinator's state dir, so logs outlive the node that made them.
#ifndef DCVLR_COORDINATOR_LOG_STORE_H_
#define DCVLR_COORDINATOR_LOG_STORE_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace dcvlr {

// Thread-safe.
class LogStore {
 public:
  explicit LogStore(std::string dir) : dir_(std::move(dir)) {}

  // Writes `data` at byte `offset` of the rank's log. Data the store already
  // holds is skipped; a chunk that would leave a gap is refused
  // (kOutOfRange), and the agent resends from Size() when it reconnects.
  absl::Status Append(const std::string& job_id, int attempt, int rank,
                      int64_t offset, const std::string& data);

  // Up to `max_bytes` from `offset`; empty at the end.
  absl::StatusOr<std::string> Read(const std::string& job_id, int attempt,
                                   int rank, int64_t offset,
                                   int64_t max_bytes) const;

  int64_t Size(const std::string& job_id, int attempt, int rank) const;

  // Rank -> size of every rank log of the attempt.
  std::map<int, int64_t> Sizes(const std::string& job_id, int attempt) const;

  // Waits until Append() is called for any log, or `timeout` passes.
  void AwaitAppend(absl::Duration timeout);

 private:
  std::string PathOf(const std::string& job_id, int attempt, int rank) const;

  const std::string dir_;
  mutable absl::Mutex mu_;
  int64_t appends_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_LOG_STORE_H_
