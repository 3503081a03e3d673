// dcvlr-coordinator: the daemon that queues jobs and schedules them onto
// worker agents. See docs/architecture.md "Processes".
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/address.h"
#include "common/logging.h"
#include "common/tls.h"
#include "coordinator/core.h"
#include "coordinator/metric_history.h"
#include "coordinator/metrics.h"
#include "coordinator/services.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "prometheus/exposer.h"

namespace fs = std::filesystem;

namespace {

// Writes `text` to `path` so that readers see all of it or none.
bool WriteAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.flush()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

struct Flags {
  std::string listen = "127.0.0.1:7070";
  std::string state_dir = "dcvlr-state";
  int64_t node_timeout_ms = 8000;
  int64_t heartbeat_interval_ms = 1000;
  std::string checkpoint_root;
  std::string cluster_config_path;
  std::string benchmarks_path;
  std::string metrics_listen;
  std::string sd_file;
  std::string log_level = "info";
  dcvlr::TlsFlags tls;
  std::string auth = "munge";
  std::string munge_socket;
  bool insecure = false;
};

void AddFlags(CLI::App& app, Flags& flags) {
  app.add_option("--listen", flags.listen,
                 "HOST:PORT to serve on; port 0 picks a free one");
  app.add_option("--state-dir", flags.state_dir,
                 "directory for the job store (SQLite) and job logs");
  app.add_option("--node-timeout-ms", flags.node_timeout_ms,
                 "a node silent this long is lost and its jobs requeued")
      ->check(CLI::Range(int64_t{100}, int64_t{3600000}));
  app.add_option("--heartbeat-interval-ms", flags.heartbeat_interval_ms,
                 "how often agents send heartbeats")
      ->check(CLI::Range(int64_t{10}, int64_t{60000}));
  app.add_option("--checkpoint-root", flags.checkpoint_root,
                 "a directory every node mounts; jobs without checkpoint_dir "
                 "checkpoint to <root>/<job id>, so attempts on any node "
                 "resume from the same place");
  app.add_option("--cluster-config", flags.cluster_config_path,
                 "users, groups, shares, quotas, preemption (YAML); reloaded "
                 "on SIGHUP, and a bad file leaves the old one in force");
  app.add_option("--benchmarks", flags.benchmarks_path,
                 "the benchmarks eval jobs may name (YAML, e.g. "
                 "configs/benchmarks.yaml); reloaded on SIGHUP");
  app.add_option("--metrics-listen", flags.metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on (/metrics); port 0 "
                 "picks a free one, written to <state-dir>/metrics.addr");
  app.add_option("--prometheus-sd-file", flags.sd_file,
                 "keep this file listing the coordinator's and every agent's "
                 "metrics address, for Prometheus' file_sd_configs");
  app.add_option("--log-level", flags.log_level,
                 "debug (every order, report and store batch), info, "
                 "warning or error")
      ->check(CLI::IsMember({"debug", "info", "warning", "error"}));
  app.add_option("--tls-cert", flags.tls.cert,
                 "the coordinator's certificate (PEM, OU=dcvlr-coordinator, "
                 "its host names and addresses in subjectAltName)");
  app.add_option("--tls-key", flags.tls.key, "its private key (PEM)");
  app.add_option("--tls-ca", flags.tls.ca,
                 "the cluster CA's certificate (PEM): agents' and users' "
                 "certificates must be signed by it");
  app.add_option("--auth", flags.auth,
                 "how users prove who they are: munge (a MUNGE credential or "
                 "a user certificate) or cert (a user certificate only)")
      ->check(CLI::IsMember({"munge", "cert"}));
  app.add_option("--munge-socket", flags.munge_socket,
                 "munged's socket (default: the system's)");
  app.add_flag("--insecure", flags.insecure,
               "development only: plaintext, no authentication and no "
               "authorization (every caller is who it claims and may do "
               "anything); refused for a --listen address outside loopback");
}

// The server's credentials and the authentication they allow; an error
// says which flag is wrong and why.
absl::Status MakeSecurity(const Flags& flags,
                          std::shared_ptr<grpc::ServerCredentials>* creds,
                          dcvlr::AuthOptions* auth) {
  if (flags.insecure) {
    if (flags.tls.any()) {
      return absl::InvalidArgumentError(
          "--insecure and --tls-* contradict each other: give one");
    }
    if (!dcvlr::IsLoopbackAddress(flags.listen)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--insecure is refused for --listen ", flags.listen,
          ": without TLS and authentication only loopback may be served"));
    }
    LOG(WARNING) << "--insecure: plaintext gRPC, no authentication, no "
                    "authorization: anyone who can reach "
                 << flags.listen
                 << " may act as any user and as an admin, and register as "
                    "any node. For development only.";
    *creds = grpc::InsecureServerCredentials();
    auth->insecure = true;
    auth->munge = true;
    auth->munge_socket = flags.munge_socket;
    return absl::OkStatus();
  }
  if (!flags.tls.any()) {
    return absl::InvalidArgumentError(
        "give --tls-cert, --tls-key and --tls-ca (deploy/dcvlr-certs.sh makes "
        "them), or --insecure for development on loopback");
  }
  absl::StatusOr<dcvlr::TlsMaterial> tls =
      dcvlr::LoadTls(flags.tls, dcvlr::CertRole::kCoordinator);
  if (!tls.ok()) return tls.status();
  *creds = dcvlr::TlsServerCredentials(*tls);
  auth->insecure = false;
  auth->munge = flags.auth == "munge";
  auth->munge_socket = flags.munge_socket;
  return absl::OkStatus();
}

