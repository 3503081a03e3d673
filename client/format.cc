#include "client/format.h"

#include <algorithm>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/names.h"

namespace dcvlr {
namespace {

std::string Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::vector<std::string> NodesOf(const v1::Job& job) {
  std::vector<std::string> nodes;
  if (job.attempts_size() == 0) return nodes;
  for (const v1::Placement& p : job.attempts().rbegin()->placements()) {
    nodes.push_back(p.node());
  }
  return nodes;
}

std::string Age(int64_t since_ms) {
  const int64_t seconds = std::max<int64_t>(
      0, (static_cast<int64_t>(time(nullptr)) * 1000 - since_ms) / 1000);
  if (seconds < 120) return absl::StrCat(seconds, "s");
  if (seconds < 7200) return absl::StrCat(seconds / 60, "m");
  if (seconds < 172800) return absl::StrCat(seconds / 3600, "h");
  return absl::StrCat(seconds / 86400, "d");
}

}  // namespace

std::string FormatTime(int64_t time_ms) {
  if (time_ms <= 0) return "-";
  time_t seconds = static_cast<time_t>(time_ms / 1000);
  struct tm local;
  localtime_r(&seconds, &local);
  char text[32];
  strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S", &local);
  return text;
}

nlohmann::json JobToJson(const v1::Job& job) {
  nlohmann::json out;
  out["id"] = job.id();
  out["name"] = job.spec().name();
  out["user"] = job.user();
  out["kind"] = JobKindName(job.spec().kind());
  out["state"] = JobStateName(job.state());
  out["attempt"] = job.attempt();
  out["nodes"] = NodesOf(job);
  out["exit_code"] = job.exit_code();
  out["reason"] = job.reason();
  out["priority"] = job.spec().priority();
  // Another user's job: only what squeue would show came.
  if (job.redacted()) out["redacted"] = true;
  out["resources"] = {
      {"nodes", job.spec().resources().nodes()},
      {"gpus_per_node", job.spec().resources().gpus_per_node()},
      {"procs_per_node", job.spec().resources().procs_per_node()}};
  out["submit_time_ms"] = job.submit_time_ms();
  out["end_time_ms"] = job.end_time_ms();
  out["after"] = std::vector<std::string>(job.spec().after().begin(),
                                          job.spec().after().end());
  nlohmann::json attempts = nlohmann::json::array();
  for (const v1::Attempt& a : job.attempts()) {
    nlohmann::json placements = nlohmann::json::array();
    for (const v1::Placement& p : a.placements()) {
      placements.push_back(
          {{"node", p.node()},
           {"gpus", std::vector<int>(p.gpus().begin(), p.gpus().end())}});
    }
    attempts.push_back({{"number", a.number()},
                        {"placements", placements},
                        {"master_addr", a.master_addr()},
                        {"master_port", a.master_port()},
                        {"scheduled_ms", a.scheduled_ms()},
                        {"started_ms", a.started_ms()},
                        {"ended_ms", a.ended_ms()},
                        {"exit_code", a.exit_code()},
                        {"signal", a.signal()},
                        {"reason", a.reason()}});
  }
  out["attempts"] = attempts;
  nlohmann::json events = nlohmann::json::array();
  for (const v1::JobEvent& e : job.events()) {
    events.push_back({{"time_ms", e.time_ms()},
                      {"attempt", e.attempt()},
                      {"type", EventTypeName(e.type())},
                      {"message", e.message()}});
  }
  out["events"] = events;
  return out;
}

nlohmann::json NodeToJson(const v1::Node& node) {
  nlohmann::json gpus = nlohmann::json::array();
  for (const v1::Gpu& g : node.gpus()) {
    gpus.push_back({{"index", g.index()},
                    {"uuid", g.uuid()},
                    {"name", g.name()},
                    {"memory_bytes", g.memory_bytes()},
                    {"domain", g.domain()}});
  }
  return {{"name", node.name()},
          {"state", NodeStateName(node.state())},
          {"address", node.address()},
          {"gpus_total", node.gpus_size()},
          {"gpus_free", node.gpus_size() - node.gpus_in_use_size()},
          {"gpus_in_use", std::vector<int>(node.gpus_in_use().begin(),
                                           node.gpus_in_use().end())},
          {"attempts", std::vector<std::string>(node.attempts().begin(),
                                                node.attempts().end())},
          {"gpus", gpus},
          {"last_seen_ms", node.last_seen_ms()},
          {"drained", node.drained()}};
}

std::string JobsTable(const std::vector<v1::Job>& jobs) {
  std::vector<std::vector<std::string>> rows = {{"ID", "NAME", "USER", "KIND",
                                                 "STATE", "ATTEMPT", "NODES",
                                                 "EXIT", "AGE", "REASON"}};
  for (const v1::Job& job : jobs) {
    std::vector<std::string> nodes = NodesOf(job);
    rows.push_back(
        {job.id(), job.spec().name(), job.user(),
         JobKindName(job.spec().kind()), JobStateName(job.state()),
         absl::StrCat(job.attempt()),
         nodes.empty() ? "-" : absl::StrJoin(nodes, ","),
         IsTerminal(job.state()) ? absl::StrCat(job.exit_code()) : "-",
         Age(job.submit_time_ms()), job.reason()});
  }
  return Table(rows);
}

std::string NodesTable(const std::vector<v1::Node>& nodes) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "STATE", "ADDRESS", "GPUS(FREE/TOTAL)", "ATTEMPTS"}};
  for (const v1::Node& node : nodes) {
    rows.push_back(
        {node.name(), NodeStateName(node.state()), node.address(),
         absl::StrCat(node.gpus_size() - node.gpus_in_use_size(), "/",
                      node.gpus_size()),
         node.attempts().empty() ? "-" : absl::StrJoin(node.attempts(), ",")});
  }
  return Table(rows);
}

