#include "worker/agent/agent.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/address.h"
#include "common/launch.h"
#include "common/logging.h"
#include "common/process_contract.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace dcvlr {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kLogChunkBytes = 64 * 1024;
// A metrics batch holds at most this many lines, read from at most this
// many bytes of the file.
constexpr int kMaxPointsPerBatch = 2000;
constexpr int64_t kMetricsReadBytes = 1024 * 1024;
// Log chunks and metric batches queued beyond this wait in their files.
constexpr size_t kSendQueueBytes = 8 * 1024 * 1024;
constexpr size_t kFinishedKept = 256;
// Grace given to processes when the lease runs out: the coordinator's node
// timeout must exceed the lease plus this.
constexpr double kLeaseStopGraceS = 2;

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The agent's environment without variables the process contract sets.
std::map<std::string, std::string> BaseEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry = *e;
    size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    std::string name = entry.substr(0, eq);
    if (!contract::IsContractVariable(name)) env[name] = entry.substr(eq + 1);
  }
  return env;
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  return static_cast<bool>(out.flush());
}

// The last non-empty line of a file (at most 300 bytes of it).
std::string LastLine(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = std::max<std::streamoff>(0, size - 4096);
  in.seekg(from);
  std::string tail(static_cast<size_t>(size - from), '\0');
  in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
  std::string line;
  std::istringstream lines(tail);
  for (std::string l; std::getline(lines, l);) {
    if (!absl::StripAsciiWhitespace(l).empty()) line = l;
  }
  if (line.size() > 300) line = line.substr(0, 300) + "...";
  return line;
}

bool Executable(const std::string& path) {
  return access(path.c_str(), X_OK) == 0;
}

}  // namespace

int PickFreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

Reachability ProbeTcp(const std::string& host_port, int timeout_ms) {
  std::string host = host_port, port;
  if (size_t colon = host_port.rfind(':'); colon != std::string::npos) {
    host = host_port.substr(0, colon);
    port = host_port.substr(colon + 1);
  }
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &result) != 0) {
    return Reachability::kUnreachable;
  }
  Reachability reach = Reachability::kUnreachable;
  int fd =
      socket(result->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    int rc = connect(fd, result->ai_addr, result->ai_addrlen);
    if (rc == 0) {
      reach = Reachability::kListening;
    } else if (errno == ECONNREFUSED) {
      reach = Reachability::kRefused;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (poll(&p, 1, timeout_ms) == 1) {
        int error = 0;
        socklen_t len = sizeof(error);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
        reach = error == 0              ? Reachability::kListening
                : error == ECONNREFUSED ? Reachability::kRefused
                                        : Reachability::kUnreachable;
      }
    }
    close(fd);
  }
  freeaddrinfo(result);
  return reach;
}

Agent::Agent(AgentOptions options) : options_(std::move(options)) {
  CleanUpPreviousLife();
  supervisor_ = std::make_unique<Supervisor>(
      options_.work_dir, [this](const AttemptExit& exit) { OnExit(exit); });
  last_contact_ms_ = SteadyMs();
}

void Agent::CleanUpPreviousLife() {
  std::error_code ec;
  const fs::path jobs = fs::path(options_.work_dir) / "jobs";
  int killed = 0;
  for (const auto& job : fs::directory_iterator(jobs, ec)) {
    for (const auto& attempt_dir : fs::directory_iterator(job.path(), ec)) {
      const std::string name = attempt_dir.path().filename().string();
      int attempt = 0;
      if (name.rfind("attempt-", 0) != 0 ||
          !absl::SimpleAtoi(name.substr(8), &attempt)) {
        continue;
      }
      bool had_pid_file = false;
      for (const auto& file : fs::directory_iterator(attempt_dir.path(), ec)) {
        if (file.path().extension() == ".pid") {
          had_pid_file = true;
          fs::remove(file.path(), ec);
        }
      }
      if (had_pid_file) {
        killed += SignalTaggedProcesses(options_.work_dir,
                                        job.path().filename().string(), attempt,
                                        SIGKILL);
      }
    }
  }
  if (killed > 0) {
    LOG(WARNING) << "node=" << options_.name << " killed " << killed
                 << (killed == 1 ? " process" : " processes")
                 << " left by a previous agent";
  }
}

