// Monitoring through a real Prometheus: it discovers the coordinator and the
// agents from the coordinator's file_sd targets file, scrapes them, and
// PromQL finds a running job's training curves and GPU allocation. Also: the
// Grafana dashboard asks only for metrics the exporters serve, and per-job
// series leave no labels behind.
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster.h"
#include "tests/http.h"

namespace dcvlr::testing {
namespace {

using ::testing::HasSubstr;

std::string SourceDir() { return DCVLR_SOURCE_DIR; }

// A Prometheus server on loopback that reads the targets file `sd_file`.
class Prometheus {
 public:
  Prometheus(const std::string& dir, const std::string& sd_file)
      : address_("127.0.0.1:" + std::to_string(FreePort())) {
    const std::string config = dir + "/prometheus.yml";
    std::ofstream(config) << "global:\n"
                             "  scrape_interval: 1s\n"
                             "  scrape_timeout: 1s\n"
                             "  evaluation_interval: 1s\n"
                             "scrape_configs:\n"
                             "  - job_name: dcvlr\n"
                             "    file_sd_configs:\n"
                             "      - files: ['"
                          << sd_file
                          << "']\n"
                             "        refresh_interval: 1s\n";
    process_ = std::make_unique<Process>(
        std::vector<std::string>{
            "/usr/bin/prometheus", "--config.file=" + config,
            "--web.listen-address=" + address_,
            "--storage.tsdb.path=" + dir + "/tsdb", "--log.level=warn"},
        dir + "/prometheus.log");
  }

  bool AwaitReady() {
    return Eventually(
        [&] { return HttpGet("http://" + address_ + "/-/ready").has_value(); },
        std::chrono::seconds(60));
  }

  // Waits until `expr` returns at least one series and returns the result.
  nlohmann::json AwaitSeries(const std::string& expr) {
    nlohmann::json result;
    Eventually(
        [&] {
          result = PromQuery(address_, expr);
          return result.is_array() && !result.empty();
        },
        std::chrono::seconds(60));
    return result;
  }

  const std::string& address() const { return address_; }

