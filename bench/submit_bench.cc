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
// With --modes insecure,secure each binary is measured both ways: with
// --insecure (plaintext, no authentication) and as a lab runs it (TLS with
// a cluster CA made by deploy/dcvlr-certs.sh, a munged of the benchmark's
// own, a fresh MUNGE credential on every call and the coordinator decoding
// it, agents with node certificates).
//
//   submit_bench [--coordinator PATH]... [--seconds 5] [--clients 1,8,64]
//                [--rounds 2] [--latency-jobs 100] [--ctl-runs 50]
//                [--modes insecure[,secure]]
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "common/munge.h"
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

// TLS and MUNGE as a lab runs them: a CA with certificates for the
// coordinator and node n1, and a munged with a fresh key, under `dir`.
struct Security {
  std::string tls;     // certificates; empty: --insecure
  std::string socket;  // munged's
  std::unique_ptr<Process> munged;

  static std::unique_ptr<Security> Make(const std::string& dir) {
    auto s = std::make_unique<Security>();
    s->tls = dir + "/tls";
    const std::string certs =
        std::string(DCVLR_SOURCE_DIR) + "/deploy/dcvlr-certs.sh";
    for (const std::string& args :
         {std::string(" ca"), std::string(" coordinator localhost"),
          std::string(" node n1")}) {
      const std::string cmd = certs + " --dir " + s->tls + args + " >/dev/null";
      if (system(cmd.c_str()) != 0) {
        fprintf(stderr, "%s failed\n", cmd.c_str());
        exit(1);
      }
    }
    chmod(dir.c_str(), 0755);
    std::filesystem::create_directories(dir + "/munge");
    chmod((dir + "/munge").c_str(), 0700);
    const std::string key = dir + "/munge/key";
    if (system(("/usr/sbin/mungekey --create --keyfile=" + key).c_str()) != 0) {
      fprintf(stderr, "mungekey failed\n");
      exit(1);
    }
    s->socket = dir + "/munge.socket";
    s->munged = std::make_unique<Process>(
        std::vector<std::string>{
            "/usr/sbin/munged", "--foreground", "--socket=" + s->socket,
            "--key-file=" + key, "--log-file=" + dir + "/munge/log",
            "--pid-file=" + dir + "/munge/pid",
            "--seed-file=" + dir + "/munge/seed", "--num-threads=4"},
        dir + "/munged.out");
    if (!Eventually([&] { return std::filesystem::exists(s->socket); })) {
      fprintf(stderr, "munged did not start; see %s/munged.out\n", dir.c_str());
      exit(1);
    }
    return s;
  }
  std::vector<std::string> CoordinatorArgs() const {
    return {"--tls-cert",     tls + "/coordinator.pem",
            "--tls-key",      tls + "/coordinator.key",
            "--tls-ca",       tls + "/ca.pem",
            "--munge-socket", socket};
  }
  std::vector<std::string> AgentArgs() const {
    return {"--tls-cert", tls + "/nodes/n1.pem",
            "--tls-key",  tls + "/nodes/n1.key",
            "--tls-ca",   tls + "/ca.pem"};
  }
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A coordinator process on a fresh state directory; `security` null: with
// --insecure.
class Coordinator {
 public:
  Coordinator(const std::string& binary, const std::string& dir,
              const Security* security)
      : security_(security) {
    std::filesystem::create_directories(dir);
    const std::string log = dir + "/coordinator.log";
    std::vector<std::string> argv = {binary, "--listen", "127.0.0.1:0",
                                     "--state-dir", dir + "/state"};
    if (security == nullptr) {
      argv.push_back("--insecure");
    } else {
      for (const std::string& a : security->CoordinatorArgs()) {
        argv.push_back(a);
      }
    }
    process_ = std::make_unique<Process>(argv, log);
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
    std::shared_ptr<grpc::ChannelCredentials> creds =
        grpc::InsecureChannelCredentials();
    if (security_ != nullptr) {
      grpc::SslCredentialsOptions options;
      options.pem_root_certs = ReadText(security_->tls + "/ca.pem");
      creds = grpc::SslCredentials(options);
    }
    return dcvlr::v1::ClientService::NewStub(
        grpc::CreateCustomChannel(address_, creds, args));
  }