Agent::~Agent() {
  shutting_down_ = true;
  wake_.notify_all();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  if (log_thread_.joinable()) log_thread_.join();
  if (lease_thread_.joinable()) lease_thread_.join();
  supervisor_.reset();
}

void Agent::Run() {
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
  log_thread_ = std::thread([this] { LogLoop(); });
  lease_thread_ = std::thread([this] { LeaseLoop(); });
  int64_t backoff_ms = 100;
  while (!shutting_down_) {
    const int64_t began = SteadyMs();
    Serve();
    if (shutting_down_) break;
    // A stream that lived a while earns a quick reconnect.
    if (SteadyMs() - began > 5000) backoff_ms = 100;
    std::unique_lock<std::mutex> lock(wake_mu_);
    wake_.wait_for(lock, std::chrono::milliseconds(backoff_ms),
                   [this] { return shutting_down_.load(); });
    backoff_ms = std::min<int64_t>(backoff_ms * 2, 1000);
  }
}

void Agent::Shutdown(double grace_s) {
  supervisor_->StopAll(grace_s, "agent shutting down");
  supervisor_->AwaitIdle(static_cast<int64_t>(grace_s * 1000) + 5000);
  FlushAllLogs();
  AwaitSent(5000);  // the last exits, logs and metrics
  shutting_down_ = true;
  {
    std::lock_guard<std::mutex> lock(stream_mu_);
    if (context_ != nullptr) context_->TryCancel();
  }
  wake_.notify_all();
}

void Agent::Serve() {
  grpc::ChannelArguments args;
  // Pings reveal a cut-off stream within a few seconds.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  const std::string address = ResolveAddress(options_.coordinator);
  auto channel = grpc::CreateCustomChannel(
      address,
      options_.credentials != nullptr ? options_.credentials
                                      : grpc::InsecureChannelCredentials(),
      args);
  auto stub = v1::AgentService::NewStub(channel);
  grpc::ClientContext context;
  auto stream = stub->Connect(&context);

  v1::AgentMessage hello;
  v1::RegisterRequest* reg = hello.mutable_register_();
  reg->set_name(options_.name);
  for (const v1::Gpu& gpu : options_.gpus) *reg->add_gpus() = gpu;
  reg->set_advertise_host(options_.advertise_host);
  reg->set_metrics_address(options_.metrics_address);
  for (const auto& [job, attempt] : supervisor_->Running()) {
    v1::RunningAttempt* r = reg->add_running();
    r->set_job_id(job);
    r->set_attempt(attempt);
  }
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    for (const v1::AttemptUpdate& u : finished_) *reg->add_finished() = u;
  }
  {
    std::lock_guard<std::mutex> lock(stream_mu_);
    if (shutting_down_) return;
    context_ = &context;
  }
  v1::CoordinatorMessage message;
  bool ok = stream->Write(hello) && stream->Read(&message) && message.has_ack();
  if (ok) {
    const v1::RegisterAck& ack = message.ack();
    if (ack.heartbeat_interval_ms() > 0) {
      heartbeat_interval_ms_ = ack.heartbeat_interval_ms();
    }
    {
      // Resend logs from where the coordinator's copy ends.
      std::lock_guard<std::mutex> lock(logs_mu_);
      for (auto& [key, ranks] : logs_) {
        for (auto& [rank, log] : ranks) log.sent = 0;
      }
      for (const v1::LogOffset& offset : ack.log_offsets()) {
        auto it = logs_.find({offset.job_id(), offset.attempt()});
        if (it == logs_.end()) continue;
        auto rank = it->second.find(offset.rank());
        if (rank != it->second.end()) rank->second.sent = offset.offset();
      }
      // Relay metrics from where the coordinator's history ends.
      for (auto& [key, tail] : metrics_) tail.relay_offset = 0;
      for (const v1::MetricsOffset& offset : ack.metrics_offsets()) {
        auto it = metrics_.find({offset.job_id(), offset.attempt()});
        if (it != metrics_.end()) it->second.relay_offset = offset.offset();
      }
    }
    last_contact_ms_ = SteadyMs();
    {
      std::lock_guard<std::mutex> lock(send_mu_);
      send_queue_.clear();
      send_queue_bytes_ = 0;
      registered_ = true;
    }
    std::thread writer([&] { WriteLoop(stream.get(), &context); });
    LOG(INFO) << "node=" << options_.name << " registered with "
              << options_.coordinator;
    while (stream->Read(&message)) {
      last_contact_ms_ = SteadyMs();
      if (message.has_start()) {
        HandleStart(message.start());
      } else if (message.has_stop()) {
        HandleStop(message.stop());
      }
    }
    {
      std::lock_guard<std::mutex> lock(send_mu_);
      registered_ = false;
    }
    send_cv_.notify_all();
    writer.join();
  }
  {
    std::lock_guard<std::mutex> lock(stream_mu_);
    context_ = nullptr;
  }
  context.TryCancel();
  grpc::Status status = stream->Finish();
  if (!shutting_down_) {
    LOG(WARNING) << "node=" << options_.name << " stream to "
                 << options_.coordinator
                 << " ended: " << status.error_message();
  }
}

