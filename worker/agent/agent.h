// dcvlr-agent's core: holds the stream to the coordinator, starts and stops
// job attempts through the Supervisor, and sends heartbeats, status updates
// and log chunks up.
//
// Fencing: every order names (job, attempt). A start for an attempt older
// than one already seen is refused, and a newer attempt replaces an older
// one still running. If the coordinator cannot be reached for longer than
// the lease, the agent stops its processes itself, before the coordinator
// (whose node timeout is longer) would place them elsewhere. A coordinator
// that refuses connections is down, not cut off: it cannot requeue anything
// while down, so that does not count against the lease.
#ifndef DCVLR_WORKER_AGENT_AGENT_H_
#define DCVLR_WORKER_AGENT_AGENT_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "common/launch.h"
#include "dcvlr/v1/agent.grpc.pb.h"
#include "grpcpp/security/credentials.h"
#include "worker/agent/line_splitter.h"
#include "worker/agent/supervisor.h"

namespace dcvlr {

struct AgentOptions {
  std::string coordinator;  // HOST:PORT
  std::string name;
  std::vector<v1::Gpu> gpus;
  std::string work_dir;
  std::string advertise_host;
  std::string trainer_bin;                // dcvlr-train
  std::string eval_bin;                   // dcvlr-eval
  std::string torchrun_bin = "torchrun";  // for Oumi training configs
  int64_t lease_ms = 4000;
  // Where this agent serves Prometheus metrics (reported at registration);
  // empty: nowhere.
  std::string metrics_address;
  // How the coordinator is dialled: TLS with this node's certificate
  // (common/tls.h); null: plaintext (--insecure).
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

class Agent {
 public:
  explicit Agent(AgentOptions options);
  ~Agent();

  // Connects, serves orders and reconnects until Shutdown().
  void Run();
  // Stops every job process (with `grace_s`) and makes Run() return.
  void Shutdown(double grace_s);

  // GPU index -> id of the job whose running attempt holds it.
  std::map<int, std::string> GpuJobs();
  // Metric points relayed to the coordinator so far.
  int64_t points_relayed() const { return points_relayed_; }

 private:
  struct TrackedLog {
    std::string path;
    int64_t sent = 0;
  };
  // The job's metrics file, read as it grows (common/process_contract.h).
  struct MetricsTail {
    std::string path;
    int64_t offset = 0;
    LineSplitter lines;  // of the bytes scanned so far
    // How far the coordinator has the file's points (relayed, or known
    // from its registration ack); the file itself is the buffer while the
    // coordinator is unreachable.
    int64_t relay_offset = 0;
    // The last relay sent every complete line.
    bool caught_up = false;
    // The attempt has exited; kept until its lines are relayed.
    bool ended = false;
  };
  using AttemptKey = std::pair<std::string, int>;

