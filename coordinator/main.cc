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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dcvlr-coordinator: queues and schedules dcvlr jobs"};
  std::string listen = "127.0.0.1:7070";
  std::string state_dir = "dcvlr-state";
  int64_t node_timeout_ms = 8000;
  int64_t heartbeat_interval_ms = 1000;
  std::string checkpoint_root;
  std::string cluster_config_path;
  std::string benchmarks_path;
  std::string metrics_listen;
  std::string sd_file;
  app.add_option("--listen", listen,
                 "HOST:PORT to serve on; port 0 picks a free one");
  app.add_option("--state-dir", state_dir,
                 "directory for the job store (SQLite) and job logs");
  app.add_option("--node-timeout-ms", node_timeout_ms,
                 "a node silent this long is lost and its jobs requeued")
      ->check(CLI::Range(int64_t{100}, int64_t{3600000}));
  app.add_option("--heartbeat-interval-ms", heartbeat_interval_ms,
                 "how often agents send heartbeats")
      ->check(CLI::Range(int64_t{10}, int64_t{60000}));
  app.add_option("--checkpoint-root", checkpoint_root,
                 "a directory every node mounts; jobs without checkpoint_dir "
                 "checkpoint to <root>/<job id>, so attempts on any node "
                 "resume from the same place");
  app.add_option("--cluster-config", cluster_config_path,
                 "users, groups, shares, quotas, preemption (YAML); reloaded "
                 "on SIGHUP, and a bad file leaves the old one in force");
  app.add_option("--benchmarks", benchmarks_path,
                 "the benchmarks eval jobs may name (YAML, e.g. "
                 "configs/benchmarks.yaml); reloaded on SIGHUP");
  app.add_option("--metrics-listen", metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on (/metrics); port 0 "
                 "picks a free one, written to <state-dir>/metrics.addr");
  app.add_option("--prometheus-sd-file", sd_file,
                 "keep this file listing the coordinator's and every agent's "
                 "metrics address, for Prometheus' file_sd_configs");
  CLI11_PARSE(app, argc, argv);

  // Signals are taken by a thread of our own (sigwait); block them everywhere.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) {
    fprintf(stderr, "dcvlr-coordinator: --state-dir %s: %s\n",
            state_dir.c_str(), ec.message().c_str());
    return 2;
  }
  auto store = dcvlr::Store::Open(state_dir + "/state.db");
  if (!store.ok()) {
    fprintf(stderr, "dcvlr-coordinator: %s\n",
            store.status().ToString().c_str());
    return 1;
  }
  dcvlr::LogStore logs(state_dir + "/logs");
  // The metric history has a connection of its own to the same database:
  // its batched writes need not wait for the core's lock, and may lose
  // their last second in a machine crash.
  auto metrics_store = dcvlr::Store::Open(state_dir + "/state.db",
                                          /*durable=*/false);
  if (!metrics_store.ok()) {
    fprintf(stderr, "dcvlr-coordinator: %s\n",
            metrics_store.status().ToString().c_str());
    return 1;
  }
  dcvlr::MetricHistory history(dcvlr::MetricHistoryOptions(),
                               *std::move(metrics_store));
  if (absl::Status s = history.Recover(); !s.ok()) {
    fprintf(stderr, "dcvlr-coordinator: recovering metric history: %s\n",
            s.ToString().c_str());
    return 1;
  }
  auto exporter = std::make_shared<dcvlr::CoordinatorMetrics>(&history);
  dcvlr::CoreOptions options;
  options.now_ms = [] { return absl::ToUnixMillis(absl::Now()); };
  absl::BitGen bitgen;
  absl::Mutex bitgen_mu;
  options.random = [&bitgen, &bitgen_mu] {
    absl::MutexLock lock(&bitgen_mu);
    return absl::Uniform<double>(bitgen, 0.0, 1.0);
  };
  options.node_timeout_ms = node_timeout_ms;
  options.heartbeat_interval_ms = heartbeat_interval_ms;
  options.metric_history = &history;
  options.observer = exporter.get();
  options.steady_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  if (!checkpoint_root.empty()) {
    options.checkpoint_root = fs::absolute(checkpoint_root).string();
  }
  if (!cluster_config_path.empty()) {
    auto config = dcvlr::LoadClusterConfigFile(cluster_config_path);
    if (!config.ok()) {
      fprintf(stderr, "dcvlr-coordinator: %s\n",
              std::string(config.status().message()).c_str());
      return 2;
    }
    options.cluster_config =
        std::make_shared<const dcvlr::ClusterConfig>(*std::move(config));
  }
  if (!benchmarks_path.empty()) {
    auto benchmarks = dcvlr::LoadBenchmarksFile(benchmarks_path);
    if (!benchmarks.ok()) {
      fprintf(stderr, "dcvlr-coordinator: %s\n",
              std::string(benchmarks.status().message()).c_str());
      return 2;
    }
    options.benchmarks = *std::move(benchmarks);
  }
  dcvlr::Core core(options, *std::move(store), &logs,
                   std::make_unique<dcvlr::FirstFitPolicy>());
  if (absl::Status s = core.Recover(); !s.ok()) {
    fprintf(stderr, "dcvlr-coordinator: recovering %s: %s\n",
            state_dir.c_str(), s.ToString().c_str());
    return 1;
  }

  exporter->SetCore(&core);

  // Prometheus metrics, on a port of their own.
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string metrics_address;
  if (!metrics_listen.empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(metrics_listen);
    } catch (const std::exception& e) {
      fprintf(stderr, "dcvlr-coordinator: --metrics-listen %s: %s\n",
              metrics_listen.c_str(), e.what());
      return 2;
    }
    exposer->RegisterCollectable(exporter);
    const std::vector<int> ports = exposer->GetListeningPorts();
    std::string metrics_host =
        metrics_listen.substr(0, metrics_listen.rfind(':'));
    if (metrics_host.empty() || metrics_host == "0.0.0.0" ||
        metrics_host == "::" || metrics_host == "[::]") {
      // Every interface: name this machine in the targets file.
      char hostname[256] = {};
      gethostname(hostname, sizeof(hostname) - 1);
      metrics_host = hostname;
    }
    metrics_address =
        absl::StrCat(metrics_host, ":", ports.empty() ? 0 : ports[0]);
    fprintf(stderr, "dcvlr-coordinator: metrics on http://%s/metrics\n",
            metrics_address.c_str());
    if (!WriteAtomically(state_dir + "/metrics.addr", metrics_address + "\n")) {
      fprintf(stderr, "dcvlr-coordinator: cannot write %s/metrics.addr\n",
              state_dir.c_str());
    }
  }

  dcvlr::ClientServiceImpl client_service(&core, &logs, &history);
  dcvlr::AgentServiceImpl agent_service(&core, &logs, &history);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&client_service);
  builder.RegisterService(&agent_service);
  // Agents send keepalive pings so that a cut-off stream is noticed.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    fprintf(stderr, "dcvlr-coordinator: cannot listen on %s\n",
            listen.c_str());
    return 1;
  }
  const std::string host = listen.substr(0, listen.rfind(':'));
  const std::string address = absl::StrCat(host, ":", port);
  printf("listening on %s\n", address.c_str());
  fflush(stdout);
  if (!WriteAtomically(state_dir + "/coordinator.addr", address + "\n")) {
    fprintf(stderr, "dcvlr-coordinator: cannot write %s/coordinator.addr\n",
            state_dir.c_str());
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
        fprintf(stderr, "dcvlr-coordinator: metric history: %s\n",
                s.ToString().c_str());
      }
      if (!sd_file.empty()) {
        std::string now =
            dcvlr::PrometheusTargets(core.Snapshot(), metrics_address);
        if (now != targets && WriteAtomically(sd_file, now)) {
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
    if (!benchmarks_path.empty()) {
      auto benchmarks = dcvlr::LoadBenchmarksFile(benchmarks_path);
      if (!benchmarks.ok()) {
        fprintf(stderr,
                "dcvlr-coordinator: SIGHUP: %s rejected, the old list stays "
                "in force:\n%s\n",
                benchmarks_path.c_str(),
                std::string(benchmarks.status().message()).c_str());
      } else {
        core.SetBenchmarks(*std::move(benchmarks));
        fprintf(stderr, "dcvlr-coordinator: SIGHUP: reloaded %s\n",
                benchmarks_path.c_str());
      }
    }
    if (cluster_config_path.empty()) {
      if (benchmarks_path.empty()) {
        fprintf(stderr, "dcvlr-coordinator: SIGHUP: no --cluster-config or "
                        "--benchmarks to reload\n");
      }
      continue;
    }
    auto config = dcvlr::LoadClusterConfigFile(cluster_config_path);
    if (!config.ok()) {
      fprintf(stderr,
              "dcvlr-coordinator: SIGHUP: %s rejected, the old config stays "
              "in force:\n%s\n",
              cluster_config_path.c_str(),
              std::string(config.status().message()).c_str());
      continue;
    }
    core.SetClusterConfig(
        std::make_shared<const dcvlr::ClusterConfig>(*std::move(config)));
    fprintf(stderr, "dcvlr-coordinator: SIGHUP: reloaded %s\n",
            cluster_config_path.c_str());
  }
  fprintf(stderr, "dcvlr-coordinator: signal %d, shutting down\n",
          signal_number);
  stopping = true;
  client_service.Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  ticker.join();
  if (absl::Status s = core.SaveUsage(); !s.ok()) {
    fprintf(stderr, "dcvlr-coordinator: usage not saved: %s\n",
            s.ToString().c_str());
  }
  housekeeper.join();
  exposer.reset();
  return 0;
}
