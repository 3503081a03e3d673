// Metrics ingest benchmark: how many metric points (lines of jobs' metrics
// files) a real dcvlr-coordinator takes in per second from simulated agents
// over real gRPC streams on loopback, and how much CPU it spends doing so.
//
//   1. Starts dcvlr-coordinator (--metrics-listen) in a temporary directory.
//   2. Opens --agents streams, each registering as a node with one GPU, and
//      submits as many one-GPU jobs; each stream answers its start order
//      with PHASE_STARTED, so every job is RUNNING on its own "node".
//   3. Each stream then sends MetricBatch messages of --batch points (one
//      point = one metrics line: a step and --keys numeric keys) as fast as
//      the coordinator takes them.
//   4. After a --warmup_s warm-up, it measures for --seconds: points
//      ingested (the coordinator's dcvlr_metric_points_ingested_total) and
//      the coordinator's CPU time (utime + stime from /proc/PID/stat, the
//      same figures getrusage reports).
//
//   metrics_ingest_bench [--agents 100] [--seconds 10] [--batch 500] [--keys 8]
//                        [--rate POINTS_PER_S]   (default: as fast as it goes)
//
// The simulated agents run in this process and compete for the same CPUs.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "dcvlr/v1/agent.grpc.pb.h"
#include "dcvlr/v1/client.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/cluster.h"
#include "tests/http.h"

namespace {

using Clock = std::chrono::steady_clock;
using dcvlr::testing::BinDir;
using dcvlr::testing::Eventually;
using dcvlr::testing::HttpGet;
using dcvlr::testing::Process;
using dcvlr::testing::ReadAddress;

struct Flags {
  int agents = 100;
  double seconds = 10;
  double warmup_s = 2;
  int batch = 500;
  int keys = 8;
  // Points per second offered by all agents together; 0: as fast as the
  // coordinator takes them.
  double rate = 0;
};

double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  // Fields after the command name (which may hold spaces): state is 3rd;
  // utime and stime are the 14th and 15th.
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::atof(field.c_str());
    if (i == 15) stime = std::atof(field.c_str());
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double Ingested(const std::string& metrics_address) {
  std::string text =
      HttpGet("http://" + metrics_address + "/metrics").value_or("");
  const std::string name = "\ndcvlr_metric_points_ingested_total ";
  size_t at = text.find(name);
  if (at == std::string::npos) return -1;
  return std::atof(text.c_str() + at + name.size());
}

// One simulated agent: registers, starts what it is told to, then streams
// metric batches until `stop`.
class SimAgent {
 public:
  SimAgent(const std::string& address, int index, const Flags& flags)
      : index_(index), flags_(flags) {
    grpc::ChannelArguments args;
    args.SetInt("dcvlr.bench.agent", index);  // a connection of its own
    channel_ = grpc::CreateCustomChannel(
        address, grpc::InsecureChannelCredentials(), args);
    stub_ = dcvlr::v1::AgentService::NewStub(channel_);
  }

  bool Register() {
    stream_ = stub_->Connect(&context_);
    dcvlr::v1::AgentMessage hello;
    auto* reg = hello.mutable_register_();
    reg->set_name(absl::StrCat("sim-", index_));
    auto* gpu = reg->add_gpus();
    gpu->set_index(0);
    gpu->set_uuid(absl::StrCat("sim-", index_, "-0"));
    dcvlr::v1::CoordinatorMessage ack;
    if (!stream_->Write(hello) || !stream_->Read(&ack) || !ack.has_ack()) {
      return false;
    }
    reader_ = std::thread([this] { ReadLoop(); });
    return true;
  }

  bool started() const { return started_; }

  void Stream(const std::atomic<bool>& stop) {
    const std::string job_id = job_id_;
    dcvlr::v1::AgentMessage message;
    dcvlr::v1::MetricBatch* batch = message.mutable_metrics();
    batch->set_job_id(job_id);
    batch->set_attempt(1);
    const char* kNames[] = {"loss",          "lr",  "grad_norm", "tokens_per_s",
                            "samples_per_s", "mfu", "epoch",     "tokens_seen"};
    for (int k = 0; k < flags_.keys; ++k) {
      batch->add_names(k < 8 ? kNames[k] : absl::StrCat("key", k));
    }
    for (int i = 0; i < flags_.batch; ++i) {
      auto* point = batch->add_points();
      point->set_time_ms(1);
      for (int k = 0; k < flags_.keys; ++k) {
        point->add_keys(k);
        point->add_values(1.0 / (i + k + 1));
      }
    }
    // About what the lines would take in the file.
    const int64_t bytes = flags_.batch * (24 + 24 * flags_.keys);
    int64_t offset = 0;
    int64_t step = 0;
    // With a rate, batches leave on a schedule.
    const double interval_s =
        flags_.rate > 0 ? flags_.batch * flags_.agents / flags_.rate : 0;
    auto next = Clock::now();
    while (!stop) {
      if (interval_s > 0) {
        next += std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(interval_s));
        std::this_thread::sleep_until(next);
      }
      batch->set_start_offset(offset);
      offset += bytes;
      batch->set_end_offset(offset);
      for (auto& point : *batch->mutable_points()) point.set_step(step++);
      if (!stream_->Write(message)) break;
    }
  }