bool Agent::Send(v1::AgentMessage message, bool bulk) {
  {
    std::lock_guard<std::mutex> lock(send_mu_);
    if (!registered_) return false;
    if (bulk && send_queue_bytes_ >= kSendQueueBytes) return false;
    send_queue_bytes_ += message.ByteSizeLong();
    send_queue_.push_back(std::move(message));
  }
  send_cv_.notify_all();
  return true;
}

void Agent::WriteLoop(
    grpc::ClientReaderWriter<v1::AgentMessage, v1::CoordinatorMessage>* stream,
    grpc::ClientContext* context) {
  for (;;) {
    v1::AgentMessage message;
    {
      std::unique_lock<std::mutex> lock(send_mu_);
      send_cv_.wait(lock,
                    [this] { return !registered_ || !send_queue_.empty(); });
      if (!registered_) {
        // The stream ended: the rest is resent after the next registration
        // (logs and metrics from the coordinator's offsets, exits from
        // finished_).
        send_queue_.clear();
        send_queue_bytes_ = 0;
        send_cv_.notify_all();
        return;
      }
      message = std::move(send_queue_.front());
      send_queue_.pop_front();
      send_queue_bytes_ -= std::min(send_queue_bytes_, message.ByteSizeLong());
      writing_ = true;
    }
    const bool ok = stream->Write(message);
    {
      std::lock_guard<std::mutex> lock(send_mu_);
      writing_ = false;
      if (!ok) registered_ = false;
    }
    send_cv_.notify_all();
    if (!ok) {
      context->TryCancel();  // ends the reader's Read(), and so Serve()
      return;
    }
  }
}

void Agent::AwaitSent(int64_t timeout_ms) {
  std::unique_lock<std::mutex> lock(send_mu_);
  send_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [this] {
    return !registered_ || (send_queue_.empty() && !writing_);
  });
}

void Agent::SendUpdate(const v1::AttemptUpdate& update) {
  VLOG(1) << "job=" << update.job_id() << " attempt=" << update.attempt()
          << " report " << v1::AttemptUpdate::Phase_Name(update.phase());
  if (update.phase() == v1::AttemptUpdate::PHASE_EXITED) {
    // Kept and repeated at each registration until it has surely arrived.
    std::lock_guard<std::mutex> lock(state_mu_);
    finished_.push_back(update);
    if (finished_.size() > kFinishedKept) finished_.erase(finished_.begin());
  }
  v1::AgentMessage message;
  *message.mutable_update() = update;
  Send(std::move(message));
}