std::string AuditTable(const v1::ListAuditResponse& audit) {
  std::vector<std::vector<std::string>> rows = {
      {"TIME", "WHO", "VIA", "PEER", "ACTION", "TARGET", "OUTCOME"}};
  for (const v1::AuditRecord& r : audit.records()) {
    rows.push_back({FormatTime(r.time_ms()),
                    r.principal().empty() ? "?" : r.principal(),
                    r.method().empty() ? "-" : r.method(),
                    r.peer().empty() ? "-" : r.peer(), r.action(), r.target(),
                    r.outcome()});
  }
  return Table(rows);
}

nlohmann::json AuditToJson(const v1::ListAuditResponse& audit) {
  nlohmann::json out = nlohmann::json::array();
  for (const v1::AuditRecord& r : audit.records()) {
    out.push_back({{"time_ms", r.time_ms()},
                   {"principal", r.principal()},
                   {"method", r.method()},
                   {"peer", r.peer()},
                   {"action", r.action()},
                   {"target", r.target()},
                   {"outcome", r.outcome()}});
  }
  return out;
}

std::string QueueTables(const v1::GetQueueResponse& queue) {
  std::vector<std::vector<std::string>> jobs = {
      {"#", "JOB", "NAME", "USER", "GROUP", "PRIO", "EFFECTIVE", "FAIRSHARE",
       "GPUS", "WAITING"}};
  int position = 0;
  for (const v1::QueueEntry& e : queue.entries()) {
    jobs.push_back({absl::StrCat(++position), e.job_id(), e.name(), e.user(),
                    e.group(), absl::StrCat(e.priority()),
                    absl::StrFormat("%.1f", e.effective_priority()),
                    absl::StrFormat("%.3f", e.fair_share()),
                    absl::StrCat(e.gpus()), e.reason()});
  }
  std::vector<std::vector<std::string>> users = {
      {"USER", "GROUP", "SHARE", "USAGE", "FAIRSHARE", "GPUS_IN_USE"}};
  for (const v1::UserShare& u : queue.users()) {
    users.push_back(
        {u.user(), u.group(), absl::StrFormat("%.3f", u.shares_norm()),
         absl::StrFormat("%.3f", u.usage_norm()),
         absl::StrFormat("%.3f", u.factor()), absl::StrCat(u.gpus_in_use())});
  }
  return Table(jobs) + "\n" + Table(users);
}

nlohmann::json QueueToJson(const v1::GetQueueResponse& queue) {
  nlohmann::json jobs = nlohmann::json::array();
  for (const v1::QueueEntry& e : queue.entries()) {
    jobs.push_back({{"id", e.job_id()},
                    {"name", e.name()},
                    {"user", e.user()},
                    {"group", e.group()},
                    {"priority", e.priority()},
                    {"effective_priority", e.effective_priority()},
                    {"fair_share", e.fair_share()},
                    {"gpus", e.gpus()},
                    {"reason", e.reason()}});
  }
  nlohmann::json users = nlohmann::json::array();
  for (const v1::UserShare& u : queue.users()) {
    users.push_back({{"user", u.user()},
                     {"group", u.group()},
                     {"shares_norm", u.shares_norm()},
                     {"usage_norm", u.usage_norm()},
                     {"fair_share", u.factor()},
                     {"gpus_in_use", u.gpus_in_use()}});
  }
  return {{"jobs", jobs}, {"users", users}, {"as_of_ms", queue.as_of_ms()}};
}

