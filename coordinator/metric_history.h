// The metric history of jobs: every line an agent relays from a job's
// metrics file (DCVLR_METRICS_FILE), kept per job and key, bounded, and
// persisted so that it outlives the job and a coordinator restart.
//
// Bounding: a key keeps at most `max_points_per_key` points. When it is
// full, every other point is dropped and from then on only one of every
// `stride` (doubled each time) arriving points is kept, so the history
// covers the whole run at an even, halving resolution. The newest point is
// always kept beside it (gauges and progress bars read it).
//
// Persistence: changed series are written to the store in one transaction
// per Flush(), together with how far each attempt's file has been read (so
// that after a restart agents resend from there and nothing is counted
// twice). Points that arrived after the last Flush() are lost with a crash.
//
// Thread-safety: every method is safe to call from any thread. Ingest holds
// the lock for one batch; Flush() serialises under the lock and writes to
// the store outside it (one flush at a time).
#ifndef DCVLR_COORDINATOR_METRIC_HISTORY_H_
#define DCVLR_COORDINATOR_METRIC_HISTORY_H_

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/store.h"
#include "dcvlr/v1/agent.pb.h"
#include "dcvlr/v1/client.pb.h"

namespace dcvlr {

// One key's bounded, downsampled history (see the file comment).
class SeriesHistory {
 public:
  explicit SeriesHistory(size_t max_points) : max_points_(max_points) {}

  void Add(int64_t step, int64_t time_ms, double value);

  // The kept points, oldest first, then the newest if it was not kept.
  void ToProto(const std::string& key, bool latest_only,
               v1::MetricSeries* out) const;
  static SeriesHistory FromProto(const v1::MetricSeries& series,
                                 size_t max_points);

  double latest_value() const { return latest_.value; }
  int64_t latest_step() const { return latest_.step; }
  int64_t seen() const { return seen_; }

 private:
  struct Point {
    int64_t step = -1;
    int64_t time_ms = 0;
    double value = 0;
  };
  size_t max_points_;
  int64_t stride_ = 1;
  int64_t seen_ = 0;
  Point latest_;
  std::vector<Point> points_;
};

struct MetricHistoryOptions {
  size_t max_points_per_key = 512;
  // Keys beyond this many per job are ignored (a job that invents a key per
  // line must not exhaust memory).
  size_t max_keys_per_job = 64;
  // Ended jobs whose history stays in memory (older ones are read back from
  // the store when asked for).
  size_t ended_jobs_in_memory = 256;
};

class MetricHistory {
 public:
  // `store` may be null: nothing is persisted.
  MetricHistory(MetricHistoryOptions options, std::unique_ptr<Store> store);

  // Loads how far each attempt's metrics file was read.
  absl::Status Recover();

  // Adds a relayed batch. A batch that starts before what was already
  // received of the attempt (a resend) is dropped; one that starts past it
  // (a gap) or ends before it starts is refused (OUT_OF_RANGE). Returns the
  // points taken.
  absl::StatusOr<int64_t> Ingest(const v1::MetricBatch& batch);

  // How far into the attempt's metrics file points have been received.
  int64_t Offset(const std::string& job_id, int attempt) const;

  // The job's history; NotFound if nothing was ever relayed for it.
  absl::StatusOr<v1::GetJobMetricsResponse> Get(
      const std::string& job_id, const std::vector<std::string>& keys,
      bool latest_only);

  // The newest value of every key of each job in `job_ids` that has any
  // (from memory only: a scrape never reads the store). Steps come as the
  // key "step".
  std::map<std::string, std::map<std::string, double>> Latest(
      const std::vector<std::string>& job_ids) const;

  // The job ended: its history may leave memory once enough others have.
  void JobEnded(const std::string& job_id);

  // Writes what changed since the last flush to the store.
  absl::Status Flush();

  // Points taken since the start.
  int64_t points_ingested() const;

 private:
  struct JobHistory {
    std::map<std::string, SeriesHistory> series;
    std::set<std::string> dirty;
    int64_t latest_step = -1;
    bool has_step = false;
  };
  using AttemptKey = std::pair<std::string, int>;

  JobHistory* LoadedJob(const std::string& job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const MetricHistoryOptions options_;

  absl::Mutex flush_mu_;  // one Flush() at a time; taken before mu_
  std::unique_ptr<Store> store_ ABSL_GUARDED_BY(flush_mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, JobHistory> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<AttemptKey, int64_t> offsets_ ABSL_GUARDED_BY(mu_);
  std::set<AttemptKey> dirty_offsets_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> ended_ ABSL_GUARDED_BY(mu_);
  int64_t points_ingested_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_METRIC_HISTORY_H_