  void Close() {
    stream_->WritesDone();
    context_.TryCancel();
    if (reader_.joinable()) reader_.join();
    stream_->Finish();
  }

 private:
  void ReadLoop() {
    dcvlr::v1::CoordinatorMessage message;
    while (stream_->Read(&message)) {
      if (!message.has_start()) continue;
      job_id_ = message.start().job_id();
      dcvlr::v1::AgentMessage started;
      auto* update = started.mutable_update();
      update->set_job_id(message.start().job_id());
      update->set_attempt(message.start().attempt());
      update->set_phase(dcvlr::v1::AttemptUpdate::PHASE_STARTED);
      update->set_master_port(1);
      std::lock_guard<std::mutex> lock(write_mu_);
      stream_->Write(started);
      started_ = true;
    }
  }

  const int index_;
  const Flags flags_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<dcvlr::v1::AgentService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<dcvlr::v1::AgentMessage,
                                           dcvlr::v1::CoordinatorMessage>>
      stream_;
  std::thread reader_;
  std::mutex write_mu_;
  std::string job_id_;
  std::atomic<bool> started_{false};
};

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string name = argv[i];
    const std::string value = argv[i + 1];
    bool ok = true;
    if (name == "--agents")
      ok = absl::SimpleAtoi(value, &flags.agents);
    else if (name == "--seconds")
      ok = absl::SimpleAtod(value, &flags.seconds);
    else if (name == "--warmup_s")
      ok = absl::SimpleAtod(value, &flags.warmup_s);
    else if (name == "--batch")
      ok = absl::SimpleAtoi(value, &flags.batch);
    else if (name == "--keys")
      ok = absl::SimpleAtoi(value, &flags.keys);
    else if (name == "--rate")
      ok = absl::SimpleAtod(value, &flags.rate);
    else
      ok = false;
    if (!ok) {
      fprintf(stderr, "metrics_ingest_bench: bad flag %s %s\n", name.c_str(),
              value.c_str());
      return 2;
    }
  }
  char tmpl[] = "/tmp/dcvlr-ingest-bench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string log = dir + "/coordinator.log";
  Process coordinator({BinDir() + "/dcvlr-coordinator", "--listen",
                       "127.0.0.1:0", "--state-dir", dir + "/state",
                       "--metrics-listen", "127.0.0.1:0", "--insecure"},
                      log);
  std::string address, metrics_address;
  if (!Eventually([&] {
        address = ReadAddress(dir + "/state/coordinator.addr");
        metrics_address = ReadAddress(dir + "/state/metrics.addr");
        return !address.empty() && !metrics_address.empty();
      })) {
    fprintf(stderr, "metrics_ingest_bench: the coordinator did not start\n");
    return 1;
  }

  std::vector<std::unique_ptr<SimAgent>> agents;
  for (int i = 0; i < flags.agents; ++i) {
    agents.push_back(std::make_unique<SimAgent>(address, i, flags));
    if (!agents.back()->Register()) {
      fprintf(stderr, "metrics_ingest_bench: agent %d could not register\n", i);
      return 1;
    }
  }
  auto client = dcvlr::v1::ClientService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  for (int i = 0; i < flags.agents; ++i) {
    dcvlr::v1::SubmitJobRequest request;
    request.set_user(i % 2 ? "alice" : "bob");
    request.set_source_name("bench.yaml");
    request.set_source(
        absl::StrCat("name: train-", i,
                     "\nkind: command\ncommand: [\"true\"]\nresources: "
                     "{gpus_per_node: 1}\n"));
    dcvlr::v1::SubmitJobResponse response;
    grpc::ClientContext context;
    if (!client->SubmitJob(&context, request, &response).ok()) {
      fprintf(stderr, "metrics_ingest_bench: submit failed\n");
      return 1;
    }
  }
  if (!Eventually([&] {
        for (auto& a : agents) {
          if (!a->started()) return false;
        }
        return true;
      })) {
    fprintf(stderr, "metrics_ingest_bench: not every job started\n");
    return 1;
  }

  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (auto& a : agents) {
    writers.emplace_back([&stop, agent = a.get()] { agent->Stream(stop); });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(flags.warmup_s));
  const double points0 = Ingested(metrics_address);
  const double cpu0 = CpuSeconds(coordinator.pid());
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(flags.seconds));
  const double points1 = Ingested(metrics_address);
  const double cpu1 = CpuSeconds(coordinator.pid());
  const double elapsed =
      std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  for (auto& t : writers) t.join();
  for (auto& a : agents) a->Close();

  const double rate = (points1 - points0) / elapsed;
  const double cores = (cpu1 - cpu0) / elapsed;
  printf("agents %d, batch %d points x %d keys, measured %.1f s\n",
         flags.agents, flags.batch, flags.keys, elapsed);
  printf("ingested: %.0f points/s (%.0f values/s)\n", rate, rate * flags.keys);
  printf("coordinator CPU: %.2f cores (%.2f us per point)\n", cores,
         rate > 0 ? cores / rate * 1e6 : 0.0);
  coordinator.Signal(SIGTERM);
  coordinator.Wait();
  std::filesystem::remove_all(dir);
  return 0;
}