std::string DescribeJob(const v1::Job& job) {
  const v1::JobSpec& spec = job.spec();
  std::string out;
  absl::StrAppend(&out, "Job:        ", job.id(), " (", spec.name(), ")\n");
  absl::StrAppend(&out, "User:       ", job.user(), "\n");
  absl::StrAppend(&out, "Kind:       ", JobKindName(spec.kind()), "\n");
  absl::StrAppend(
      &out, "State:      ", JobStateName(job.state()),
      job.reason().empty() ? "" : absl::StrCat(" (", job.reason(), ")"), "\n");
  if (IsTerminal(job.state())) {
    absl::StrAppend(&out, "Exit code:  ", job.exit_code(), "\n");
  }
  absl::StrAppend(&out, "Priority:   ", spec.priority(), "\n");
  absl::StrAppend(&out, "Resources:  ", spec.resources().nodes(), " node(s) x ",
                  spec.resources().gpus_per_node(), " GPU(s), ",
                  spec.resources().procs_per_node(), " process(es) per node\n");
  absl::StrAppend(&out,
                  "Retry:      max_attempts=", spec.retry().max_attempts(),
                  " on_failure=", spec.retry().on_failure(),
                  " backoff_s=", spec.retry().backoff_s(), "\n");
  if (spec.after_size() > 0) {
    absl::StrAppend(&out, "After:      ", absl::StrJoin(spec.after(), ", "),
                    "\n");
  }
  if (spec.command_size() > 0) {
    absl::StrAppend(&out, "Command:    ", absl::StrJoin(spec.command(), " "),
                    "\n");
  } else if (!spec.run().empty()) {
    absl::StrAppend(&out, "Run:        (script, ", spec.run().size(),
                    " bytes)\n");
  }
  absl::StrAppend(&out, "Source:     ", job.source_name(), "\n");
  absl::StrAppend(&out, "Submitted:  ", FormatTime(job.submit_time_ms()), "\n");
  if (job.attempts_size() > 0) {
    absl::StrAppend(&out, "\nAttempts:\n");
    std::vector<std::vector<std::string>> rows = {
        {"  #", "PLACEMENT", "STARTED", "ENDED", "EXIT", "REASON"}};
    for (const v1::Attempt& a : job.attempts()) {
      std::vector<std::string> where;
      for (const v1::Placement& p : a.placements()) {
        where.push_back(p.gpus().empty()
                            ? p.node()
                            : absl::StrCat(p.node(), "[",
                                           absl::StrJoin(p.gpus(), ","), "]"));
      }
      rows.push_back({absl::StrCat("  ", a.number()), absl::StrJoin(where, " "),
                      FormatTime(a.started_ms()), FormatTime(a.ended_ms()),
                      a.ended_ms() > 0 ? absl::StrCat(a.exit_code()) : "-",
                      a.reason()});
    }
    out += Table(rows);
  }
  absl::StrAppend(&out, "\nEvents:\n");
  std::vector<std::vector<std::string>> rows = {
      {"  TIME", "ATTEMPT", "EVENT", "MESSAGE"}};
  for (const v1::JobEvent& e : job.events()) {
    rows.push_back({absl::StrCat("  ", FormatTime(e.time_ms())),
                    absl::StrCat(e.attempt()), EventTypeName(e.type()),
                    e.message()});
  }
  out += Table(rows);
  return out;
}

}  // namespace dcvlr

namespace dcvlr {
namespace {

std::string Number(double value) { return absl::StrFormat("%.6g", value); }

// Rows keyed by step (-1 for lines without one) and columns by key.
struct MetricsGrid {
  std::vector<std::string> keys;
  std::map<int64_t, std::map<std::string, double>> rows;
};

MetricsGrid Grid(const v1::GetJobMetricsResponse& metrics) {
  MetricsGrid grid;
  for (const v1::MetricSeries& series : metrics.series()) {
    grid.keys.push_back(series.key());
    const int n = std::min(series.steps_size(), series.values_size());
    for (int i = 0; i < n; ++i) {
      grid.rows[series.steps(i)][series.key()] = series.values(i);
    }
  }
  return grid;
}

}  // namespace

std::string MetricsTable(const v1::GetJobMetricsResponse& metrics) {
  const MetricsGrid grid = Grid(metrics);
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"STEP"};
  for (const std::string& key : grid.keys) header.push_back(key);
  rows.push_back(header);
  for (const auto& [step, values] : grid.rows) {
    std::vector<std::string> row = {step < 0 ? "-" : std::to_string(step)};
    for (const std::string& key : grid.keys) {
      auto it = values.find(key);
      row.push_back(it == values.end() ? "" : Number(it->second));
    }
    rows.push_back(std::move(row));
  }
  return Table(rows);
}