// The core's options from the flags and the files they name; an error
// names the file, line and key.
absl::StatusOr<dcvlr::CoreOptions> MakeCoreOptions(const Flags& flags) {
  dcvlr::CoreOptions options;
  options.now_ms = [] { return absl::ToUnixMillis(absl::Now()); };
  auto bitgen = std::make_shared<absl::BitGen>();
  auto bitgen_mu = std::make_shared<absl::Mutex>();
  options.random = [bitgen, bitgen_mu] {
    absl::MutexLock lock(bitgen_mu.get());
    return absl::Uniform<double>(*bitgen, 0.0, 1.0);
  };
  options.node_timeout_ms = flags.node_timeout_ms;
  options.heartbeat_interval_ms = flags.heartbeat_interval_ms;
  options.steady_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  if (!flags.checkpoint_root.empty()) {
    options.checkpoint_root = fs::absolute(flags.checkpoint_root).string();
  }
  if (!flags.cluster_config_path.empty()) {
    auto config = dcvlr::LoadClusterConfigFile(flags.cluster_config_path);
    if (!config.ok()) return config.status();
    options.cluster_config =
        std::make_shared<const dcvlr::ClusterConfig>(*std::move(config));
  }
  if (!flags.benchmarks_path.empty()) {
    auto benchmarks = dcvlr::LoadBenchmarksFile(flags.benchmarks_path);
    if (!benchmarks.ok()) return benchmarks.status();
    options.benchmarks = *std::move(benchmarks);
  }
  return options;
}

// Serves Prometheus metrics on --metrics-listen; returns the address
// written to <state-dir>/metrics.addr and the targets file.
absl::StatusOr<std::string> ServeMetrics(
    const Flags& flags, std::shared_ptr<dcvlr::CoordinatorMetrics> exporter,
    std::unique_ptr<prometheus::Exposer>* exposer) {
  try {
    *exposer = std::make_unique<prometheus::Exposer>(flags.metrics_listen);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics-listen ", flags.metrics_listen, ": ", e.what()));
  }
  (*exposer)->RegisterCollectable(exporter);
  const std::vector<int> ports = (*exposer)->GetListeningPorts();
  std::string host =
      flags.metrics_listen.substr(0, flags.metrics_listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "::" || host == "[::]") {
    // Every interface: name this machine in the targets file.
    char hostname[256] = {};
    gethostname(hostname, sizeof(hostname) - 1);
    host = hostname;
  }
  const std::string address =
      absl::StrCat(host, ":", ports.empty() ? 0 : ports[0]);
  LOG(INFO) << "metrics on http://" << address << "/metrics";
  if (!WriteAtomically(flags.state_dir + "/metrics.addr", address + "\n")) {
    LOG(ERROR) << "cannot write " << flags.state_dir << "/metrics.addr";
  }
  return address;
}

