// The coordinator's gRPC services. Each RPC is thin: it validates the
// request, calls the Core, and converts the absl::Status into a gRPC status.
#ifndef DCVLR_COORDINATOR_SERVICES_H_
#define DCVLR_COORDINATOR_SERVICES_H_

#include <atomic>

#include "coordinator/core.h"
#include "coordinator/log_store.h"
#include "coordinator/metric_history.h"
#include "dcvlr/v1/agent.grpc.pb.h"
#include "dcvlr/v1/client.grpc.pb.h"

namespace dcvlr {

// The one place where absl status codes become gRPC ones.
grpc::Status ToGrpcStatus(const absl::Status& status);

class ClientServiceImpl final : public v1::ClientService::Service {
 public:
  ClientServiceImpl(Core* core, LogStore* logs, MetricHistory* metrics)
      : core_(core), logs_(logs), metrics_(metrics) {}

  // Makes streaming calls (WatchJob, StreamLogs) return soon.
  void Shutdown() { shutting_down_ = true; }

  grpc::Status SubmitJob(grpc::ServerContext* context,
                         const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override;
  grpc::Status GetJob(grpc::ServerContext* context,
                      const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context,
                        const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context,
                         const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context,
                        const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::Job>* writer) override;
  grpc::Status StreamLogs(grpc::ServerContext* context,
                          const v1::StreamLogsRequest* request,
                          grpc::ServerWriter<v1::LogData>* writer) override;
  grpc::Status ListNodes(grpc::ServerContext* context,
                         const v1::ListNodesRequest* request,
                         v1::ListNodesResponse* response) override;
  grpc::Status DrainNode(grpc::ServerContext* context,
                         const v1::DrainNodeRequest* request,
                         v1::Node* response) override;
  grpc::Status GetQueue(grpc::ServerContext* context,
                        const v1::GetQueueRequest* request,
                        v1::GetQueueResponse* response) override;
  grpc::Status GetJobMetrics(grpc::ServerContext* context,
                             const v1::GetJobMetricsRequest* request,
                             v1::GetJobMetricsResponse* response) override;

 private:
  bool Done(grpc::ServerContext* context) const {
    return shutting_down_ || context->IsCancelled();
  }

  Core* const core_;
  LogStore* const logs_;
  MetricHistory* const metrics_;
  std::atomic<bool> shutting_down_{false};
};

class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  AgentServiceImpl(Core* core, LogStore* logs, MetricHistory* metrics)
      : core_(core), logs_(logs), metrics_(metrics) {}

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::AgentMessage>*
          stream) override;

 private:
  Core* const core_;
  LogStore* const logs_;
  MetricHistory* const metrics_;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_SERVICES_H_