void Agent::HandleStart(const v1::StartAttempt& start) {
  std::lock_guard<std::mutex> order(order_mu_);
  if (!AcceptStart(start)) return;
  const NodeContext node = PrepareNode(start);
  const absl::StatusOr<NodePlan> plan = PlanNode(start.spec(), node);
  const absl::Status ready =
      plan.ok() ? ReadyToStart(start.spec(), *plan, node)
                : absl::FailedPreconditionError(plan.status().message());
  const AttemptSpec attempt = MakeAttempt(
      start, plan.ok() ? *plan : FailurePlan(start.node_rank()), node);
  const AttemptKey key{start.job_id(), start.attempt()};
  Track(key, attempt, start, node.attempt_dir);
  const absl::Status status = ready.ok() ? supervisor_->Start(attempt) : ready;
  v1::AttemptUpdate update;
  update.set_job_id(start.job_id());
  update.set_attempt(start.attempt());
  if (!status.ok()) {
    // Say why in the job's own log, where its user looks.
    const std::string text =
        absl::StrCat("dcvlr: cannot start the job: ", status.message(), "\n");
    std::ofstream(attempt.processes[0].log_path, std::ios::app) << text;
    LOG(ERROR) << "job=" << start.job_id() << " attempt=" << start.attempt()
               << " " << absl::StripTrailingAsciiWhitespace(text);
    FlushLogs(key);
    {
      std::lock_guard<std::mutex> lock(logs_mu_);
      logs_.erase(key);
    }
    update.set_phase(v1::AttemptUpdate::PHASE_EXITED);
    update.set_exit_code(127);
    update.set_message(std::string(status.message()));
    SendUpdate(update);
    return;
  }
  const size_t procs = attempt.processes.size();
  LOG(INFO) << "job=" << start.job_id() << " attempt=" << start.attempt()
            << " started " << procs << (procs == 1 ? " process" : " processes");
  update.set_phase(v1::AttemptUpdate::PHASE_STARTED);
  update.set_master_port(node.master_port);
  SendUpdate(update);
}

bool Agent::AcceptStart(const v1::StartAttempt& start) {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    int& newest = newest_attempt_[start.job_id()];
    if (start.attempt() <= newest) {
      LOG(WARNING) << "job=" << start.job_id() << " attempt=" << start.attempt()
                   << " refused: attempt " << newest << " seen already";
      if (start.attempt() < newest) {
        v1::AttemptUpdate update;
        update.set_job_id(start.job_id());
        update.set_attempt(start.attempt());
        update.set_phase(v1::AttemptUpdate::PHASE_EXITED);
        update.set_exit_code(-1);
        update.set_message("stale start order refused");
        SendUpdate(update);
      }
      return false;
    }
    newest = start.attempt();
  }
  for (const auto& [job, attempt] : supervisor_->Running()) {
    if (job == start.job_id() && attempt < start.attempt()) {
      supervisor_->Stop(job, attempt, 0, "superseded by a newer attempt");
    }
  }
  return true;
}