std::string MetricsCsv(const v1::GetJobMetricsResponse& metrics) {
  const MetricsGrid grid = Grid(metrics);
  std::string out = "step";
  for (const std::string& key : grid.keys) absl::StrAppend(&out, ",", key);
  out += "\n";
  for (const auto& [step, values] : grid.rows) {
    out += step < 0 ? "" : std::to_string(step);
    for (const std::string& key : grid.keys) {
      auto it = values.find(key);
      absl::StrAppend(
          &out, ",",
          it == values.end() ? "" : absl::StrFormat("%.17g", it->second));
    }
    out += "\n";
  }
  return out;
}

nlohmann::json MetricsToJson(const v1::GetJobMetricsResponse& metrics) {
  nlohmann::json series = nlohmann::json::object();
  for (const v1::MetricSeries& s : metrics.series()) {
    nlohmann::json points = nlohmann::json::array();
    const int n =
        std::min({s.steps_size(), s.values_size(), s.times_ms_size()});
    for (int i = 0; i < n; ++i) {
      points.push_back({{"step", s.steps(i)},
                        {"value", s.values(i)},
                        {"time_ms", s.times_ms(i)}});
    }
    series[s.key()] = {{"stride", s.stride()},
                       {"seen", s.seen()},
                       {"points", std::move(points)}};
  }
  return {{"job_id", metrics.job_id()}, {"series", std::move(series)}};
}

std::string FormatDuration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrCat(s, "s");
}

std::string ProgressLine(const Progress& p, int bar_width) {
  std::string line;
  if (p.step < 0) {
    line = "step -";
  } else if (p.max_steps > 0) {
    const double done =
        std::clamp(static_cast<double>(p.step) / p.max_steps, 0.0, 1.0);
    const int filled = static_cast<int>(done * bar_width + 1e-9);
    line = absl::StrCat("step ", p.step, "/", p.max_steps, " [",
                        std::string(filled, '#'),
                        std::string(bar_width - filled, '.'), "] ",
                        static_cast<int>(done * 100), "%");
  } else {
    line = absl::StrCat("step ", p.step);
  }
  if (p.has_loss)
    absl::StrAppend(&line, "  loss ", absl::StrFormat("%.4f", p.loss));
  if (p.has_tokens_per_s) {
    absl::StrAppend(&line, "  tokens/s ",
                    absl::StrFormat("%.0f", p.tokens_per_s));
  }
  if (p.eta_s >= 0) absl::StrAppend(&line, "  ETA ", FormatDuration(p.eta_s));
  return line;
}

int64_t MaxStepsOf(const v1::Job& job) {
  if (job.spec().worker_config_json().empty()) return 0;
  auto config = nlohmann::json::parse(job.spec().worker_config_json(), nullptr,
                                      /*allow_exceptions=*/false);
  if (!config.is_object()) return 0;
  auto training = config.find("training");
  if (training == config.end() || !training->is_object()) return 0;
  auto max_steps = training->find("max_steps");
  if (max_steps == training->end() || !max_steps->is_number()) return 0;
  return max_steps->get<int64_t>();
}

