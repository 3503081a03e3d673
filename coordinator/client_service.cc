#include <map>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/names.h"
#include "coordinator/services.h"
#include "coordinator/store.h"

namespace dcvlr {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbers.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

namespace {

// What everyone may see of another user's job, as squeue shows it: id,
// name, user, state, resources, times and reasons; not its command, env,
// paths, events or attempts.
v1::Job Public(const v1::Job& job) {
  v1::Job out;
  out.set_id(job.id());
  out.set_user(job.user());
  out.mutable_spec()->set_name(job.spec().name());
  out.mutable_spec()->set_kind(job.spec().kind());
  out.mutable_spec()->set_priority(job.spec().priority());
  *out.mutable_spec()->mutable_resources() = job.spec().resources();
  out.mutable_spec()->set_time_limit_s(job.spec().time_limit_s());
  out.set_state(job.state());
  out.set_attempt(job.attempt());
  out.set_exit_code(job.exit_code());
  out.set_reason(job.reason());
  out.set_submit_time_ms(job.submit_time_ms());
  out.set_end_time_ms(job.end_time_ms());
  out.set_not_before_ms(job.not_before_ms());
  out.set_version(job.version());
  out.set_cancel_requested(job.cancel_requested());
  out.set_redacted(true);
  return out;
}

}  // namespace

absl::StatusOr<Principal> ClientServiceImpl::Caller(
    grpc::ServerContext* context, const std::string& claimed_user) {
  absl::StatusOr<Principal> who = auth_->Authenticate(*context, claimed_user);
  if (!who.ok()) {
    LOG(WARNING) << "call from " << context->peer()
                 << " refused: " << who.status();
    return who.status();
  }
  who->admin = who->admin || core_->IsAdmin(*who);
  return who;
}

v1::Job ClientServiceImpl::Visible(const Principal& who, v1::Job job) {
  return who.Owns(job.user()) ? job : Public(job);
}

grpc::Status ClientServiceImpl::SubmitJob(grpc::ServerContext* context,
                                          const v1::SubmitJobRequest* request,
                                          v1::SubmitJobResponse* response) {
  absl::StatusOr<Principal> who = Caller(context, request->user());
  if (!who.ok()) {
    if (request->dry_run()) return Reply(who.status());
    return RefuseChange(context, who, "submit", request->source_name(),
                        who.status());
  }
  JobFileOptions options;
  options.nodes = request->nodes();
  options.gpus_per_node = request->gpus_per_node();
  options.submit_dir = request->submit_dir();
  absl::StatusOr<SubmitResult> result =
      core_->SubmitFile(*who, request->source_name(), request->source(),
                        request->dry_run(), options);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response->mutable_job() = result->jobs.front();
  for (v1::Job& job : result->jobs) *response->add_jobs() = std::move(job);
  for (std::string& warning : result->warnings) {
    response->add_warnings(std::move(warning));
  }
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::GetJob(grpc::ServerContext* context,
                                       const v1::GetJobRequest* request,
                                       v1::Job* response) {
  absl::StatusOr<Principal> who = Caller(context);
  if (!who.ok()) return Reply(who.status());
  absl::StatusOr<v1::Job> job = core_->GetJob(request->job(), who->user);
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = Visible(*who, *std::move(job));
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::ListJobs(grpc::ServerContext* context,
                                         const v1::ListJobsRequest* request,
                                         v1::ListJobsResponse* response) {
  absl::StatusOr<Principal> who = Caller(context);
  if (!who.ok()) return Reply(who.status());
  if (!request->page_token().empty() && JobSeq(request->page_token()) < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_token: not a job id: " + request->page_token());
  }
  // A reply stays well under gRPC's 4 MiB message limit, however large
  // the jobs: the rest is a page away.
  constexpr size_t kMaxReplyBytes = 3 * 1024 * 1024;
  for (v1::Job& job : core_->ListJobs(
           *request, response->mutable_next_page_token(), kMaxReplyBytes)) {
    *response->add_jobs() = Visible(*who, std::move(job));
  }
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::CancelJob(grpc::ServerContext* context,
                                          const v1::CancelJobRequest* request,
                                          v1::Job* response) {
  absl::StatusOr<Principal> who = Caller(context, request->user());
  if (!who.ok()) {
    return RefuseChange(context, who, "cancel", request->job(), who.status());
  }
  absl::StatusOr<v1::Job> job = core_->Cancel(request->job(), *who);
  if (!job.ok()) return Reply(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::WatchJob(grpc::ServerContext* context,
                                         const v1::WatchJobRequest* request,
                                         grpc::ServerWriter<v1::Job>* writer) {
  absl::StatusOr<Principal> who = Caller(context);
  if (!who.ok()) return Reply(who.status());
  absl::StatusOr<v1::Job> job = core_->GetJob(request->job(), who->user);
  if (!job.ok()) return ToGrpcStatus(job.status());
  const std::string id = job->id();
  int64_t version = -1;
  while (!Done(context)) {
    if (job->version() > version) {
      version = job->version();
      if (!writer->Write(Visible(*who, *job))) break;
      if (IsTerminal(job->state())) break;
    }
    job = core_->AwaitChange(id, version, absl::Milliseconds(500));
    if (!job.ok()) return ToGrpcStatus(job.status());
  }
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::NotYours(const Principal& who,
                                         const v1::Job& job, const char* what) {
  return Reply(absl::PermissionDeniedError(
      absl::StrCat("job ", job.id(), " is ", job.user(), "'s; ", who.user,
                   " may read the ", what, " of their own jobs only")));
}

grpc::Status ClientServiceImpl::RefuseChange(
    grpc::ServerContext* context, const absl::StatusOr<Principal>& who,
    const std::string& action, const std::string& target,
    const absl::Status& status) {
  Principal unknown;
  unknown.peer = context->peer();
  core_->Audit(
      MakeAuditRecord(who.ok() ? *who : unknown, action, target, status));
  return Reply(status);
}

grpc::Status ClientServiceImpl::ListAudit(grpc::ServerContext* context,
                                          const v1::ListAuditRequest* request,
                                          v1::ListAuditResponse* response) {
  absl::StatusOr<Principal> who = Caller(context);
  if (!who.ok()) return Reply(who.status());
  if (!who->admin) {
    return Reply(absl::PermissionDeniedError(
        absl::StrCat(who->user,
                     " is not an admin: the audit trail is for the cluster "
                     "config's admins")));
  }
  if (audit_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no audit trail");
  }
  const int limit =
      request->limit() > 0 ? std::min(request->limit(), 100000) : 1000;
  absl::StatusOr<std::vector<v1::AuditRecord>> records;
  {
    absl::MutexLock lock(&audit_mu_);
    records = audit_->LoadAudit(request->since_ms(), limit);
  }
  if (!records.ok()) return ToGrpcStatus(records.status());
  for (v1::AuditRecord& r : *records) *response->add_records() = std::move(r);
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::Reply(const absl::Status& status) {
  if (observer_ != nullptr &&
      (status.code() == absl::StatusCode::kUnauthenticated ||
       status.code() == absl::StatusCode::kPermissionDenied)) {
    observer_->OnClientRefused(status);
  }
  return ToGrpcStatus(status);
}

grpc::Status ClientServiceImpl::StreamLogs(
    grpc::ServerContext* context, const v1::StreamLogsRequest* request,
    grpc::ServerWriter<v1::LogData>* writer) {
  absl::StatusOr<Principal> who = Caller(context);
  if (!who.ok()) return Reply(who.status());
  absl::StatusOr<v1::Job> job = core_->GetJob(request->job(), who->user);
  if (!job.ok()) return ToGrpcStatus(job.status());
  if (!who->Owns(job->user())) return NotYours(*who, *job, "logs");
  // Following a job that has not started yet waits for its first attempt.
  while (request->follow() && job->attempt() < 1 && !IsTerminal(job->state()) &&
         !Done(context)) {
    job =
        core_->AwaitChange(job->id(), job->version(), absl::Milliseconds(500));
    if (!job.ok()) return ToGrpcStatus(job.status());
  }
  const int attempt =
      request->attempt() > 0 ? request->attempt() : job->attempt();
  if (attempt < 1 || attempt > job->attempt()) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        attempt < 1
            ? absl::StrCat("job ", job->id(), " has not started yet")
            : absl::StrCat("job ", job->id(), " has no attempt ", attempt));
  }
  constexpr int64_t kChunk = 64 * 1024;
  std::map<int, int64_t> sent;
  while (true) {
    // Whether the attempt is over must be read before the logs: what the
    // agents sent before reporting the exit is then already on disk.
    absl::StatusOr<v1::Job> now = core_->GetJob(job->id());
    if (!now.ok()) return ToGrpcStatus(now.status());
    const bool over = now->attempt() != attempt || IsTerminal(now->state()) ||
                      now->state() == v1::JOB_STATE_PENDING;
    bool wrote = false;
    for (const auto& [rank, size] : logs_->Sizes(job->id(), attempt)) {
      if (request->rank() >= 0 && rank != request->rank()) continue;
      while (sent[rank] < size) {
        absl::StatusOr<std::string> data =
            logs_->Read(job->id(), attempt, rank, sent[rank], kChunk);
        if (!data.ok()) return ToGrpcStatus(data.status());
        if (data->empty()) break;
        v1::LogData out;
        out.set_rank(rank);
        out.set_attempt(attempt);
        sent[rank] += static_cast<int64_t>(data->size());
        out.set_data(*std::move(data));
        if (!writer->Write(out)) return grpc::Status::OK;
        wrote = true;
      }
    }
    if (!request->follow() || over || Done(context)) break;
    if (!wrote) logs_->AwaitAppend(absl::Milliseconds(500));
  }
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::ListNodes(grpc::ServerContext* context,
                                          const v1::ListNodesRequest*,
                                          v1::ListNodesResponse* response) {
  absl::StatusOr<Principal> who = Caller(context);
  if (!who.ok()) return Reply(who.status());
  for (v1::Node& node : core_->ListNodes()) {
    *response->add_nodes() = std::move(node);
  }
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::DrainNode(grpc::ServerContext* context,
                                          const v1::DrainNodeRequest* request,
                                          v1::Node* response) {
  absl::StatusOr<Principal> who = Caller(context);
  const std::string action =
      request->drain() ? (request->evict() ? "drain --evict" : "drain")
                       : "undrain";
  if (!who.ok()) {
    return RefuseChange(context, who, action, request->node(), who.status());
  }
  if (!who->admin) {
    return RefuseChange(context, who, action, request->node(),
                        absl::PermissionDeniedError(absl::StrCat(
                            who->user,
                            " is not an admin: draining, undraining and "
                            "evicting are for the cluster config's admins")));
  }
  absl::StatusOr<v1::Node> node = core_->SetDrained(
      request->node(), request->drain(), request->evict(), *who);
  if (!node.ok()) return ToGrpcStatus(node.status());
  *response = *std::move(node);
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::GetQueue(grpc::ServerContext* context,
                                         const v1::GetQueueRequest*,
                                         v1::GetQueueResponse* response) {
  absl::StatusOr<Principal> who = Caller(context);
  if (!who.ok()) return Reply(who.status());
  *response = core_->Queue();
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::GetJobMetrics(
    grpc::ServerContext* context, const v1::GetJobMetricsRequest* request,
    v1::GetJobMetricsResponse* response) {
  absl::StatusOr<Principal> who = Caller(context);
  if (!who.ok()) return Reply(who.status());
  absl::StatusOr<v1::Job> job = core_->GetJob(request->job(), who->user);
  if (!job.ok()) return ToGrpcStatus(job.status());
  if (!who->Owns(job->user())) return NotYours(*who, *job, "metrics");
  absl::StatusOr<v1::GetJobMetricsResponse> history =
      metrics_->Get(job->id(), {request->keys().begin(), request->keys().end()},
                    request->latest_only());
  if (!history.ok()) return ToGrpcStatus(history.status());
  *response = *std::move(history);
  return grpc::Status::OK;
}

}  // namespace dcvlr