// SIGHUP: the benchmark list and the cluster config are read again; a bad
// file is refused and the old one stays in force.
void Reload(const Flags& flags, dcvlr::Core& core) {
  // A reload is the host's operator's (whoever may signal the daemon).
  const dcvlr::Principal host = dcvlr::Principal::User("coordinator", true);
  if (!flags.benchmarks_path.empty()) {
    auto benchmarks = dcvlr::LoadBenchmarksFile(flags.benchmarks_path);
    core.Audit(dcvlr::MakeAuditRecord(host, "reload", flags.benchmarks_path,
                                      benchmarks.status()));
    if (!benchmarks.ok()) {
      LOG(ERROR) << "SIGHUP: " << flags.benchmarks_path
                 << " rejected, the old list stays in force:\n"
                 << benchmarks.status().message();
    } else {
      core.SetBenchmarks(*std::move(benchmarks));
      LOG(INFO) << "SIGHUP: reloaded " << flags.benchmarks_path;
    }
  }
  if (flags.cluster_config_path.empty()) {
    if (flags.benchmarks_path.empty()) {
      LOG(WARNING) << "SIGHUP: no --cluster-config or --benchmarks to reload";
    }
    return;
  }
  auto config = dcvlr::LoadClusterConfigFile(flags.cluster_config_path);
  core.Audit(dcvlr::MakeAuditRecord(host, "reload", flags.cluster_config_path,
                                    config.status()));
  if (!config.ok()) {
    LOG(ERROR) << "SIGHUP: " << flags.cluster_config_path
               << " rejected, the old config stays in force:\n"
               << config.status().message();
    return;
  }
  core.SetClusterConfig(
      std::make_shared<const dcvlr::ClusterConfig>(*std::move(config)));
  LOG(INFO) << "SIGHUP: reloaded " << flags.cluster_config_path;
}

