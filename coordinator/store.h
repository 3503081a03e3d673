// Durable cluster state: jobs, known nodes, users' fair-share usage and the
// audit trail.
//
// The coordinator is the only writer. Every Write (and Put) is one SQLite
// transaction in WAL mode with synchronous=FULL, so a call that returned OK
// survives a crash of the process or of the machine. The coordinator's core
// groups its changes into one StoreBatch per transaction (group commit).
#ifndef DCVLR_COORDINATOR_STORE_H_
#define DCVLR_COORDINATOR_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coordinator/fair_share.h"
#include "dcvlr/v1/client.pb.h"
#include "dcvlr/v1/job.pb.h"

struct sqlite3;

namespace dcvlr {

// How far the coordinator has read one attempt's metrics file.
struct MetricsOffsetRecord {
  std::string job_id;
  int attempt = 0;
  int64_t offset = 0;
};

// Changes written together, in one transaction: all of them or none.
struct StoreBatch {
  std::vector<v1::Job> jobs;    // inserted, or replacing the stored record
  std::vector<v1::Node> nodes;  // the same, by name
  std::optional<Usage> usage;   // replaces the stored usage when set
  std::vector<v1::AuditRecord> audit;  // appended to the audit trail
  // Audit records before this time (ms since the epoch) are deleted.
  std::optional<int64_t> prune_audit_before_ms;

  bool empty() const {
    return jobs.empty() && nodes.empty() && !usage && audit.empty() &&
           !prune_audit_before_ms;
  }
};

// Not thread-safe: callers serialise access (the coordinator core holds its
// lock around every call). Several Stores may open the same file (SQLite
// serialises their writes).
class Store {
 public:
  // Opens (creating if needed) the database at `path`. Without `durable`,
  // a write survives a crash of the process but not of the machine (WAL with
  // synchronous=NORMAL): for data that may lose its last seconds.
  // A write waits at most `busy_timeout_ms` for another connection's write
  // lock (the metric history's, or an operator's sqlite3 shell) before it
  // fails.
  static absl::StatusOr<std::unique_ptr<Store>> Open(
      const std::string& path, bool durable = true, int busy_timeout_ms = 5000);
  ~Store();

  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Every change of `batch` in one transaction, or none.
  absl::Status Write(const StoreBatch& batch);

  absl::Status PutJob(const v1::Job& job);
  // All of `jobs` in one transaction, or none.
  absl::Status PutJobs(const std::vector<v1::Job>& jobs);
  // Every job, in submission order.
  absl::StatusOr<std::vector<v1::Job>> LoadJobs();

  // The audit trail, newest first: records at or after `since_ms`, at most
  // `limit`.
  absl::StatusOr<std::vector<v1::AuditRecord>> LoadAudit(int64_t since_ms,
                                                         int limit);
  absl::Status PutNode(const v1::Node& node);
  absl::StatusOr<std::vector<v1::Node>> LoadNodes();

  // Replaces the stored fair-share usage with `usage`, in one transaction.
  absl::Status PutUsage(const Usage& usage);
  // The usage last put; empty (as_of_ms 0) when none was.
  absl::StatusOr<Usage> LoadUsage();

  // Job metric history (coordinator/metric_history.h): replaces the given
  // series (by job and key) and offsets in one transaction.
  absl::Status PutMetrics(
      const std::vector<std::pair<std::string, v1::MetricSeries>>& series,
      const std::vector<MetricsOffsetRecord>& offsets);
  // Every series of one job.
  absl::StatusOr<std::vector<v1::MetricSeries>> LoadMetricSeries(
      const std::string& job_id);
  absl::StatusOr<std::vector<MetricsOffsetRecord>> LoadMetricsOffsets();

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  // The statements of a transaction that Write has begun.
  absl::Status WriteJobs(const std::vector<v1::Job>& jobs);
  absl::Status WriteNodes(const std::vector<v1::Node>& nodes);
  absl::Status WriteUsage(const Usage& usage);
  absl::Status WriteAudit(const std::vector<v1::AuditRecord>& records);
  absl::Status PruneAudit(int64_t before_ms);

  sqlite3* db_;
};

// The number in a job id "j-42", or -1 when `id` is not one.
int64_t JobSeq(const std::string& id);

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_STORE_H_
