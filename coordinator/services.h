// The coordinator's gRPC services. Each RPC is thin: it validates the
// request, calls the Core, and converts the absl::Status into a gRPC status.
#ifndef DCVLR_COORDINATOR_SERVICES_H_
#define DCVLR_COORDINATOR_SERVICES_H_

#include <atomic>

#include "coordinator/auth.h"
#include "coordinator/core.h"
#include "coordinator/log_store.h"
#include "coordinator/metric_history.h"
#include "coordinator/service_observer.h"
#include "dcvlr/v1/agent.grpc.pb.h"
#include "dcvlr/v1/client.grpc.pb.h"

namespace dcvlr {

// The one place where absl status codes become gRPC ones.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Every call is authenticated (coordinator/auth.h) and authorized: a user
// reads everything of, and cancels, their own jobs only (admins: all);
// everyone sees the queue as squeue shows it (id, name, user, state,
// resources, times, reasons); draining and evicting are for admins.
class ClientServiceImpl final : public v1::ClientService::Service {
 public:
  // `audit` is a connection to the state database for reading the audit
  // trail (null: ListAudit is unavailable).
  ClientServiceImpl(Core* core, LogStore* logs, MetricHistory* metrics,
                    const Authenticator* auth,
                    ServiceObserver* observer = nullptr,
                    std::unique_ptr<Store> audit = nullptr)
      : core_(core),
        logs_(logs),
        metrics_(metrics),
        auth_(auth),
        observer_(observer),
        audit_(std::move(audit)) {}

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
  grpc::Status ListAudit(grpc::ServerContext* context,
                         const v1::ListAuditRequest* request,
                         v1::ListAuditResponse* response) override;

 private:
  bool Done(grpc::ServerContext* context) const {
    return shutting_down_ || context->IsCancelled();
  }
  // The authenticated caller, with its admin role.
  absl::StatusOr<Principal> Caller(grpc::ServerContext* context,
                                   const std::string& claimed_user = "");
  // The job as `who` may see it.
  static v1::Job Visible(const Principal& who, v1::Job job);
  grpc::Status NotYours(const Principal& who, const v1::Job& job,
                        const char* what);
  // `status` as a gRPC status, counted if it is a refusal.
  grpc::Status Reply(const absl::Status& status);
  // Audits a change refused before it reached the core (the caller could
  // not be authenticated, or is not allowed), and replies with it.
  grpc::Status RefuseChange(grpc::ServerContext* context,
                            const absl::StatusOr<Principal>& who,
                            const std::string& action,
                            const std::string& target,
                            const absl::Status& status);

  Core* const core_;
  LogStore* const logs_;
  MetricHistory* const metrics_;
  const Authenticator* const auth_;
  ServiceObserver* const observer_;
  absl::Mutex audit_mu_;
  const std::unique_ptr<Store> audit_ ABSL_PT_GUARDED_BY(audit_mu_);
  std::atomic<bool> shutting_down_{false};
};

// Agents' streams. With `require_certificate` (TLS), a stream may register
// only the node its certificate (OU=dcvlr-node) names. Reports, log chunks
// and metrics are taken only for attempts placed on the sending node, at
// offsets that leave no gap; anything else is refused, logged and counted.
class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  AgentServiceImpl(Core* core, LogStore* logs, MetricHistory* metrics,
                   bool require_certificate = false,
                   ServiceObserver* observer = nullptr)
      : core_(core),
        logs_(logs),
        metrics_(metrics),
        require_certificate_(require_certificate),
        observer_(observer) {}

  grpc::Status Connect(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::AgentMessage>*
          stream) override;

 private:
  absl::Status CheckIdentity(const grpc::ServerContext& context,
                             const std::string& name);
  // Logs and counts a refused message (nothing for OK).
  void Refuse(const std::string& node, const char* what,
              const absl::Status& status);

  Core* const core_;
  LogStore* const logs_;
  MetricHistory* const metrics_;
  const bool require_certificate_;
  ServiceObserver* const observer_;
};

}  // namespace dcvlr

#endif  // DCVLR_COORDINATOR_SERVICES_H_