NodeContext Agent::PrepareNode(const v1::StartAttempt& start) const {
  const fs::path job_dir =
      fs::path(options_.work_dir) / "jobs" / start.job_id();
  NodeContext node;
  node.attempt_dir =
      (job_dir / absl::StrCat("attempt-", start.attempt())).string();
  node.checkpoint_dir = start.spec().checkpoint_dir().empty()
                            ? (job_dir / "checkpoints").string()
                            : start.spec().checkpoint_dir();
  node.output_dir = (job_dir / "output").string();
  node.cache_dir = (fs::path(options_.work_dir) / "cache").string();
  std::error_code ec;
  for (const std::string& dir : {node.attempt_dir, node.output_dir,
                                 node.checkpoint_dir, node.cache_dir}) {
    fs::create_directories(dir, ec);  // a failure shows when files are written
  }
  node.master_addr = start.master_addr();
  if (node.master_addr.empty()) {
    node.master_addr =
        options_.advertise_host.empty() ? "127.0.0.1" : options_.advertise_host;
  }
  node.master_port = start.master_port();
  if (node.master_port == 0 && start.node_rank() == 0) {
    node.master_port = PickFreePort();
  }
  node.job_id = start.job_id();
  node.attempt = start.attempt();
  node.user = start.user();
  node.node = options_.name;
  node.node_rank = start.node_rank();
  node.num_nodes = std::max(1, start.num_nodes());
  node.gpus.assign(start.gpus().begin(), start.gpus().end());
  node.agent_dir = options_.work_dir;
  node.trainer_bin = options_.trainer_bin;
  node.eval_bin = options_.eval_bin;
  node.torchrun = options_.torchrun_bin;
  return node;
}

absl::Status Agent::ReadyToStart(const v1::JobSpec& spec, const NodePlan& plan,
                                 const NodeContext& node) const {
  if (spec.launcher() == v1::LAUNCHER_DIRECT &&
      (spec.kind() == v1::JOB_KIND_TRAIN || spec.kind() == v1::JOB_KIND_EVAL)) {
    const std::string& bin = plan.processes[0].argv[0];
    if (!Executable(bin)) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker program ", bin,
                       " not found (build with DCVLR_WORKER=ON, or give "
                       "--trainer-bin / --eval-bin)"));
    }
  }
  for (const PlannedFile& file : plan.files) {
    if (!WriteFile(file.path, file.content)) {
      return absl::FailedPreconditionError("cannot write " + file.path);
    }
  }
  if (node.master_port == 0) {
    return absl::FailedPreconditionError(
        "no rendezvous port (node rank 0 has not reported one)");
  }
  return absl::OkStatus();
}

NodePlan Agent::FailurePlan(int node_rank) {
  // Only for the log line that says why nothing started.
  PlannedProcess none;
  none.rank = node_rank;
  none.log_name = absl::StrCat("rank-", none.rank, ".log");
  return NodePlan{{}, {none}};
}

AttemptSpec Agent::MakeAttempt(const v1::StartAttempt& start,
                               const NodePlan& plan, const NodeContext& node) {
  AttemptSpec attempt;
  attempt.job_id = start.job_id();
  attempt.attempt = start.attempt();
  attempt.grace_s = start.spec().grace_s();
  const fs::path attempt_dir = node.attempt_dir;
  for (const PlannedProcess& planned : plan.processes) {
    std::map<std::string, std::string> env = BaseEnvironment();
    for (const auto& [name, value] : planned.env) env[name] = value;
    ProcessSpec process;
    process.rank = planned.rank;
    process.argv = planned.argv;
    for (const auto& [name, value] : env) {
      process.env.push_back(absl::StrCat(name, "=", value));
    }
    process.log_path = (attempt_dir / planned.log_name).string();
    process.pid_path =
        (attempt_dir / absl::StrCat("rank-", planned.rank, ".pid")).string();
    process.cwd = node.output_dir;
    attempt.processes.push_back(std::move(process));
  }
  return attempt;
}

void Agent::Track(const AttemptKey& key, const AttemptSpec& attempt,
                  const v1::StartAttempt& start,
                  const std::string& attempt_dir) {
  std::map<int, TrackedLog> tracked;
  for (const ProcessSpec& process : attempt.processes) {
    tracked[process.rank].path = process.log_path;
  }
  {
    std::lock_guard<std::mutex> lock(logs_mu_);
    logs_[key] = std::move(tracked);
    metrics_[key].path = (fs::path(attempt_dir) / "metrics.jsonl").string();
  }
  std::lock_guard<std::mutex> lock(state_mu_);
  gpus_[key].assign(start.gpus().begin(), start.gpus().end());
}

