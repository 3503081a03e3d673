// dcvlr-agent: runs the jobs the coordinator places on this machine, under
// the process contract of common/process_contract.h.
#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/tls.h"
#include "prometheus/exposer.h"
#include "worker/agent/agent.h"
#include "worker/agent/agent_metrics.h"
#include "worker/agent/gpu_discovery.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"dcvlr-agent: runs dcvlr jobs on this machine's GPUs"};
  dcvlr::AgentOptions options;
  int gpus = -1;
  char hostname[HOST_NAME_MAX + 1] = {};
  gethostname(hostname, sizeof(hostname));
  options.name = hostname;
  options.work_dir = "dcvlr-work";
  if (const char* env = getenv("DCVLR_COORDINATOR")) options.coordinator = env;
  // Worker programs are looked for beside the agent unless given.
  const fs::path self_dir = fs::read_symlink("/proc/self/exe").parent_path();
  options.trainer_bin = (self_dir / "dcvlr-train").string();
  options.eval_bin = (self_dir / "dcvlr-eval").string();

  app.add_option("--coordinator", options.coordinator,
                 "coordinator HOST:PORT (default: $DCVLR_COORDINATOR)");
  app.add_option("--name", options.name,
                 "this node's name (default: its certificate's CN, else the "
                 "hostname)");
  app.add_option("--gpus", gpus,
                 "pretend this many GPUs; default: discover them with NVML")
      ->check(CLI::Range(0, 64));
  std::vector<int> gpu_domains;
  app.add_option("--gpu-domains", gpu_domains,
                 "with --gpus: each pretend GPU's locality domain (e.g. "
                 "0,0,0,0,1,1,1,1), as NVML-discovered GPUs report their "
                 "NUMA node")
      ->delimiter(',');
  app.add_option("--work-dir", options.work_dir,
                 "where job logs, outputs and checkpoints go");
  app.add_option("--advertise-host", options.advertise_host,
                 "host other nodes reach this one on (MASTER_ADDR); default: "
                 "the address the coordinator sees");
  app.add_option("--lease-ms", options.lease_ms,
                 "stop every job if the coordinator is unreachable this long; "
                 "keep it below the coordinator's --node-timeout-ms")
      ->check(CLI::Range(int64_t{100}, int64_t{3600000}));
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on (/metrics); port 0 "
                 "picks a free one, written to <work-dir>/metrics.addr and "
                 "reported to the coordinator");
  app.add_option("--trainer-bin", options.trainer_bin, "dcvlr-train to run");
  app.add_option("--eval-bin", options.eval_bin, "dcvlr-eval to run");
  app.add_option("--torchrun", options.torchrun_bin,
                 "torchrun to start Oumi training configs with (default: "
                 "torchrun on PATH)");
  dcvlr::TlsFlags tls;
  app.add_option("--tls-cert", tls.cert,
                 "this node's certificate (PEM, OU=dcvlr-node, CN=--name), "
                 "signed by the cluster CA");
  app.add_option("--tls-key", tls.key, "its private key (PEM)");
  app.add_option("--tls-ca", tls.ca,
                 "the cluster CA's certificate (PEM): the coordinator's "
                 "certificate is checked against it before any order is taken");
  bool insecure = false;
  app.add_flag("--insecure", insecure,
               "development only: dial the coordinator in plaintext, without "
               "a certificate (the coordinator must run with --insecure)");
  std::string log_level = "info";
  app.add_option("--log-level", log_level,
                 "debug (every report to the coordinator), info, warning or "
                 "error")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  CLI11_PARSE(app, argc, argv);
  dcvlr::InitLogging(argv[0], log_level).IgnoreError();  // checked

  if (options.coordinator.empty()) {
    LOG(ERROR) << "--coordinator (or DCVLR_COORDINATOR) is required";
    return 2;
  }
  if (insecure == tls.any()) {
    LOG(ERROR) << (insecure ? "--insecure and --tls-* contradict each other: "
                              "give one"
                            : "give --tls-cert, --tls-key and --tls-ca (this "
                              "node's certificate; deploy/dcvlr-certs.sh "
                              "makes them), or --insecure for development");
    return 2;
  }
  if (!insecure) {
    absl::StatusOr<dcvlr::TlsMaterial> material =
        dcvlr::LoadTls(tls, dcvlr::CertRole::kNode);
    if (!material.ok()) {
      LOG(ERROR) << material.status().message();
      return 2;
    }
    // The certificate names the node unless --name is given.
    if (app.count("--name") == 0) options.name = material->common_name;
    if (material->common_name != options.name) {
      LOG(ERROR) << "--tls-cert " << tls.cert << " is node "
                 << material->common_name << "'s certificate; this agent is "
                 << "--name " << options.name
                 << ": the coordinator accepts only the name the certificate "
                    "gives";
      return 2;
    }
    options.credentials = dcvlr::TlsChannelCredentials(*material);
  }
  std::error_code ec;
  fs::create_directories(options.work_dir, ec);
  if (ec) {
    LOG(ERROR) << "--work-dir " << options.work_dir << ": " << ec.message();
    return 2;
  }
  options.work_dir = fs::absolute(options.work_dir).string();
  if (gpus >= 0) {
    options.gpus = dcvlr::PretendGpus(options.name, gpus, gpu_domains);
  } else {
    auto found = dcvlr::DiscoverGpus();
    if (found.ok()) {
      options.gpus = *std::move(found);
    } else {
      LOG(WARNING) << "no GPUs: " << found.status();
    }
  }
  // Metrics: bound before the agent registers, which reports the address.
  std::unique_ptr<prometheus::Exposer> exposer;
  if (!metrics_listen.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_listen);
    } catch (const std::exception& e) {
      LOG(ERROR) << "--metrics-listen " << metrics_listen << ": " << e.what();
      return 2;
    }
    const std::vector<int> ports = exposer->GetListeningPorts();
    options.metrics_address =
        absl::StrCat(metrics_listen.substr(0, metrics_listen.rfind(':')), ":",
                     ports.empty() ? 0 : ports[0]);
    const std::string addr_file = options.work_dir + "/metrics.addr";
    const std::string tmp = addr_file + ".tmp";
    FILE* out = fopen(tmp.c_str(), "w");
    if (out == nullptr ||
        fprintf(out, "%s\n", options.metrics_address.c_str()) < 0 ||
        fclose(out) != 0 || rename(tmp.c_str(), addr_file.c_str()) != 0) {
      LOG(ERROR) << "cannot write " << addr_file;
    }
    LOG(INFO) << "metrics on http://" << options.metrics_address << "/metrics";
  }
  LOG(INFO) << "node=" << options.name << " gpus=" << options.gpus.size()
            << " work_dir=" << options.work_dir;

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  dcvlr::Agent agent(options);
  std::shared_ptr<dcvlr::AgentMetrics> metrics;
  if (exposer != nullptr) {
    dcvlr::AgentMetrics::Sources sources;
    sources.node = options.name;
    sources.gpus = options.gpus;
    if (gpus < 0) {
      auto sampler = dcvlr::GpuSampler::Open();
      if (sampler.ok()) sources.sampler = *std::move(sampler);
    }
    sources.gpu_jobs = [&agent] { return agent.GpuJobs(); };
    sources.points_relayed = [&agent] { return agent.points_relayed(); };
    metrics = std::make_shared<dcvlr::AgentMetrics>(std::move(sources));
    exposer->RegisterCollectable(metrics);
  }
  std::thread signal_thread([&] {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    LOG(INFO) << "signal " << signal_number << ", stopping jobs";
    agent.Shutdown(10);
  });
  agent.Run();
  signal_thread.join();
  return 0;
}
