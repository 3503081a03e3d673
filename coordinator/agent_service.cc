#include <chrono>
#include <deque>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "common/tls.h"
#include "coordinator/services.h"

namespace dcvlr {
namespace {

// Sends a stream's outgoing messages from a thread of its own, so that the
// core never blocks on a slow agent. gRPC allows one Write alongside the
// handler's Read.
class StreamChannel final : public AgentChannel {
 public:
  StreamChannel(grpc::ServerContext* context,
                grpc::ServerReaderWriter<v1::CoordinatorMessage,
                                         v1::AgentMessage>* stream)
      : context_(context), stream_(stream), writer_([this] { WriteLoop(); }) {}

  ~StreamChannel() override { Finish(); }

  void Send(const v1::CoordinatorMessage& message) override {
    absl::MutexLock lock(&mu_);
    if (!closed_) queue_.push_back(message);
  }

  // Ends the stream: the handler's Read() returns false. A no-op once the
  // handler has finished (the context is gone then).
  void Close() override {
    absl::MutexLock lock(&mu_);
    if (!closed_) context_->TryCancel();
  }

  // Stops the writer; called by the handler before it returns.
  void Finish() {
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
    }
    if (writer_.joinable()) writer_.join();
  }

 private:
  void WriteLoop() {
    while (true) {
      v1::CoordinatorMessage message;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
          return closed_ || !queue_.empty();
        };
        mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;  // closed and drained
        message = std::move(queue_.front());
        queue_.pop_front();
      }
      if (!stream_->Write(message)) {
        context_->TryCancel();
        absl::MutexLock lock(&mu_);
        closed_ = true;
        queue_.clear();
        return;
      }
    }
  }

  grpc::ServerContext* const context_;
  grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::AgentMessage>* const
      stream_;
  absl::Mutex mu_;
  std::deque<v1::CoordinatorMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread writer_;
};

// "ipv4:127.0.0.1:5000" -> "127.0.0.1"; "ipv6:[::1]:5000" -> "::1".
std::string PeerHost(const std::string& peer) {
  std::string rest = peer;
  if (size_t colon = rest.find(':');
      colon != std::string::npos &&
      (absl::StartsWith(rest, "ipv4:") || absl::StartsWith(rest, "ipv6:"))) {
    rest = rest.substr(colon + 1);
  }
  if (!rest.empty() && rest[0] == '[') {
    size_t end = rest.find(']');
    return end == std::string::npos ? rest : rest.substr(1, end - 1);
  }
  size_t colon = rest.rfind(':');
  return colon == std::string::npos ? rest : rest.substr(0, colon);
}

}  // namespace

absl::Status AgentServiceImpl::CheckIdentity(const grpc::ServerContext& context,
                                             const std::string& name) {
  if (!require_certificate_) return absl::OkStatus();
  const std::optional<PeerCertificate> cert =
      PeerCertificateOf(*context.auth_context());
  const char* reason = nullptr;
  absl::Status status;
  if (!cert.has_value()) {
    reason = "no_certificate";
    status = absl::UnauthenticatedError(
        "an agent must present its node certificate (--tls-cert/--tls-key, "
        "signed by the cluster CA)");
  } else if (cert->role != CertRole::kNode) {
    reason = "wrong_certificate";
    status = absl::UnauthenticatedError(
        absl::StrCat("the certificate of CN=", cert->common_name, " is a ",
                     cert->role ? CertRoleName(*cert->role) : "foreign",
                     " certificate, not a node's (OU=dcvlr-node)"));
  } else if (cert->common_name != name) {
    reason = "name_mismatch";
    status = absl::PermissionDeniedError(
        absl::StrCat("the node certificate is for ", cert->common_name,
                     ": it cannot register as node ", name));
  } else {
    return absl::OkStatus();
  }
  if (observer_ != nullptr) observer_->OnRegistrationRefused(reason);
  return status;
}