void Agent::HandleStop(const v1::StopAttempt& stop) {
  bool running = false;
  for (const auto& [job, attempt] : supervisor_->Running()) {
    running |= job == stop.job_id() && attempt == stop.attempt();
  }
  LOG(INFO) << "job=" << stop.job_id() << " attempt=" << stop.attempt()
            << " stop (" << stop.reason() << ")"
            << (running ? "" : ": not running here");
  if (running) {
    supervisor_->Stop(stop.job_id(), stop.attempt(), stop.grace_s(),
                      stop.reason());
    return;
  }
  // Nothing of it runs here: say so, so the coordinator frees its GPUs.
  std::lock_guard<std::mutex> order(order_mu_);
  v1::AttemptUpdate update;
  update.set_job_id(stop.job_id());
  update.set_attempt(stop.attempt());
  update.set_phase(v1::AttemptUpdate::PHASE_EXITED);
  update.set_exit_code(-1);
  update.set_stopped(true);
  update.set_message("not running on this node");
  SendUpdate(update);
}

void Agent::OnExit(const AttemptExit& exit) {
  std::lock_guard<std::mutex> order(order_mu_);
  const AttemptKey key{exit.job_id, exit.attempt};
  // Logs first: whoever reads them after the exit finds them complete.
  FlushLogs(key);
  ScanMetrics(key);
  RelayMetrics(key);
  std::string last_words;
  {
    std::lock_guard<std::mutex> lock(logs_mu_);
    auto it = logs_.find(key);
    if (it != logs_.end() && exit.failed_rank >= 0 && !exit.stopped &&
        exit.exit_code != contract::kExitRequeue) {
      auto rank = it->second.find(exit.failed_rank);
      if (rank != it->second.end()) last_words = LastLine(rank->second.path);
    }
    logs_.erase(key);
    // Lines the coordinator has not got yet (it is unreachable) are relayed
    // after the next registration, from where its history ends.
    auto tail = metrics_.find(key);
    if (tail != metrics_.end() && tail->second.caught_up) {
      metrics_.erase(tail);
    } else if (tail != metrics_.end()) {
      tail->second.ended = true;
      size_t ended = 0;
      for (const auto& [k, t] : metrics_) ended += t.ended;
      if (ended > kFinishedKept) {
        for (auto it = metrics_.begin(); it != metrics_.end(); ++it) {
          if (it->second.ended) {
            metrics_.erase(it);
            break;
          }
        }
      }
    }
  }
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    gpus_.erase(key);
  }
  LOG(INFO) << "job=" << exit.job_id << " attempt=" << exit.attempt
            << " exited code=" << exit.exit_code << " " << exit.message;
  v1::AttemptUpdate update;
  update.set_job_id(exit.job_id);
  update.set_attempt(exit.attempt);
  update.set_phase(v1::AttemptUpdate::PHASE_EXITED);
  update.set_exit_code(exit.exit_code);
  update.set_signal(exit.signal);
  update.set_stopped(exit.stopped);
  // A failed process's last line usually says why (a worker program's
  // error names the file, line and key); the job's reason carries it.
  update.set_message(last_words.empty()
                         ? exit.message
                         : absl::StrCat(exit.message, ": ", last_words));
  SendUpdate(update);
}

