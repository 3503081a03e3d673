// Recovery benchmark: how fast the cluster heals, measured on real
// processes on loopback.
//
//   1. Agent kill: a one-GPU job runs on node a; node b is idle. kill -9 of
//      a's agent, then the time until the job is RUNNING again (on b). The
//      floor is the coordinator's --node-timeout-ms (8 s by default): an
//      agent that merely lost its connection must have stopped its
//      processes (lease + grace) before they run elsewhere.
//   2. Coordinator restart: with N jobs in the store, kill -9 and the time
//      from starting a new coordinator until it answers ListJobs with all N.
//
//   recovery_bench [--trials 20] [--jobs 10000]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "dcvlr/v1/client.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/cluster.h"

namespace {

using Clock = std::chrono::steady_clock;
using dcvlr::bench::Percentile;
using dcvlr::testing::BinDir;
using dcvlr::testing::Eventually;
using dcvlr::testing::Process;
using dcvlr::testing::SubmitOrExit;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

class Coordinator {
 public:
  Coordinator(const std::string& dir, int n) {
    const std::string log = dir + "/coordinator-" + std::to_string(n) + ".log";
    process_ = std::make_unique<Process>(
        std::vector<std::string>{BinDir() + "/dcvlr-coordinator", "--listen",
                                 "127.0.0.1:0", "--state-dir", dir + "/state",
                                 "--insecure"},
        log);
    address_ = dcvlr::testing::AwaitListening(log, std::chrono::seconds(120));
    if (address_.empty()) {
      fprintf(stderr, "dcvlr-coordinator did not start; see %s\n", log.c_str());
      exit(1);
    }
    stub_ = dcvlr::v1::ClientService::NewStub(
        grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
  }
  void Kill() {
    process_->Signal(SIGKILL);
    process_->Wait();
  }
  dcvlr::v1::ClientService::Stub* stub() { return stub_.get(); }

 private:
  std::unique_ptr<Process> process_;
  std::string address_;
  std::unique_ptr<dcvlr::v1::ClientService::Stub> stub_;
};

dcvlr::v1::Job Get(dcvlr::v1::ClientService::Stub* stub,
                   const std::string& id) {
  grpc::ClientContext context;
  dcvlr::v1::GetJobRequest request;
  request.set_job(id);
  dcvlr::v1::Job job;
  stub->GetJob(&context, request, &job);
  return job;
}

void AgentKill(const std::string& root, int trials) {
  std::vector<double> seconds;
  for (int t = 0; t < trials; ++t) {
    const std::string dir = root + "/kill-" + std::to_string(t);
    std::filesystem::create_directories(dir);
    Coordinator coordinator(dir, 1);
    auto agent = [&](const std::string& name) {
      return std::make_unique<Process>(
          std::vector<std::string>{BinDir() + "/dcvlr-agent", "--coordinator",
                                   dir + "/state/coordinator.addr", "--name",
                                   name, "--gpus", "1", "--work-dir",
                                   dir + "/" + name, "--insecure"},
          dir + "/agent-" + name + ".log");
    };
    auto a = agent("a");
    const std::string id =
        SubmitOrExit(coordinator.stub(),
                     "kind: command\nresources: {gpus_per_node: 1}\n"
                     "run: exec sleep 600\n");
    Eventually(
        [&] {
          return Get(coordinator.stub(), id).state() ==
                 dcvlr::v1::JOB_STATE_RUNNING;
        },
        std::chrono::seconds(60));
    auto b = agent("b");
    Eventually([&] {
      grpc::ClientContext context;
      dcvlr::v1::ListNodesResponse nodes;
      coordinator.stub()->ListNodes(&context, {}, &nodes);
      return nodes.nodes_size() == 2;
    });
    const auto killed = Clock::now();
    a->Signal(SIGKILL);
    a->Wait();
    Eventually(
        [&] {
          dcvlr::v1::Job job = Get(coordinator.stub(), id);
          return job.state() == dcvlr::v1::JOB_STATE_RUNNING &&
                 job.attempt() == 2;
        },
        std::chrono::seconds(120));
    seconds.push_back(Seconds(Clock::now() - killed));
    fprintf(stderr, "trial %d: %.2f s\n", t + 1, seconds.back());
    b->Signal(SIGTERM);
    b->Wait();
  }
  printf(
      "agent kill -9 -> job RUNNING again elsewhere (%d trials): "
      "p50 %.2f s, p99 %.2f s, max %.2f s\n",
      trials, Percentile(seconds, 0.5), Percentile(seconds, 0.99),
      *std::max_element(seconds.begin(), seconds.end()));
}

void CoordinatorRestart(const std::string& root, int jobs) {
  const std::string dir = root + "/restart";
  std::filesystem::create_directories(dir);
  {
    Coordinator coordinator(dir, 1);
    const auto began = Clock::now();
    for (int i = 0; i < jobs; ++i) {
      SubmitOrExit(coordinator.stub(), "kind: command\nrun: 'true'\n");
    }
    printf("submitted %d jobs in %.1f s (%.0f durable submits/s)\n", jobs,
           Seconds(Clock::now() - began), jobs / Seconds(Clock::now() - began));
    coordinator.Kill();
  }
  const auto started = Clock::now();
  Coordinator coordinator(dir, 2);
  const double listening = Seconds(Clock::now() - started);
  Eventually(
      [&] {
        grpc::ClientContext context;
        dcvlr::v1::ListJobsRequest request;
        dcvlr::v1::ListJobsResponse response;
        return coordinator.stub()
                   ->ListJobs(&context, request, &response)
                   .ok() &&
               response.jobs_size() == jobs;
      },
      std::chrono::seconds(300));
  printf(
      "coordinator restart with %d jobs in the store: listening after "
      "%.2f s, all jobs listed after %.2f s\n",
      jobs, listening, Seconds(Clock::now() - started));
  coordinator.Kill();
}

}  // namespace

int main(int argc, char** argv) {
  int trials = 20, jobs = 10000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--trials")) trials = atoi(argv[i + 1]);
    if (!strcmp(argv[i], "--jobs")) jobs = atoi(argv[i + 1]);
  }
  char tmpl[] = "/tmp/dcvlr-recovery-bench-XXXXXX";
  const std::string root = mkdtemp(tmpl);
  CoordinatorRestart(root, jobs);
  AgentKill(root, trials);
  std::filesystem::remove_all(root);
  return 0;
}
