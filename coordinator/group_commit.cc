#include "coordinator/group_commit.h"

#include <iterator>

#include "common/logging.h"

namespace dcvlr {

GroupCommit::GroupCommit(Store* store, absl::Mutex* mu, OnWritten on_written)
    : store_(store), mu_(mu), on_written_(std::move(on_written)) {
  writer_ = std::thread([this] { WriterLoop(); });
}

GroupCommit::~GroupCommit() { Stop(); }

void GroupCommit::Stop() {
  if (!writer_.joinable()) return;
  {
    absl::MutexLock lock(mu_);
    stopping_ = true;  // the writer writes what is pending, once, and ends
  }
  writer_.join();
}

void GroupCommit::Job(const v1::Job& job) {
  pending_.jobs[JobSeq(job.id())] = job;
}

void GroupCommit::Submitted(std::vector<v1::Job> jobs,
                            std::optional<v1::AuditRecord> audit) {
  pending_.submitted.insert(pending_.submitted.end(),
                            std::make_move_iterator(jobs.begin()),
                            std::make_move_iterator(jobs.end()));
  if (audit) pending_.submitted_audit.push_back(*std::move(audit));
}

void GroupCommit::Node(const v1::Node& node) {
  pending_.nodes[node.name()] = node;
}

void GroupCommit::SetUsage(Usage usage) { pending_.usage = std::move(usage); }

void GroupCommit::Audit(v1::AuditRecord record) {
  pending_.audit.push_back(std::move(record));
}

void GroupCommit::PruneAudit(int64_t before_ms) {
  pending_.prune_audit_before_ms = before_ms;
}

void GroupCommit::Send(std::shared_ptr<AgentChannel> channel,
                       v1::CoordinatorMessage message) {
  if (channel == nullptr) return;
  pending_.orders.emplace_back(std::move(channel), std::move(message));
}

GroupCommit::Ticket GroupCommit::TakeTicket(bool retry) {
  if (pending_.empty()) return {nullptr, absl::OkStatus()};
  if (!error_.ok() && !retry) return {nullptr, error_};
  if (retry) retry_requested_ = true;
  if (pending_.outcome == nullptr)
    pending_.outcome = std::make_shared<Outcome>();
  return {pending_.outcome, absl::OkStatus()};
}

absl::Status GroupCommit::Await(const Ticket& ticket) {
  if (ticket.outcome == nullptr) return ticket.now;
  ticket.outcome->done.wait(0);
  return ticket.outcome->status;
}

void GroupCommit::WriterLoop() {
  absl::MutexLock lock(mu_);
  auto work = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return stopping_ ||
           (!pending_.empty() && (error_.ok() || retry_requested_));
  };
  for (;;) {
    mu_->Await(absl::Condition(&work));
    if (pending_.empty()) return;  // stopping, nothing left to write
    const bool last = stopping_;
    retry_requested_ = false;

    // Everything pending becomes one transaction.
    Batch batch = std::exchange(pending_, Batch());
    StoreBatch write;
    write.jobs.reserve(batch.jobs.size() + batch.submitted.size());
    for (auto& [seq, job] : batch.jobs) write.jobs.push_back(std::move(job));
    const size_t changed_jobs = write.jobs.size();
    for (auto& job : batch.submitted) write.jobs.push_back(std::move(job));
    for (auto& [name, node] : batch.nodes)
      write.nodes.push_back(std::move(node));
    write.usage = std::move(batch.usage);
    write.audit = std::move(batch.audit);
    const size_t kept_audit = write.audit.size();
    write.prune_audit_before_ms = batch.prune_audit_before_ms;
    write.audit.insert(write.audit.end(),
                       std::make_move_iterator(batch.submitted_audit.begin()),
                       std::make_move_iterator(batch.submitted_audit.end()));

    mu_->Unlock();
    const absl::Status status = store_->Write(write);
    mu_->Lock();
    VLOG(1) << "store batch: " << write.jobs.size() << " jobs ("
            << write.jobs.size() - changed_jobs << " submitted), "
            << write.nodes.size() << " nodes, " << batch.orders.size()
            << " orders: " << status;

    std::vector<v1::Job> submitted(
        std::make_move_iterator(write.jobs.begin() + changed_jobs),
        std::make_move_iterator(write.jobs.end()));
    on_written_(submitted, status.ok());
    if (status.ok()) {
      if (!error_.ok()) {
        LOG(WARNING) << "state store writable again";
        error_ = absl::OkStatus();
      }
      // In the order they were queued, before anything queued later.
      for (auto& [channel, message] : batch.orders) channel->Send(message);
    } else {
      if (error_.ok()) {
        LOG(ERROR) << "state store write failed, read-only until a write "
                      "succeeds: "
                   << status;
      }
      error_ = status;
      Restore(write, changed_jobs, kept_audit, batch);
    }
    if (batch.outcome != nullptr) {
      batch.outcome->status = status;
      batch.outcome->done.store(1);
      batch.outcome->done.notify_all();
    }
    if (last) return;
  }
}

void GroupCommit::Restore(StoreBatch& write, size_t changed_jobs,
                          size_t kept_audit, Batch& batch) {
  // Later changes of a record win; the failed batch's orders stay first.
  for (size_t i = 0; i < changed_jobs; ++i) {
    pending_.jobs.try_emplace(JobSeq(write.jobs[i].id()),
                              std::move(write.jobs[i]));
  }
  for (v1::Node& node : write.nodes) {
    pending_.nodes.try_emplace(node.name(), std::move(node));
  }
  if (!pending_.usage) pending_.usage = std::move(write.usage);
  if (!pending_.prune_audit_before_ms) {
    pending_.prune_audit_before_ms = write.prune_audit_before_ms;
  }
  // Audit records keep their order: the failed batch's come first. Those
  // of dropped submissions go with them.
  write.audit.resize(kept_audit);
  write.audit.insert(write.audit.end(),
                     std::make_move_iterator(pending_.audit.begin()),
                     std::make_move_iterator(pending_.audit.end()));
  pending_.audit = std::move(write.audit);
  batch.orders.insert(batch.orders.end(),
                      std::make_move_iterator(pending_.orders.begin()),
                      std::make_move_iterator(pending_.orders.end()));
  pending_.orders = std::move(batch.orders);
}

}  // namespace dcvlr