std::string TopTables(
    const std::vector<v1::Node>& nodes, const std::vector<v1::Job>& jobs,
    const v1::GetQueueResponse& queue,
    const std::map<std::string, std::map<std::string, double>>& latest) {
  std::vector<std::vector<std::string>> node_rows = {
      {"NODE", "STATE", "GPUS", "USED", "FREE", "JOBS"}};
  int total = 0, used = 0;
  for (const v1::Node& node : nodes) {
    const int gpus = node.gpus_size();
    const int in_use = node.gpus_in_use_size();
    total += gpus;
    used += in_use;
    std::vector<std::string> holders;
    for (const std::string& attempt : node.attempts()) {
      holders.push_back(attempt.substr(0, attempt.find('/')));
    }
    node_rows.push_back({node.name(), NodeStateName(node.state()),
                         std::to_string(gpus), std::to_string(in_use),
                         std::to_string(gpus - in_use),
                         holders.empty() ? "-" : absl::StrJoin(holders, ",")});
  }
  struct UserUsage {
    int running = 0, gpus = 0, pending = 0, wants = 0;
  };
  std::map<std::string, UserUsage> users;
  std::vector<std::vector<std::string>> job_rows = {
      {"JOB", "NAME", "USER", "STATE", "GPUS", "STEP", "LOSS", "TOKENS/S"}};
  for (const v1::Job& job : jobs) {
    const int gpus =
        job.spec().resources().nodes() * job.spec().resources().gpus_per_node();
    UserUsage& u = users[job.user()];
    if (job.state() == v1::JOB_STATE_PENDING) {
      ++u.pending;
      u.wants += gpus;
      continue;
    }
    if (job.state() != v1::JOB_STATE_RUNNING &&
        job.state() != v1::JOB_STATE_SCHEDULED) {
      continue;
    }
    ++u.running;
    u.gpus += gpus;
    auto values = latest.find(job.id());
    auto value = [&](const char* key) -> std::string {
      if (values == latest.end()) return "-";
      auto it = values->second.find(key);
      return it == values->second.end() ? "-" : Number(it->second);
    };
    job_rows.push_back({job.id(), job.spec().name(), job.user(),
                        JobStateName(job.state()), std::to_string(gpus),
                        value("step"), value("loss"), value("tokens_per_s")});
  }
  std::map<std::string, double> factors;
  for (const v1::UserShare& share : queue.users()) {
    factors[share.user()] = share.factor();
    users[share.user()];
  }
  std::vector<std::vector<std::string>> user_rows = {
      {"USER", "RUNNING", "GPUS", "PENDING", "WANTS", "FAIR-SHARE"}};
  for (const auto& [user, u] : users) {
    auto factor = factors.find(user);
    user_rows.push_back(
        {user, std::to_string(u.running), std::to_string(u.gpus),
         std::to_string(u.pending), std::to_string(u.wants),
         factor == factors.end() ? "-"
                                 : absl::StrFormat("%.3f", factor->second)});
  }
  return absl::StrCat("GPUs: ", used, " of ", total, " in use\n\n",
                      Table(node_rows), "\n", Table(user_rows), "\n",
                      Table(job_rows));
}

nlohmann::json ScoresFromMetrics(const v1::GetJobMetricsResponse& metrics) {
  nlohmann::json benchmarks = nlohmann::json::object();
  nlohmann::json out;
  for (const v1::MetricSeries& series : metrics.series()) {
    if (series.values_size() == 0) continue;
    const double value = series.values(series.values_size() - 1);
    const std::string& key = series.key();
    if (key == "eval_accuracy") {
      out["overall_accuracy"] = value;
      continue;
    }
    for (const char* name : {"accuracy", "hits", "total"}) {
      const std::string prefix = std::string("eval_") + name + "/";
      if (key.rfind(prefix, 0) == 0 && key.size() > prefix.size()) {
        const std::string benchmark = key.substr(prefix.size());
        if (std::string(name) == "accuracy") {
          benchmarks[benchmark][name] = value;
        } else {
          benchmarks[benchmark][name] = static_cast<int64_t>(value);
        }
      }
    }
  }
  if (benchmarks.empty()) return nullptr;  // a train job's eval_accuracy alone
  out["benchmarks"] = benchmarks;
  return out;
}

std::string ScoresTable(const nlohmann::json& scores) {
  if (scores.is_null()) return "";
  std::vector<std::vector<std::string>> rows = {
      {"BENCHMARK", "SAMPLES", "HITS", "ACCURACY"}};
  auto number = [](const nlohmann::json& j, const char* key) {
    return j.contains(key) ? std::to_string(j[key].get<int64_t>()) : "-";
  };
  auto accuracy = [](const nlohmann::json& j) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%.4f", j.get<double>());
    return std::string(buf);
  };
  for (const auto& [name, b] : scores["benchmarks"].items()) {
    rows.push_back({name, number(b, "total"), number(b, "hits"),
                    b.contains("accuracy") ? accuracy(b["accuracy"]) : "-"});
  }
  if (scores.contains("overall_accuracy")) {
    rows.push_back({"(overall)", "", "", accuracy(scores["overall_accuracy"])});
  }
  std::vector<size_t> width(4, 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  std::string text = "\nScores:\n";
  for (const auto& row : rows) {
    std::string line = "  ";
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size())
        line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    text += line + "\n";
  }
  return text;
}

}  // namespace dcvlr