void Agent::FlushLogs(const AttemptKey& key) {
  std::lock_guard<std::mutex> lock(logs_mu_);
  auto it = logs_.find(key);
  if (it == logs_.end()) return;
  for (auto& [rank, log] : it->second) {
    int fd = open(log.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    std::string buffer(kLogChunkBytes, '\0');
    while (true) {
      ssize_t n = pread(fd, buffer.data(), buffer.size(), log.sent);
      if (n <= 0) break;
      v1::AgentMessage message;
      v1::LogChunk* chunk = message.mutable_log();
      chunk->set_job_id(key.first);
      chunk->set_attempt(key.second);
      chunk->set_rank(rank);
      chunk->set_offset(log.sent);
      chunk->set_data(buffer.data(), static_cast<size_t>(n));
      if (!Send(std::move(message), /*bulk=*/true)) break;
      log.sent += n;
    }
    close(fd);
  }
}

void Agent::FlushAllLogs() {
  std::vector<AttemptKey> keys;
  {
    std::lock_guard<std::mutex> lock(logs_mu_);
    for (const auto& [key, ranks] : logs_) keys.push_back(key);
  }
  for (const AttemptKey& key : keys) {
    FlushLogs(key);
    ScanMetrics(key);
    RelayMetrics(key);
  }
  // Ended attempts whose lines did not all reach the coordinator.
  std::vector<AttemptKey> ended;
  {
    std::lock_guard<std::mutex> lock(logs_mu_);
    for (const auto& [key, tail] : metrics_) {
      if (tail.ended) ended.push_back(key);
    }
  }
  for (const AttemptKey& key : ended) {
    RelayMetrics(key);
    std::lock_guard<std::mutex> lock(logs_mu_);
    auto it = metrics_.find(key);
    if (it != metrics_.end() && it->second.caught_up) metrics_.erase(it);
  }
}

std::map<int, std::string> Agent::GpuJobs() {
  std::lock_guard<std::mutex> lock(state_mu_);
  std::map<int, std::string> out;
  for (const auto& [key, gpus] : gpus_) {
    for (int gpu : gpus) out[gpu] = key.first;
  }
  return out;
}

void Agent::RelayMetrics(const AttemptKey& key) {
  std::lock_guard<std::mutex> lock(logs_mu_);
  auto it = metrics_.find(key);
  if (it == metrics_.end()) return;
  MetricsTail& tail = it->second;
  tail.caught_up = false;
  int fd = open(tail.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    tail.caught_up = errno == ENOENT;  // the job wrote no metrics
    return;
  }
  std::string buffer(kMetricsReadBytes, '\0');
  const int64_t now_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count();
  while (true) {
    const ssize_t n =
        pread(fd, buffer.data(), buffer.size(), tail.relay_offset);
    if (n <= 0) {
      tail.caught_up = n == 0;
      break;
    }
    v1::MetricBatch batch;
    batch.set_job_id(key.first);
    batch.set_attempt(key.second);
    batch.set_start_offset(tail.relay_offset);
    std::map<std::string, uint32_t> names;
    size_t begin = 0;
    size_t end = 0;  // past the last complete line taken
    while (batch.points_size() < kMaxPointsPerBatch) {
      const void* found =
          memchr(buffer.data() + begin, '\n', static_cast<size_t>(n) - begin);
      if (found == nullptr) break;
      const size_t newline = static_cast<const char*>(found) - buffer.data();
      const size_t line_begin = begin;
      begin = end = newline + 1;
      if (newline - line_begin > kMaxMetricsLineBytes) continue;  // skipped
      auto json = nlohmann::json::parse(buffer.begin() + line_begin,
                                        buffer.begin() + newline, nullptr,
                                        /*allow_exceptions=*/false);
      if (!json.is_object()) continue;  // not a metrics line: skipped
      v1::MetricPoint* point = batch.add_points();
      point->set_time_ms(now_ms);
      auto step = json.find("step");
      point->set_step(
          step != json.end() && step->is_number() ? step->get<int64_t>() : -1);
      for (auto& [name, value] : json.items()) {
        if (!value.is_number() || name == "step") continue;
        auto [slot, added] =
            names.try_emplace(name, static_cast<uint32_t>(batch.names_size()));
        if (added) batch.add_names(name);
        point->add_keys(slot->second);
        point->add_values(value.get<double>());
      }
    }
    if (end == 0) {
      // No complete line in a whole buffer: an overlong line, skipped.
      if (n == static_cast<ssize_t>(buffer.size())) {
        tail.relay_offset += n;
        continue;
      }
      tail.caught_up = true;  // the last line is still being written
      break;
    }
    batch.set_end_offset(tail.relay_offset + static_cast<int64_t>(end));
    v1::AgentMessage message;
    *message.mutable_metrics() = std::move(batch);
    const int points = message.metrics().points_size();
    const int64_t end_offset = message.metrics().end_offset();
    // Resent from relay_offset after a reconnect, or on the next round when
    // the queue is full.
    if (!Send(std::move(message), /*bulk=*/true)) break;
    tail.relay_offset = end_offset;
    points_relayed_ += points;
  }
  close(fd);
}

void Agent::ScanMetrics(const AttemptKey& key) {
  std::vector<int64_t> checkpoints;
  {
    std::lock_guard<std::mutex> lock(logs_mu_);
    auto it = metrics_.find(key);
    if (it == metrics_.end()) return;
    MetricsTail& tail = it->second;
    int fd = open(tail.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    // One pass over the new bytes, in bounded reads; nothing is held but
    // the end of a line not yet complete (kMaxMetricsLineBytes at most).
    std::string buffer(kLogChunkBytes, '\0');
    ssize_t n;
    while ((n = pread(fd, buffer.data(), buffer.size(), tail.offset)) > 0) {
      tail.offset += n;
      tail.lines.Feed(
          std::string_view(buffer.data(), static_cast<size_t>(n)),
          [&](std::string_view line) {
            if (line.find("checkpoint_step") == std::string_view::npos) return;
            auto json = nlohmann::json::parse(line, nullptr,
                                              /*allow_exceptions=*/false);
            if (json.is_object() && json["checkpoint_step"].is_number()) {
              checkpoints.push_back(json["checkpoint_step"].get<int64_t>());
            }
          });
    }
    close(fd);
  }
  for (int64_t step : checkpoints) {
    v1::AttemptUpdate update;
    update.set_job_id(key.first);
    update.set_attempt(key.second);
    update.set_phase(v1::AttemptUpdate::PHASE_CHECKPOINT);
    update.set_checkpoint_step(step);
    SendUpdate(update);
  }
}

void Agent::LogLoop() {
  while (!shutting_down_) {
    FlushAllLogs();
    std::unique_lock<std::mutex> lock(wake_mu_);
    wake_.wait_for(lock, std::chrono::milliseconds(200),
                   [this] { return shutting_down_.load(); });
  }
}

void Agent::HeartbeatLoop() {
  while (!shutting_down_) {
    v1::AgentMessage message;
    message.mutable_heartbeat()->set_time_ms(
        std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::system_clock::now().time_since_epoch())
            .count());
    Send(std::move(message));
    std::unique_lock<std::mutex> lock(wake_mu_);
    wake_.wait_for(lock, std::chrono::milliseconds(heartbeat_interval_ms_),
                   [this] { return shutting_down_.load(); });
  }
}

void Agent::LeaseLoop() {
  bool expired = false;
  while (!shutting_down_) {
    bool registered;
    {
      std::lock_guard<std::mutex> lock(send_mu_);
      registered = registered_;
    }
    if (registered) {
      // last_contact_ms_ moves with every message received on the stream.
      expired = false;
    } else if (ProbeTcp(ResolveAddress(options_.coordinator), 500) ==
               Reachability::kRefused) {
      // The coordinator is down, not cut off from us: it cannot place our
      // jobs elsewhere while down, and keeps them when it comes back.
      last_contact_ms_ = SteadyMs();
    }
    const int64_t silent_ms = SteadyMs() - last_contact_ms_;
    if (!expired && silent_ms > options_.lease_ms &&
        !supervisor_->Running().empty()) {
      LOG(WARNING) << "node=" << options_.name
                   << " lease expired (coordinator unreachable for "
                   << silent_ms << " ms): stopping every job process";
      supervisor_->StopAll(kLeaseStopGraceS, "lease expired");
      expired = true;
    }
    std::unique_lock<std::mutex> lock(wake_mu_);
    wake_.wait_for(lock, std::chrono::milliseconds(250),
                   [this] { return shutting_down_.load(); });
  }
}

}  // namespace dcvlr