  // A call's context as dcvlrctl makes it: with a fresh MUNGE credential.
  void Prepare(grpc::ClientContext* context) const {
    if (security_ == nullptr) return;
    absl::StatusOr<std::string> credential =
        dcvlr::MungeEncode(security_->socket);
    if (!credential.ok()) {
      fprintf(stderr, "%s\n",
              std::string(credential.status().message()).c_str());
      exit(1);
    }
    context->AddMetadata(dcvlr::kMungeMetadataKey, *credential);
  }

  // One SubmitJob of `yaml`; the job's id, or exits on failure.
  std::string Submit(dcvlr::v1::ClientService::Stub* stub,
                     const std::string& yaml) const {
    grpc::ClientContext context;
    Prepare(&context);
    dcvlr::v1::SubmitJobRequest request;
    if (security_ == nullptr) request.set_user("bench");
    request.set_source_name("bench.yaml");
    request.set_source(yaml);
    dcvlr::v1::SubmitJobResponse response;
    const grpc::Status status = stub->SubmitJob(&context, request, &response);
    if (!status.ok()) {
      fprintf(stderr, "submit: %s\n", status.error_message().c_str());
      exit(1);
    }
    return response.job().id();
  }

  const Security* security() const { return security_; }

 private:
  const Security* const security_;
  std::unique_ptr<Process> process_;
  std::string address_;
};

constexpr char kPendingJob[] =
    "kind: command\nrun: 'true'\nresources: {gpus_per_node: 1}\n";

// Durable submits per second with `clients` concurrent clients.
double Throughput(const std::string& binary, const std::string& dir,
                  const Security* security, int clients, double seconds) {
  Coordinator coordinator(binary, dir, security);
  std::vector<std::unique_ptr<dcvlr::v1::ClientService::Stub>> stubs;
  for (int c = 0; c < clients; ++c) {
    stubs.push_back(coordinator.Connect());
    coordinator.Submit(stubs.back().get(), kPendingJob);  // warm
  }
  std::atomic<bool> stop{false};
  std::atomic<int64_t> done{0};
  std::vector<std::thread> threads;
  const Clock::time_point began = Clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      while (!stop.load(std::memory_order_relaxed)) {
        coordinator.Submit(stubs[c].get(), kPendingJob);
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
                            const Security* security, int jobs) {
  Coordinator coordinator(binary, dir, security);
  std::vector<std::string> agent_argv = {BinDir() + "/dcvlr-agent",
                                         "--coordinator",
                                         coordinator.address(),
                                         "--name",
                                         "n1",
                                         "--gpus",
                                         "1",
                                         "--work-dir",
                                         dir + "/work"};
  if (security == nullptr) {
    agent_argv.push_back("--insecure");
  } else {
    for (const std::string& a : security->AgentArgs()) agent_argv.push_back(a);
  }
  Process agent(agent_argv, dir + "/agent.log");
  auto stub = coordinator.Connect();
  auto get = [&](const std::string& id) {
    grpc::ClientContext context;
    coordinator.Prepare(&context);
    dcvlr::v1::GetJobRequest request;
    request.set_job(id);
    dcvlr::v1::Job job;
    stub->GetJob(&context, request, &job);
    return job;
  };
  Eventually(
      [&] {
        grpc::ClientContext context;
        coordinator.Prepare(&context);
        dcvlr::v1::ListNodesResponse nodes;
        stub->ListNodes(&context, {}, &nodes);
        return nodes.nodes_size() == 1 &&
               nodes.nodes(0).state() == dcvlr::v1::NODE_STATE_READY;
      },
      std::chrono::seconds(60));
  std::vector<double> ms;
  for (int j = 0; j < jobs + 1; ++j) {
    const std::string id = coordinator.Submit(stub.get(), kPendingJob);
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
                              const Security* security, int runs) {
  Coordinator coordinator(binary, dir, security);
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
      if (security == nullptr) {
        execl(ctl.c_str(), "dcvlrctl", "--coordinator",
              coordinator.address().c_str(), "--user", "bench", "submit",
              file.c_str(), static_cast<char*>(nullptr));
      } else {
        const std::string ca = security->tls + "/ca.pem";
        execl(ctl.c_str(), "dcvlrctl", "--coordinator",
              coordinator.address().c_str(), "--tls-ca", ca.c_str(),
              "--munge-socket", security->socket.c_str(), "submit",
              file.c_str(), static_cast<char*>(nullptr));
      }
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
  std::vector<std::string> modes = {"insecure"};
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
    } else if (flag == "--modes") {
      modes.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        if (part != "insecure" && part != "secure") {
          fprintf(stderr, "--modes: insecure or secure, not '%s'\n",
                  std::string(part).c_str());
          return 2;
        }
        modes.emplace_back(part);
      }
    } else {
      fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (binaries.empty()) binaries.push_back(BinDir() + "/dcvlr-coordinator");

  char tmpl[] = "/tmp/dcvlr-submit-bench-XXXXXX";
  const std::string root = mkdtemp(tmpl);
  std::unique_ptr<Security> security;
  if (std::find(modes.begin(), modes.end(), "secure") != modes.end()) {
    chmod(root.c_str(), 0755);  // munged wants its socket's path open to all
    security = Security::Make(root + "/security");
  }
  // Per binary and mode: submits/s per client count (one figure per round),
  // latency and dcvlrctl samples over all rounds.
  std::vector<std::pair<std::string, const Security*>> setups;
  std::vector<std::string> labels;
  for (const std::string& binary : binaries) {
    for (const std::string& mode : modes) {
      setups.emplace_back(binary, mode == "secure" ? security.get() : nullptr);
      labels.push_back(binary + " [" + mode + "]");
    }
  }
  std::map<std::string, std::map<int, std::vector<double>>> rates;
  std::map<std::string, std::vector<double>> latency, ctl;
  int run = 0;
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < setups.size(); ++i) {
      const std::string& binary = setups[i].first;
      const Security* sec = setups[i].second;
      const std::string& label = labels[i];
      for (int clients : client_counts) {
        const double rate =
            Throughput(binary, root + "/run-" + std::to_string(run++), sec,
                       clients, seconds);
        rates[label][clients].push_back(rate);
        printf("round %d %s clients=%d: %.0f durable submits/s\n", round,
               label.c_str(), clients, rate);
        fflush(stdout);
      }
      std::vector<double> l = Latency(
          binary, root + "/run-" + std::to_string(run++), sec, latency_jobs);
      latency[label].insert(latency[label].end(), l.begin(), l.end());
      std::vector<double> c = CtlSubmit(
          binary, root + "/run-" + std::to_string(run++), sec, ctl_runs);
      ctl[label].insert(ctl[label].end(), c.begin(), c.end());
      printf(
          "round %d %s submit->started p50 %.1f ms; dcvlrctl submit p50 "
          "%.1f ms\n",
          round, label.c_str(), Percentile(l, 0.5), Percentile(c, 0.5));
      fflush(stdout);
    }
  }
  printf("\n%-50s", "coordinator [mode]");
  for (int clients : client_counts)
    printf(" %9s", ("c=" + std::to_string(clients)).c_str());
  printf(" %22s %22s\n", "submit->started p50/p99", "dcvlrctl submit p50/p99");
  for (const std::string& label : labels) {
    printf("%-50s", label.c_str());
    for (int clients : client_counts) {
      printf(" %9.0f", Percentile(rates[label][clients], 0.5));
    }
    printf(" %12.1f / %6.1f ms %12.1f / %6.1f ms\n",
           Percentile(latency[label], 0.5), Percentile(latency[label], 0.99),
           Percentile(ctl[label], 0.5), Percentile(ctl[label], 0.99));
  }
  printf(
      "(durable submits/s: median over rounds; latency and dcvlrctl: "
      "percentiles over every sample)\n");
  std::filesystem::remove_all(root);
  return 0;
}
