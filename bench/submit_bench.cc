// Submit benchmark: durable submits per second with 1, 8 and 64 concurrent
// clients, submit -> process start latency, and the wall time of one
// `dcvlrctl submit` call, against real dcvlr-coordinator processes on
// loopback. Several coordinator binaries (e.g. a baseline build and the
// current one) are measured in alternation in one run, so that a noisy
// machine treats them alike.
//
//   1. Throughput: a fresh coordinator with no agents; C clients, each with
//      its own gRPC connection, submit one-job files back to back for
//      --seconds; every reply is a durable submit (the coordinator answers
//      only once the job is in SQLite with synchronous=FULL).
//   2. Latency: a fresh coordinator and one agent (1 pretend GPU); one-job
//      files (`run: 'true'`) submitted one at a time; for each, the time
//      from the job's SUBMITTED event to its STARTED event (both stamped by
//      the coordinator's clock), i.e. queueing, the pass, the durable
//      placement, the order, the agent's fork/exec and its report.
//   3. dcvlrctl: process start to exit of `dcvlrctl submit FILE` (fork, exec,
//      connect, one RPC, exit), measured from this process.
//
//   submit_bench [--coordinator PATH]... [--seconds 5] [--clients 1,8,64]
//                [--rounds 2] [--latency-jobs 100] [--ctl-runs 50]
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "dcvlr/v1/client.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/cluster.h"

namespace {

using Clock = std::chrono::steady_clock;
using dcvlr::bench::Percentile;
using dcvlr::testing::AwaitListening;
using dcvlr::testing::BinDir;
using dcvlr::testing::Eventually;
using dcvlr::testing::Process;
using dcvlr::testing::SubmitOrExit;

// A coordinator process on a fresh state directory.
class Coordinator {
 public:
  Coordinator(const std::string& binary, const std::string& dir) {
    std::filesystem::create_directories(dir);
    const std::string log = dir + "/coordinator.log";
    process_ = std::make_unique<Process>(
        std::vector<std::string>{binary, "--listen", "127.0.0.1:0",
                                 "--state-dir", dir + "/state", "--insecure"},
        log);
    address_ = AwaitListening(log, std::chrono::seconds(120));
    if (address_.empty()) {
      fprintf(stderr, "%s did not start; see %s\n", binary.c_str(),
              log.c_str());
      exit(1);
    }
  }
  const std::string& address() const { return address_; }

  // A stub on its own connection (no subchannel shared with other stubs).
  std::unique_ptr<dcvlr::v1::ClientService::Stub> Connect() const {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return dcvlr::v1::ClientService::NewStub(grpc::CreateCustomChannel(
        address_, grpc::InsecureChannelCredentials(), args));
  }