 private:
  std::string address_;
  std::unique_ptr<Process> process_;
};

std::string SdFile(const Cluster& cluster) {
  return cluster.dir() + "/targets.json";
}

void StartMonitoredCluster(Cluster& cluster, int agents, int gpus) {
  cluster.StartCoordinator({"--metrics-listen", "127.0.0.1:0",
                            "--prometheus-sd-file", SdFile(cluster)});
  for (int i = 1; i <= agents; ++i) {
    cluster.StartAgent("n" + std::to_string(i), gpus,
                       {"--metrics-listen", "127.0.0.1:0"});
  }
  ASSERT_TRUE(cluster.AwaitReadyNodes(agents));
}

std::string CoordinatorMetrics(const Cluster& cluster) {
  const std::string address =
      ReadAddress(cluster.state_dir() + "/metrics.addr");
  return HttpGet("http://" + address + "/metrics").value_or("");
}

std::string AgentMetrics(const Cluster& cluster, const std::string& name) {
  const std::string address =
      ReadAddress(cluster.dir() + "/work-" + name + "/metrics.addr");
  return HttpGet("http://" + address + "/metrics").value_or("");
}

// A job that writes a metrics line every 0.1 s until it is stopped.
std::string MetricsWriter(const std::string& name, int gpus) {
  return "name: " + name +
         "\nkind: command\nresources: {gpus_per_node: " + std::to_string(gpus) +
         "}\nrun: |\n"
         "  i=0\n"
         "  while [ $i -lt 3000 ]; do\n"
         "    i=$((i+1))\n"
         "    echo \"{\\\"step\\\": $i, \\\"loss\\\": 2.5, \\\"lr\\\": 0.0003, "
         "\\\"grad_norm\\\": 1.25, \\\"tokens_per_s\\\": 5000, "
         "\\\"samples_per_s\\\": 40, \\\"mfu\\\": 0.3, \\\"max_steps\\\": "
         "3000, "
         "\\\"eval_accuracy\\\": 0.5, \\\"eval_accuracy/mathvista\\\": 0.25, "
         "\\\"eval_hits/mathvista\\\": 25, \\\"eval_total/mathvista\\\": "
         "100}\" "
         ">> \"$DCVLR_METRICS_FILE\"\n"
         "    sleep 0.1\n"
         "  done\n";
}

TEST(MonitoringTest, PrometheusFindsTheRunningJobsLossAndGpuAllocation) {
  Cluster cluster;
  StartMonitoredCluster(cluster, 1, 2);
  Prometheus prometheus(cluster.dir(), SdFile(cluster));
  ASSERT_TRUE(prometheus.AwaitReady());
  const std::string id =
      cluster.Submit("writer.yaml", MetricsWriter("curves", 1));

  nlohmann::json loss =
      prometheus.AwaitSeries("dcvlr_job_loss{job_id=\"" + id + "\"}");
  ASSERT_EQ(loss.size(), 1u) << loss.dump();
  EXPECT_EQ(loss[0]["metric"]["job_name"], "curves");
  EXPECT_EQ(loss[0]["metric"]["user"], "tester");
  EXPECT_EQ(loss[0]["metric"]["dcvlr_role"], "coordinator");
  EXPECT_EQ(loss[0]["value"][1], "2.5");

  // The step climbs between scrapes: a curve, not one point.
  nlohmann::json steps = prometheus.AwaitSeries(
      "changes(dcvlr_job_step{job_id=\"" + id + "\"}[1m]) > 1");
  EXPECT_EQ(steps.size(), 1u) << steps.dump();

  // The GPU it holds, seen by the coordinator and by the agent.
  nlohmann::json held =
      prometheus.AwaitSeries("dcvlr_gpu_allocated{job_id=\"" + id + "\"} == 1");
  ASSERT_EQ(held.size(), 1u) << held.dump();
  EXPECT_EQ(held[0]["metric"]["node"], "n1");
  nlohmann::json on_agent = prometheus.AwaitSeries(
      "dcvlr_agent_gpu_allocated{job_id=\"" + id + "\"} == 1");
  ASSERT_EQ(on_agent.size(), 1u) << on_agent.dump();
  EXPECT_EQ(on_agent[0]["metric"]["dcvlr_role"], "agent");
  EXPECT_EQ(on_agent[0]["metric"]["uuid"],
            "pretend-n1-" + held[0]["metric"]["gpu"].get<std::string>());
  nlohmann::json allocated =
      prometheus.AwaitSeries("sum(dcvlr_node_gpus_allocated) == 1");
  EXPECT_EQ(allocated.size(), 1u);
  nlohmann::json free =
      prometheus.AwaitSeries("dcvlr_node_gpus_free{node=\"n1\"} == 1");
  EXPECT_EQ(free.size(), 1u);

  CommandResult cancel = cluster.Ctl({"cancel", id, "--wait"});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
}

// Names of the metrics a PromQL expression reads: identifiers outside
// strings, label matchers and ranges that are not functions, keywords or
// label lists (by/without/on/ignoring (...)).
std::set<std::string> MetricNames(std::string expr) {
  expr = std::regex_replace(expr, std::regex(R"("([^"\\]|\\.)*")"), " ");
  expr = std::regex_replace(expr, std::regex(R"(\{[^}]*\})"), " ");
  expr = std::regex_replace(expr, std::regex(R"(\[[^\]]*\])"), " ");
  expr = std::regex_replace(
      expr,
      std::regex(
          R"(\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\))"),
      " ");
  expr = std::regex_replace(expr, std::regex(R"(\$\{?[A-Za-z_0-9]+\}?)"), " ");
  static const std::set<std::string> kKeywords = {
      "by",          "without", "on",  "ignoring", "group_left",
      "group_right", "bool",    "and", "or",       "unless",
      "offset",      "inf",     "nan"};
  std::set<std::string> names;
  const std::regex identifier(R"([A-Za-z_:][A-Za-z0-9_:]*)");
  for (std::sregex_iterator it(expr.begin(), expr.end(), identifier), end;
       it != end; ++it) {
    const std::string name = it->str();
    const size_t after = it->position() + name.size();
    const size_t next = expr.find_first_not_of(" \t\n", after);
    const bool function = next != std::string::npos && expr[next] == '(';
    const bool number_suffix =
        it->position() > 0 &&
        isdigit(static_cast<unsigned char>(expr[it->position() - 1]));
    if (function || number_suffix || kKeywords.count(name)) continue;
    names.insert(name);
  }
  return names;
}

// Every PromQL expression of a Grafana dashboard: panel targets' `expr`,
// and the metric of each `label_values(metric, label)` variable.
void CollectExprs(const nlohmann::json& node, std::vector<std::string>* out) {
  if (node.is_object()) {
    for (auto& [key, value] : node.items()) {
      if (key == "expr" && value.is_string()) {
        out->push_back(value.get<std::string>());
      } else if (key == "query" && value.is_string()) {
        std::smatch m;
        const std::string query = value.get<std::string>();
        if (std::regex_search(
                query, m, std::regex(R"(label_values\((.*),\s*\w+\)\s*$)"))) {
          out->push_back(m[1].str());
        }
      } else {
        CollectExprs(value, out);
      }
    }
  } else if (node.is_array()) {
    for (const auto& value : node) CollectExprs(value, out);
  }
}

// Names an exposition declares (# TYPE lines), with a histogram's and a
// summary's _bucket, _sum and _count.
std::set<std::string> ExportedNames(const std::string& text) {
  std::set<std::string> names;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 4 || parts[0] != "#" || parts[1] != "TYPE") continue;
    names.insert(parts[2]);
    if (parts[3] == "histogram" || parts[3] == "summary") {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        names.insert(parts[2] + suffix);
      }
    }
  }
  return names;
}

TEST(MonitoringTest, DashboardReadsOnlyMetricsTheExportersServe) {
  std::ifstream file(SourceDir() + "/deploy/grafana/dashboards/dcvlr.json");
  ASSERT_TRUE(file.good());
  const nlohmann::json dashboard = nlohmann::json::parse(file);
  std::vector<std::string> exprs;
  CollectExprs(dashboard, &exprs);
  ASSERT_GE(exprs.size(), 10u);
  std::set<std::string> used;
  for (const std::string& expr : exprs) {
    for (const std::string& name : MetricNames(expr)) used.insert(name);
  }
  EXPECT_TRUE(used.count("dcvlr_job_loss"));
  EXPECT_TRUE(used.count("dcvlr_gpu_utilization_ratio"));

  Cluster cluster;
  StartMonitoredCluster(cluster, 1, 2);
  const std::string id = cluster.Submit("writer.yaml", MetricsWriter("all", 1));
  std::string coordinator;
  ASSERT_TRUE(Eventually([&] {
    coordinator = CoordinatorMetrics(cluster);
    return coordinator.find("dcvlr_eval_total{") != std::string::npos;
  })) << coordinator;
  std::set<std::string> exported = ExportedNames(coordinator);
  for (const std::string& name : ExportedNames(AgentMetrics(cluster, "n1"))) {
    exported.insert(name);
  }
  exported.insert("up");  // Prometheus' own, per target
  for (const std::string& name : used) {
    EXPECT_TRUE(exported.count(name)) << name << " is on the dashboard but no "
                                      << "exporter serves it";
  }

  // Once the job has ended its training gauges are gone, but its eval
  // scores stay (eval jobs are short; their scores outlive them).
  CommandResult cancel = cluster.Ctl({"cancel", id, "--wait"});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  const std::string after = CoordinatorMetrics(cluster);
  EXPECT_THAT(after, HasSubstr("dcvlr_eval_accuracy{benchmark=\"mathvista\","
                               "job_id=\"" +
                               id + "\""));
  EXPECT_THAT(after, ::testing::Not(HasSubstr("dcvlr_job_loss{")));
}

int SeriesCount(const std::string& exposition) {
  int count = 0;
  std::istringstream in(exposition);
  for (std::string line; std::getline(in, line);) {
    count += !line.empty() && line[0] != '#';
  }
  return count;
}

TEST(MonitoringTest, PerJobSeriesLeaveNoLabelsBehindAfterAThousandJobs) {
  Cluster cluster;
  StartMonitoredCluster(cluster, 2, 16);
  const int baseline = SeriesCount(CoordinatorMetrics(cluster));
  ASSERT_GT(baseline, 0);

  // A job reporting metrics adds series while it runs...
  const std::string writer =
      cluster.Submit("writer.yaml", MetricsWriter("writer", 1));
  ASSERT_TRUE(Eventually([&] {
    return CoordinatorMetrics(cluster).find("job_id=\"" + writer + "\"") !=
           std::string::npos;
  }));
  EXPECT_GT(SeriesCount(CoordinatorMetrics(cluster)), baseline);

  // ...and so do a thousand short ones, each writing one line.
  v1::SubmitJobRequest request;
  request.set_source_name("short.yaml");
  request.set_source(
      "name: short\nkind: command\nresources: {gpus_per_node: 1}\n"
      "run: |\n  echo \"{\\\"step\\\": 1, \\\"loss\\\": $RANDOM}\" >> "
      "\"$DCVLR_METRICS_FILE\"\n");
  std::vector<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    grpc::ClientContext context;
    v1::SubmitJobResponse response;
    grpc::Status status =
        cluster.stub()->SubmitJob(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ids.push_back(response.job().id());
  }
  CommandResult cancel = cluster.Ctl({"cancel", writer, "--wait"});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  ASSERT_TRUE(Eventually(
      [&] {
        grpc::ClientContext context;
        v1::ListJobsRequest list;
        list.add_states(v1::JOB_STATE_PENDING);
        list.add_states(v1::JOB_STATE_SCHEDULED);
        list.add_states(v1::JOB_STATE_RUNNING);
        list.set_limit(1);
        v1::ListJobsResponse response;
        return cluster.stub()->ListJobs(&context, list, &response).ok() &&
               response.jobs_size() == 0;
      },
      std::chrono::seconds(240)));

  // Their lines arrived (each job's history has its point)...
  for (const std::string& id : {ids.front(), ids[499], ids.back()}) {
    // The harness's stub submitted them as root.
    CommandResult metrics = cluster.Ctl({"metrics", id, "-o", "json"}, "root");
    ASSERT_EQ(metrics.exit_code, 0) << metrics.err;
    auto json = nlohmann::json::parse(metrics.out);
    EXPECT_EQ(json["series"]["loss"]["seen"], 1) << metrics.out;
  }
  // ...and none of their series outlived them.
  const std::string after = CoordinatorMetrics(cluster);
  EXPECT_EQ(SeriesCount(after), baseline) << after;
  EXPECT_THAT(after, HasSubstr("dcvlr_jobs{state=\"succeeded\"} 1000"));
}

}  // namespace
}  // namespace dcvlr::testing