// The gRPC server for clients and agents on --listen; null if it cannot
// listen. `port` gets the port bound.
std::unique_ptr<grpc::Server> Serve(
    const Flags& flags, std::shared_ptr<grpc::ServerCredentials> creds,
    dcvlr::ClientServiceImpl* client_service,
    dcvlr::AgentServiceImpl* agent_service, int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(flags.listen, std::move(creds), port);
  builder.RegisterService(client_service);
  builder.RegisterService(agent_service);
  // Agents send keepalive pings so that a cut-off stream is noticed.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) return nullptr;
  return server;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dcvlr-coordinator: queues and schedules dcvlr jobs"};
  Flags flags;
  AddFlags(app, flags);
  CLI11_PARSE(app, argc, argv);
  dcvlr::InitLogging(argv[0], flags.log_level).IgnoreError();  // checked
  std::shared_ptr<grpc::ServerCredentials> creds;
  dcvlr::AuthOptions auth_options;
  if (absl::Status s = MakeSecurity(flags, &creds, &auth_options); !s.ok()) {
    LOG(ERROR) << s.message();
    return 2;
  }

  // Signals are taken by a thread of our own (sigwait); block them everywhere.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::error_code ec;
  fs::create_directories(flags.state_dir, ec);
  if (ec) {
    LOG(ERROR) << "--state-dir " << flags.state_dir << ": " << ec.message();
    return 2;
  }
  const std::string db = flags.state_dir + "/state.db";
  auto store = dcvlr::Store::Open(db);
  // The metric history has a connection of its own to the same database:
  // its batched writes need not wait for the core's lock, and may lose
  // their last second in a machine crash.
  auto metrics_store = dcvlr::Store::Open(db, /*durable=*/false);
  for (const absl::Status& s : {store.status(), metrics_store.status()}) {
    if (!s.ok()) {
      LOG(ERROR) << s;
      return 1;
    }
  }
  dcvlr::LogStore logs(flags.state_dir + "/logs");
  dcvlr::MetricHistory history(dcvlr::MetricHistoryOptions(),
                               *std::move(metrics_store));
  if (absl::Status s = history.Recover(); !s.ok()) {
    LOG(ERROR) << "recovering metric history: " << s;
    return 1;
  }
  auto exporter = std::make_shared<dcvlr::CoordinatorMetrics>(&history);
  absl::StatusOr<dcvlr::CoreOptions> options = MakeCoreOptions(flags);
  if (!options.ok()) {
    LOG(ERROR) << options.status().message();
    return 2;
  }
  options->metric_history = &history;
  options->observer = exporter.get();
  dcvlr::Core core(*std::move(options), *std::move(store), &logs,
                   std::make_unique<dcvlr::FirstFitPolicy>());
  if (absl::Status s = core.Recover(); !s.ok()) {
    LOG(ERROR) << "recovering " << flags.state_dir << ": " << s;
    return 1;
  }
  exporter->SetCore(&core);

  // Prometheus metrics, on a port of their own.
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string metrics_address;
  if (!flags.metrics_listen.empty()) {
    absl::StatusOr<std::string> address =
        ServeMetrics(flags, exporter, &exposer);
    if (!address.ok()) {
      LOG(ERROR) << address.status().message();
      return 2;
    }
    metrics_address = *address;
  }

  const dcvlr::Authenticator authenticator(auth_options);
  // The audit trail is read on a connection of its own.
  auto audit_store = dcvlr::Store::Open(db, /*durable=*/false);
  if (!audit_store.ok()) {
    LOG(ERROR) << audit_store.status();
    return 1;
  }
  dcvlr::ClientServiceImpl client_service(&core, &logs, &history,
                                          &authenticator, exporter.get(),
                                          *std::move(audit_store));
  dcvlr::AgentServiceImpl agent_service(&core, &logs, &history,
                                        /*require_certificate=*/!flags.insecure,
                                        exporter.get());
  int port = 0;
  std::unique_ptr<grpc::Server> server =
      Serve(flags, std::move(creds), &client_service, &agent_service, &port);
  if (server == nullptr) {
    LOG(ERROR) << "cannot listen on " << flags.listen;
    return 1;
  }
  const std::string host = flags.listen.substr(0, flags.listen.rfind(':'));
  const std::string address = absl::StrCat(host, ":", port);
  printf("listening on %s\n", address.c_str());
  fflush(stdout);
  if (!WriteAtomically(flags.state_dir + "/coordinator.addr", address + "\n")) {
    LOG(ERROR) << "cannot write " << flags.state_dir << "/coordinator.addr";
  }

  std::atomic<bool> stopping{false};
  std::thread ticker([&] {
    while (!stopping) {
      core.Tick();
      core.AwaitWork(absl::Milliseconds(200));
    }
  });

  // Writes the metric history in batches, and keeps the Prometheus targets
  // file current.
  std::thread housekeeper([&] {
    std::string targets;
    while (!stopping) {
      if (absl::Status s = history.Flush(); !s.ok()) {
        LOG(ERROR) << "metric history: " << s;
      }
      if (!flags.sd_file.empty()) {
        std::string now =
            dcvlr::PrometheusTargets(core.Snapshot(), metrics_address);
        if (now != targets && WriteAtomically(flags.sd_file, now)) {
          targets = std::move(now);
        }
      }
      for (int i = 0; i < 10 && !stopping; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    history.Flush().IgnoreError();
  });

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) == 0 && signal_number == SIGHUP) {
    Reload(flags, core);
  }
  LOG(INFO) << "signal " << signal_number << ", shutting down";
  stopping = true;
  client_service.Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  ticker.join();
  if (absl::Status s = core.SaveUsage(); !s.ok()) {
    LOG(ERROR) << "usage not saved: " << s;
  }
  housekeeper.join();
  exposer.reset();
  return 0;
}