 private:
  std::unique_ptr<Process> process_;
  std::string address_;
};

constexpr char kPendingJob[] =
    "kind: command\nrun: 'true'\nresources: {gpus_per_node: 1}\n";

// Durable submits per second with `clients` concurrent clients.
double Throughput(const std::string& binary, const std::string& dir,
                  int clients, double seconds) {
  Coordinator coordinator(binary, dir);
  std::vector<std::unique_ptr<dcvlr::v1::ClientService::Stub>> stubs;
  for (int c = 0; c < clients; ++c) {
    stubs.push_back(coordinator.Connect());
    SubmitOrExit(stubs.back().get(), kPendingJob);  // warm
  }
  std::atomic<bool> stop{false};
  std::atomic<int64_t> done{0};
  std::vector<std::thread> threads;
  const Clock::time_point began = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      while (!stop.load(std::memory_order_relaxed)) {
        SubmitOrExit(stubs[c].get(), kPendingJob);
        done.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (std::thread& t : threads) t.join();
  const double elapsed =
      std::chrono::duration<double>(Clock::now() - began).count();
  return static_cast<double>(done.load()) / elapsed;
}

int64_t EventTime(const dcvlr::v1::Job& job, dcvlr::v1::EventType type) {
  for (const auto& event : job.events()) {
    if (event.type() == type) return event.time_ms();
  }
  return -1;
}

// Submitted -> started, in ms, for `jobs` jobs run one at a time.
std::vector<double> Latency(const std::string& binary, const std::string& dir,
                            int jobs) {
  Coordinator coordinator(binary, dir);
  Process agent({BinDir() + "/dcvlr-agent", "--coordinator",
                 coordinator.address(), "--name", "n1", "--gpus", "1",
                 "--work-dir", dir + "/work", "--insecure"},
                dir + "/agent.log");
  auto stub = coordinator.Connect();
  auto get = [&](const std::string& id) {
    grpc::ClientContext context;
    dcvlr::v1::GetJobRequest request;
    request.set_job(id);
    dcvlr::v1::Job job;
    stub->GetJob(&context, request, &job);
    return job;
  };
  Eventually(
      [&] {
        grpc::ClientContext context;
        dcvlr::v1::ListNodesResponse nodes;
        stub->ListNodes(&context, {}, &nodes);
        return nodes.nodes_size() == 1 &&
               nodes.nodes(0).state() == dcvlr::v1::NODE_STATE_READY;
      },
      std::chrono::seconds(60));
  std::vector<double> ms;
  for (int j = 0; j < jobs + 1; ++j) {
    const std::string id = SubmitOrExit(stub.get(), kPendingJob);
    dcvlr::v1::Job job;
    Eventually(
        [&] {
          job = get(id);
          return job.state() == dcvlr::v1::JOB_STATE_SUCCEEDED ||
                 job.state() == dcvlr::v1::JOB_STATE_FAILED;
        },
        std::chrono::seconds(60));
    const int64_t submitted = EventTime(job, dcvlr::v1::EVENT_TYPE_SUBMITTED);
    const int64_t started = EventTime(job, dcvlr::v1::EVENT_TYPE_STARTED);
    if (j > 0 && submitted >= 0 && started >= 0) {  // the first one warms up
      ms.push_back(static_cast<double>(started - submitted));
    }
  }
  return ms;
}

// Wall time of `dcvlrctl submit FILE`, in ms, `runs` times.
std::vector<double> CtlSubmit(const std::string& binary, const std::string& dir,
                              int runs) {
  Coordinator coordinator(binary, dir);
  const std::string file = dir + "/job.yaml";
  std::ofstream(file) << kPendingJob;
  std::vector<double> ms;
  for (int r = 0; r < runs + 1; ++r) {
    const Clock::time_point began = Clock::now();
    const pid_t pid = fork();
    if (pid == 0) {
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      const std::string ctl = BinDir() + "/dcvlrctl";
      execl(ctl.c_str(), "dcvlrctl", "--coordinator",
            coordinator.address().c_str(), "--user", "bench", "submit",
            file.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    const double elapsed =
        std::chrono::duration<double, std::milli>(Clock::now() - began).count();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "dcvlrctl submit failed (status %d)\n", status);
      exit(1);
    }
    if (r > 0) ms.push_back(elapsed);
  }
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> binaries;
  double seconds = 5;
  std::vector<int> client_counts = {1, 8, 64};
  int rounds = 2;
  int latency_jobs = 100;
  int ctl_runs = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--coordinator") {
      binaries.push_back(value);
    } else if (flag == "--seconds") {
      seconds = std::stod(value);
    } else if (flag == "--clients") {
      client_counts.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        int n;
        if (!absl::SimpleAtoi(part, &n) || n < 1) {
          fprintf(stderr, "--clients: bad count '%s'\n",
                  std::string(part).c_str());
          return 2;
        }
        client_counts.push_back(n);
      }
    } else if (flag == "--rounds") {
      rounds = std::stoi(value);
    } else if (flag == "--latency-jobs") {
      latency_jobs = std::stoi(value);
    } else if (flag == "--ctl-runs") {
      ctl_runs = std::stoi(value);
    } else {
      fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (binaries.empty()) binaries.push_back(BinDir() + "/dcvlr-coordinator");

  char tmpl[] = "/tmp/dcvlr-submit-bench-XXXXXX";
  const std::string root = mkdtemp(tmpl);
  // Per binary: submits/s per client count (one figure per round), latency
  // and dcvlrctl samples over all rounds.
  std::map<std::string, std::map<int, std::vector<double>>> rates;
  std::map<std::string, std::vector<double>> latency, ctl;
  int run = 0;
  for (int round = 0; round < rounds; ++round) {
    for (const std::string& binary : binaries) {
      for (int clients : client_counts) {
        const double rate = Throughput(
            binary, root + "/run-" + std::to_string(run++), clients, seconds);
        rates[binary][clients].push_back(rate);
        printf("round %d %s clients=%d: %.0f durable submits/s\n", round,
               binary.c_str(), clients, rate);
        fflush(stdout);
      }
      std::vector<double> l =
          Latency(binary, root + "/run-" + std::to_string(run++), latency_jobs);
      latency[binary].insert(latency[binary].end(), l.begin(), l.end());
      std::vector<double> c =
          CtlSubmit(binary, root + "/run-" + std::to_string(run++), ctl_runs);
      ctl[binary].insert(ctl[binary].end(), c.begin(), c.end());
      printf(
          "round %d %s submit->started p50 %.1f ms; dcvlrctl submit p50 "
          "%.1f ms\n",
          round, binary.c_str(), Percentile(l, 0.5), Percentile(c, 0.5));
      fflush(stdout);
    }
  }
  printf("\n%-40s", "coordinator");
  for (int clients : client_counts)
    printf(" %9s", ("c=" + std::to_string(clients)).c_str());
  printf(" %22s %22s\n", "submit->started p50/p99", "dcvlrctl submit p50/p99");
  for (const std::string& binary : binaries) {
    printf("%-40s", binary.c_str());
    for (int clients : client_counts) {
      printf(" %9.0f", Percentile(rates[binary][clients], 0.5));
    }
    printf(" %12.1f / %6.1f ms %12.1f / %6.1f ms\n",
           Percentile(latency[binary], 0.5), Percentile(latency[binary], 0.99),
           Percentile(ctl[binary], 0.5), Percentile(ctl[binary], 0.99));
  }
  printf(
      "(durable submits/s: median over rounds; latency and dcvlrctl: "
      "percentiles over every sample)\n");
  std::filesystem::remove_all(root);
  return 0;
}
