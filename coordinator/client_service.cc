#include <map>

#include "absl/strings/str_cat.h"
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

grpc::Status ClientServiceImpl::SubmitJob(grpc::ServerContext*,
                                          const v1::SubmitJobRequest* request,
                                          v1::SubmitJobResponse* response) {
  JobFileOptions options;
  options.nodes = request->nodes();
  options.gpus_per_node = request->gpus_per_node();
  options.submit_dir = request->submit_dir();
  absl::StatusOr<SubmitResult> result =
      core_->SubmitFile(request->user(), request->source_name(),
                        request->source(), request->dry_run(), options);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response->mutable_job() = result->jobs.front();
  for (v1::Job& job : result->jobs) *response->add_jobs() = std::move(job);
  for (std::string& warning : result->warnings) {
    response->add_warnings(std::move(warning));
  }
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::GetJob(grpc::ServerContext*,
                                       const v1::GetJobRequest* request,
                                       v1::Job* response) {
  absl::StatusOr<v1::Job> job = core_->GetJob(request->job());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::ListJobs(grpc::ServerContext*,
                                         const v1::ListJobsRequest* request,
                                         v1::ListJobsResponse* response) {
  if (!request->page_token().empty() && JobSeq(request->page_token()) < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_token: not a job id: " + request->page_token());
  }
  // A reply stays well under gRPC's 4 MiB message limit, however large
  // the jobs: the rest is a page away.
  constexpr size_t kMaxReplyBytes = 3 * 1024 * 1024;
  for (v1::Job& job : core_->ListJobs(
           *request, response->mutable_next_page_token(), kMaxReplyBytes)) {
    *response->add_jobs() = std::move(job);
  }
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::CancelJob(grpc::ServerContext*,
                                          const v1::CancelJobRequest* request,
                                          v1::Job* response) {
  if (request->user().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no user given");
  }
  absl::StatusOr<v1::Job> job = core_->Cancel(request->job(), request->user());
  if (!job.ok()) return ToGrpcStatus(job.status());
  *response = *std::move(job);
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::WatchJob(grpc::ServerContext* context,
                                         const v1::WatchJobRequest* request,
                                         grpc::ServerWriter<v1::Job>* writer) {
  absl::StatusOr<v1::Job> job = core_->GetJob(request->job());
  if (!job.ok()) return ToGrpcStatus(job.status());
  const std::string id = job->id();
  int64_t version = -1;
  while (!Done(context)) {
    if (job->version() > version) {
      version = job->version();
      if (!writer->Write(*job)) break;
      if (IsTerminal(job->state())) break;
    }
    job = core_->AwaitChange(id, version, absl::Milliseconds(500));
    if (!job.ok()) return ToGrpcStatus(job.status());
  }
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::StreamLogs(
    grpc::ServerContext* context, const v1::StreamLogsRequest* request,
    grpc::ServerWriter<v1::LogData>* writer) {
  absl::StatusOr<v1::Job> job = core_->GetJob(request->job());
  if (!job.ok()) return ToGrpcStatus(job.status());
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

grpc::Status ClientServiceImpl::ListNodes(grpc::ServerContext*,
                                          const v1::ListNodesRequest*,
                                          v1::ListNodesResponse* response) {
  for (v1::Node& node : core_->ListNodes()) {
    *response->add_nodes() = std::move(node);
  }
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::DrainNode(grpc::ServerContext*,
                                          const v1::DrainNodeRequest* request,
                                          v1::Node* response) {
  absl::StatusOr<v1::Node> node =
      core_->SetDrained(request->node(), request->drain(), request->evict());
  if (!node.ok()) return ToGrpcStatus(node.status());
  *response = *std::move(node);
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::GetQueue(grpc::ServerContext*,
                                         const v1::GetQueueRequest*,
                                         v1::GetQueueResponse* response) {
  *response = core_->Queue();
  return grpc::Status::OK;
}

grpc::Status ClientServiceImpl::GetJobMetrics(
    grpc::ServerContext*, const v1::GetJobMetricsRequest* request,
    v1::GetJobMetricsResponse* response) {
  absl::StatusOr<v1::Job> job = core_->GetJob(request->job());
  if (!job.ok()) return ToGrpcStatus(job.status());
  absl::StatusOr<v1::GetJobMetricsResponse> history =
      metrics_->Get(job->id(), {request->keys().begin(), request->keys().end()},
                    request->latest_only());
  if (!history.ok()) return ToGrpcStatus(history.status());
  *response = *std::move(history);
  return grpc::Status::OK;
}

}  // namespace dcvlr