  // Kills what a previous agent process on this work dir left running
  // (descendants that escaped their group outlive a killed agent) and
  // removes its pid files. Its attempts then count as lost.
  void CleanUpPreviousLife();
  void Serve();
  // A start order, in named steps: accepted (fencing), the node's
  // directories and rendezvous, the plan (PlanNode) and its files, the
  // processes, the bookkeeping, then the supervisor; a step that fails ends the
  // attempt with exit 127 and says why in the job's log.
  void HandleStart(const v1::StartAttempt& start);
  // False for an attempt not newer than the newest seen for the job (an
  // older one is answered EXITED -1); stops older attempts still running.
  bool AcceptStart(const v1::StartAttempt& start);
  // The attempt's directories (created) and its rendezvous address; node
  // rank 0 picks the port.
  NodeContext PrepareNode(const v1::StartAttempt& start) const;
  // Writes the plan's files and checks that it can start (its worker
  // program exists, a rendezvous port is known); an error says why not.
  absl::Status ReadyToStart(const v1::JobSpec& spec, const NodePlan& plan,
                            const NodeContext& node) const;
  // A plan of one log and no process, for an attempt that cannot start.
  static NodePlan FailurePlan(int node_rank);
  static AttemptSpec MakeAttempt(const v1::StartAttempt& start,
                                 const NodePlan& plan, const NodeContext& node);
  // Relays the attempt's logs and metrics and records its GPUs.
  void Track(const AttemptKey& key, const AttemptSpec& attempt,
             const v1::StartAttempt& start, const std::string& attempt_dir);
  void HandleStop(const v1::StopAttempt& stop);
  void OnExit(const AttemptExit& exit);
  // Queues `message` for the stream's writer thread and returns at once:
  // false when no stream is registered (the message is dropped; what
  // matters is resent after the next registration), or, for `bulk`
  // messages (log chunks, metric batches), when kSendQueueBytes are
  // already queued (the caller tries again later from the same offset).
  bool Send(v1::AgentMessage message, bool bulk = false);
  // The registered stream's writer: writes queued messages in order, with
  // no lock held, until the stream ends or a write fails.
  void WriteLoop(grpc::ClientReaderWriter<v1::AgentMessage,
                                          v1::CoordinatorMessage>* stream,
                 grpc::ClientContext* context);
  // Waits until the queue is written (or `timeout_ms` passes).
  void AwaitSent(int64_t timeout_ms);
  void SendUpdate(const v1::AttemptUpdate& update);
  void HeartbeatLoop();
  void LogLoop();
  void LeaseLoop();
  // Sends what the attempt's logs have beyond what was sent.
  void FlushLogs(const AttemptKey& key);
  void FlushAllLogs();
  // Reads new lines of the attempt's metrics file and reports committed
  // checkpoints.
  void ScanMetrics(const AttemptKey& key);
  // Relays the metrics file's complete lines beyond relay_offset to the
  // coordinator, in batches.
  void RelayMetrics(const AttemptKey& key);

  const AgentOptions options_;
  std::unique_ptr<Supervisor> supervisor_;

  std::atomic<bool> shutting_down_{false};
  std::atomic<int64_t> heartbeat_interval_ms_{1000};
  // Milliseconds (steady clock) of the last sign that the coordinator is
  // either reachable or down (refusing connections).
  std::atomic<int64_t> last_contact_ms_{0};

  // The live stream's context, for cancelling it from Shutdown().
  std::mutex stream_mu_;
  grpc::ClientContext* context_ = nullptr;

  // What goes to the coordinator: one writer thread per registered stream
  // drains send_queue_, so no thread ever waits on the network while it
  // holds a lock (the reaper, the log relay and the heartbeat only queue).
  std::mutex send_mu_;  // a leaf: nothing is taken under it
  std::condition_variable send_cv_;
  std::deque<v1::AgentMessage> send_queue_;  // under send_mu_
  size_t send_queue_bytes_ = 0;              // under send_mu_
  bool writing_ = false;     // a message is being written; under send_mu_
  bool registered_ = false;  // under send_mu_

  // Starts and exits are sent in order: STARTED before EXITED.
  std::mutex order_mu_;
  std::mutex state_mu_;
  std::map<std::string, int> newest_attempt_;  // fencing
  // Exit reports not yet known to be delivered; repeated on registration.
  std::vector<v1::AttemptUpdate> finished_;
  std::map<AttemptKey, std::map<int, TrackedLog>> logs_;
  std::map<AttemptKey, MetricsTail> metrics_;
  std::map<AttemptKey, std::vector<int>> gpus_;  // under state_mu_
  std::atomic<int64_t> points_relayed_{0};
  std::mutex logs_mu_;  // held while reading logs and queueing them

  std::condition_variable wake_;
  std::mutex wake_mu_;
  std::thread heartbeat_thread_;
  std::thread log_thread_;
  std::thread lease_thread_;
};

// Probes a TCP address: kRefused means a host answered that nothing
// listens there; kUnreachable means no answer came in time.
enum class Reachability { kListening, kRefused, kUnreachable };
Reachability ProbeTcp(const std::string& host_port, int timeout_ms);

// A free TCP port on this machine, chosen by the kernel.
int PickFreePort();

}  // namespace dcvlr

#endif  // DCVLR_WORKER_AGENT_AGENT_H_
