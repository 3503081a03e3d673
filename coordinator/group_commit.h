// Group commit of the coordinator's changes, in the manner of LevelDB's
// writer queue: callers record changes in the pending batch under the
// core's mutex; one writer thread takes the whole batch — every change made
// since its last write, by any thread — and writes it in one SQLite
// transaction with the mutex released, while later changes gather in the
// next batch. Orders to agents ride in the batch of the change that calls
// for them and leave only once it is durable, so an agent never acts on a
// change a crash could undo.
//
// A failed write is sticky (LevelDB's bg_error_): the batch is kept (later
// changes of the same record win, its orders stay first in line), error()
// reports it, and nothing is written again until a caller asks for a retry
// (TakeTicket(true)). Submitted jobs of a failed batch are dropped: their
// submit is refused, so they never became anyone's job.
//
// Thread-safety: every method but the constructor, Stop() and Await()
// requires the mutex given to the constructor.
#ifndef DCVLR_COORDINATOR_GROUP_COMMIT_H_
#define DCVLR_COORDINATOR_GROUP_COMMIT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/agent_channel.h"
#include "coordinator/store.h"

namespace dcvlr {

class GroupCommit {
 public:
  // Called by the writer under *mu once a batch's write is done (`ok`) or
  // has failed, with the batch's submitted jobs (moved from: a successful
  // write's jobs are the caller's to keep), before its orders leave.
  using OnWritten =
      std::function<void(std::vector<v1::Job>& submitted, bool ok)>;

  // Starts the writer. `store` and `mu` must outlive this object.
  GroupCommit(Store* store, absl::Mutex* mu, OnWritten on_written);
  // Stops the writer if Stop() was not called.
  ~GroupCommit();
  // Writes what is pending (one try) and stops the writer. Call without
  // the mutex.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // The latest record of a changed job (replacing an earlier one pending).
  void Job(const v1::Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Jobs of a submission, to be added to the store (not yet in the table),
  // and its audit record, which is dropped with them if the write fails.
  void Submitted(std::vector<v1::Job> jobs,
                 std::optional<v1::AuditRecord> audit = std::nullopt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Node(const v1::Node& node) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetUsage(Usage usage) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An entry of the audit trail, durable with the batch it joins.
  void Audit(v1::AuditRecord record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Audit records before `before_ms` go with the next batch.
  void PruneAudit(int64_t before_ms) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `message` leaves on `channel` (a null channel drops it) once the
  // pending batch, and every change recorded before this call, is durable.
  void Send(std::shared_ptr<AgentChannel> channel,
            v1::CoordinatorMessage message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // OK, or the last write's error while writes fail.
  absl::Status error() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return error_; }

  // A batch's outcome, for the callers that wait on it without the lock.
  struct Outcome {
    std::atomic<uint32_t> done{0};  // 1 once `status` is set
    absl::Status status;
  };
  // What a caller waits on, with the mutex released, for its changes to be
  // durable: the pending batch's outcome, or an answer known now (nothing
  // pending: OK; writes failing and no retry asked for: the error, the
  // changes kept).
  struct Ticket {
    std::shared_ptr<Outcome> outcome;
    absl::Status now;
  };
  // With `retry`, writes that fail are tried again.
  Ticket TakeTicket(bool retry = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits for the ticket's batch; call without the mutex.
  static absl::Status Await(const Ticket& ticket);

 private:
  struct Batch {
    std::map<int64_t, v1::Job> jobs;  // by seq: the latest record of each
    std::vector<v1::Job> submitted;
    std::map<std::string, v1::Node> nodes;
    std::optional<Usage> usage;
    std::vector<v1::AuditRecord> audit;
    std::vector<v1::AuditRecord> submitted_audit;
    std::optional<int64_t> prune_audit_before_ms;
    std::vector<
        std::pair<std::shared_ptr<AgentChannel>, v1::CoordinatorMessage>>
        orders;
    // Created by the first caller that waits on this batch.
    std::shared_ptr<Outcome> outcome;
    bool empty() const {
      return jobs.empty() && submitted.empty() && nodes.empty() && !usage &&
             audit.empty() && submitted_audit.empty() &&
             !prune_audit_before_ms && orders.empty();
    }
  };

  void WriterLoop();
  // A failed write's batch goes back in front of what gathered meanwhile.
  void Restore(StoreBatch& write, size_t changed_jobs, size_t kept_audit,
               Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Store* const store_;
  absl::Mutex* const mu_;
  const OnWritten on_written_;
  Batch pending_ ABSL_GUARDED_BY(mu_);
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool retry_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread writer_;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_GROUP_COMMIT_H_