void AgentServiceImpl::Refuse(const std::string& node, const char* what,
                              const absl::Status& status) {
  if (status.ok()) return;
  const char* reason =
      status.code() == absl::StatusCode::kNotFound           ? "unknown_attempt"
      : status.code() == absl::StatusCode::kOutOfRange       ? "bad_offset"
      : status.code() == absl::StatusCode::kPermissionDenied ? "not_placed_here"
                                                             : nullptr;
  LOG(WARNING) << "node=" << node << " " << what << " refused: " << status;
  if (reason != nullptr && observer_ != nullptr) {
    observer_->OnAgentMessageRefused(node, reason);
  }
}

grpc::Status AgentServiceImpl::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::AgentMessage>*
        stream) {
  v1::AgentMessage first;
  if (!stream->Read(&first) || !first.has_register_()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message must be a RegisterRequest");
  }
  const std::string name = first.register_().name();
  Principal agent;
  agent.user = "node:" + name;
  agent.method = require_certificate_ ? "certificate" : "claimed";
  agent.peer = context->peer();
  if (absl::Status s = CheckIdentity(*context, name); !s.ok()) {
    LOG(WARNING) << "registration as node=" << name << " from "
                 << context->peer() << " refused: " << s;
    core_->Audit(MakeAuditRecord(agent, "register", name, s));
    return ToGrpcStatus(s);
  }
  auto channel = std::make_shared<StreamChannel>(context, stream);
  absl::StatusOr<int64_t> session = core_->RegisterAgent(
      first.register_(), PeerHost(context->peer()), channel);
  if (!session.ok()) {
    channel->Finish();
    LOG(WARNING) << "registration as node=" << name << " from "
                 << context->peer() << " refused: " << session.status();
    if (observer_ != nullptr &&
        session.status().code() == absl::StatusCode::kAlreadyExists) {
      observer_->OnRegistrationRefused("duplicate");
    }
    core_->Audit(MakeAuditRecord(agent, "register", name, session.status()));
    return ToGrpcStatus(session.status());
  }
  core_->Audit(MakeAuditRecord(agent, "register", name, absl::OkStatus()));
  LOG(INFO) << "node=" << name << " connected session=" << *session;

  v1::AgentMessage message;
  auto last_activity = std::chrono::steady_clock::time_point();
  while (stream->Read(&message)) {
    switch (message.msg_case()) {
      case v1::AgentMessage::kHeartbeat:
        core_->OnHeartbeat(name, *session);
        break;
      case v1::AgentMessage::kUpdate:
        Refuse(name, "update",
               core_->OnAttemptUpdate(name, *session, message.update()));
        break;
      case v1::AgentMessage::kLog: {
        const v1::LogChunk& chunk = message.log();
        absl::Status s = core_->CheckPlaced(name, chunk.job_id(),
                                            chunk.attempt(), chunk.rank());
        if (s.ok()) {
          s = logs_->Append(chunk.job_id(), chunk.attempt(), chunk.rank(),
                            chunk.offset(), chunk.data());
        }
        Refuse(name, "log chunk", s);
        core_->OnActivity(name, *session);
        break;
      }
      case v1::AgentMessage::kMetrics: {
        const v1::MetricBatch& batch = message.metrics();
        absl::Status s =
            core_->CheckPlaced(name, batch.job_id(), batch.attempt());
        if (s.ok()) s = metrics_->Ingest(batch).status();
        if (!s.ok()) {
          Refuse(name, "metrics", s);
          break;
        }
        // A sign of life, but heartbeats come every second anyway: taking
        // the core's lock for each of thousands of batches a second would
        // only contend with the scheduler (seen in a profile).
        const auto now = std::chrono::steady_clock::now();
        if (now - last_activity > std::chrono::milliseconds(250)) {
          last_activity = now;
          core_->OnActivity(name, *session);
        }
        break;
      }
      default:
        break;
    }
  }
  core_->OnAgentDisconnected(name, *session);
  channel->Finish();
  LOG(INFO) << "node=" << name << " disconnected session=" << *session;
  return grpc::Status::OK;
}

}  // namespace dcvlr
