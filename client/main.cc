// dcvlrctl: the user's command line for a dcvlr cluster.
//
//   dcvlrctl submit FILE          queue a job (prints its id)
//   dcvlrctl get|list|describe    look at jobs
//   dcvlrctl logs JOB [-f]        read or follow a job's logs
//   dcvlrctl wait JOB             block until a job ends
//   dcvlrctl watch JOB            follow its state and training progress
//   dcvlrctl metrics JOB          a job's metric history (-o csv too)
//   dcvlrctl top                  usage by node and user, refreshing
//   dcvlrctl cancel JOB           stop a job
//   dcvlrctl queue                pending jobs in order, why they wait
//   dcvlrctl nodes|drain|undrain  look at and manage nodes
//   dcvlrctl render FILE          show what a job file resolves to
//
// Every command that prints takes `-o json`.
#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/format.h"
#include "common/address.h"
#include "common/job_file.h"
#include "common/launch.h"
#include "common/munge.h"
#include "common/names.h"
#include "common/tls.h"
#include "dcvlr/v1/client.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"

namespace dcvlr {
namespace {

struct Globals {
  std::string coordinator;
  std::string user;
  bool user_given = false;  // --user on the command line
  std::string output = "table";
  TlsFlags tls;  // --tls-ca alone: verify the coordinator, no certificate
  std::string munge_socket;
  bool json() const { return output == "json"; }
  bool secure() const { return !tls.ca.empty(); }
  // The user a request claims: --user when given (the coordinator refuses
  // it unless it is who the credential says); without TLS, $USER, which an
  // --insecure coordinator takes as is.
  std::string claimed_user() const {
    return user_given || !secure() ? user : "";
  }
};

// Exit codes: 0 ok, 1 the operation failed (or the job did not succeed),
// 2 bad usage or input, 3 the coordinator could not be reached, 4 timeout.
constexpr int kFailed = 1;
constexpr int kBadInput = 2;
constexpr int kUnreachable = 3;
constexpr int kTimedOut = 4;

class Client {
 public:
  // `tls`: the checked --tls-* files; null: plaintext.
  Client(const Globals& globals, const TlsMaterial* tls)
      : globals_(globals),
        address_(ResolveAddress(globals.coordinator)),
        channel_(grpc::CreateChannel(
            address_, tls != nullptr ? TlsChannelCredentials(*tls)
                                     : grpc::InsecureChannelCredentials())),
        stub_(v1::ClientService::NewStub(channel_)),
        has_certificate_(tls != nullptr && !tls->cert_pem.empty()) {}

  v1::ClientService::Stub* stub() { return stub_.get(); }
  const Globals& globals() const { return globals_; }

  // Every call carries who we are: a user certificate on the connection,
  // or else a fresh MUNGE credential (one per call: munged refuses a
  // replayed one).
  void Prepare(grpc::ClientContext* context, int timeout_s = 10) {
    if (timeout_s > 0) {
      context->set_deadline(std::chrono::system_clock::now() +
                            std::chrono::seconds(timeout_s));
    }
    context->AddMetadata(kUserMetadataKey, globals_.user);
    if (has_certificate_) return;
    absl::StatusOr<std::string> credential = MungeEncode(globals_.munge_socket);
    if (credential.ok()) {
      context->AddMetadata(kMungeMetadataKey, *credential);
    } else {
      munge_error_ = std::string(credential.status().message());
    }
  }

  // Prints a failed RPC for people and returns the exit code for it.
  int Fail(const grpc::Status& status) {
    // UNAVAILABLE from a coordinator that answered (its connection is up)
    // is its own refusal, e.g. while its state store fails: say it as is.
    const bool answered = channel_->GetState(false) == GRPC_CHANNEL_READY &&
                          status.error_code() == grpc::StatusCode::UNAVAILABLE;
    if (!answered &&
        (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)) {
      fprintf(stderr,
              "dcvlrctl: cannot reach the coordinator at %s (%s); is "
              "dcvlr-coordinator running? Set --coordinator or "
              "DCVLR_COORDINATOR.\n",
              address_.c_str(), status.error_message().c_str());
      return kUnreachable;
    }
    fprintf(stderr, "dcvlrctl: %s\n", status.error_message().c_str());
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED &&
        !munge_error_.empty()) {
      fprintf(stderr, "dcvlrctl: %s\n", munge_error_.c_str());
    }
    return status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? kBadInput
                                                                     : kFailed;
  }

 private:
  const Globals& globals_;
  const std::string address_;
  const std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ClientService::Stub> stub_;
  const bool has_certificate_;
  std::string munge_error_;  // why the last call carried no MUNGE credential
};

void PrintJson(const nlohmann::json& value) {
  std::cout << value.dump(2) << std::endl;
}

bool ReadFile(const std::string& path, std::string* text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *text = buffer.str();
  return true;
}

namespace fs = std::filesystem;

// `word` as a shell needs it written: as it is when it holds only safe
// characters, single-quoted otherwise.
std::string ShellWord(const std::string& word) {
  bool safe = !word.empty();
  for (char c : word) {
    safe = safe && (absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
                    std::string("-_./=:,@%+<>").find(c) != std::string::npos);
  }
  return safe ? word : ShellQuote(word);
}

// What `--nodes`, `--gpus-per-node` and the file's place add to it.
struct FileFlags {
  int nodes = 0;
  int gpus_per_node = 0;

  JobFileOptions Options() const {
    JobFileOptions options;
    options.nodes = nodes;
    options.gpus_per_node = gpus_per_node;
    std::error_code ec;
    fs::path dir = fs::current_path(ec);
    if (!ec) options.submit_dir = dir.string();
    return options;
  }
};

int Submit(Client& client, const std::string& path, bool dry_run,
           const FileFlags& flags) {
  std::string text;
  if (!ReadFile(path, &text)) {
    fprintf(stderr, "dcvlrctl: %s: %s\n", path.c_str(), strerror(errno));
    return kBadInput;
  }
  const JobFileOptions options = flags.Options();
  v1::SubmitJobRequest request;
  request.set_user(client.globals().claimed_user());
  request.set_source_name(path);
  request.set_source(text);
  request.set_dry_run(dry_run);
  request.set_nodes(options.nodes);
  request.set_gpus_per_node(options.gpus_per_node);
  request.set_submit_dir(options.submit_dir);
  v1::SubmitJobResponse response;
  grpc::ClientContext context;
  client.Prepare(&context);
  grpc::Status status = client.stub()->SubmitJob(&context, request, &response);
  if (!status.ok() && dry_run &&
      status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    // Without a coordinator, check what the file alone decides.
    auto parsed = ParseJobFiles(path, text, options);
    if (!parsed.ok()) {
      fprintf(stderr, "%s\n", std::string(parsed.status().message()).c_str());
      return kBadInput;
    }
    fprintf(stderr,
            "dcvlrctl: coordinator unreachable; checked the file "
            "alone\n");
    for (const ParsedJobFile& file : *parsed) {
      *response.add_jobs()->mutable_spec() = file.spec;
      for (const std::string& w : file.warnings) response.add_warnings(w);
    }
    status = grpc::Status::OK;
  } else if (!status.ok()) {
    return client.Fail(status);
  }
  for (const std::string& warning : response.warnings()) {
    fprintf(stderr, "warning: %s\n", warning.c_str());
  }
  if (client.globals().json()) {
    nlohmann::json jobs = nlohmann::json::array();
    for (const v1::Job& job : response.jobs()) {
      nlohmann::json entry = {{"name", job.spec().name()}};
      if (!dry_run) entry["id"] = job.id();
      jobs.push_back(entry);
    }
    nlohmann::json out = jobs.empty() ? nlohmann::json::object() : jobs[0];
    if (dry_run) out["valid"] = true;
    out["jobs"] = jobs;
    out["warnings"] = std::vector<std::string>(response.warnings().begin(),
                                               response.warnings().end());
    PrintJson(out);
  } else if (dry_run) {
    for (const v1::Job& job : response.jobs()) {
      printf("%s: valid (%s job '%s', %d node(s) x %d GPU(s))\n", path.c_str(),
             JobKindName(job.spec().kind()).c_str(), job.spec().name().c_str(),
             job.spec().resources().nodes(),
             job.spec().resources().gpus_per_node());
    }
  } else {
    for (const v1::Job& job : response.jobs()) printf("%s\n", job.id().c_str());
  }
  return 0;
}

int GetJob(Client& client, const std::string& ref, v1::Job* job) {
  v1::GetJobRequest request;
  request.set_job(ref);
  grpc::ClientContext context;
  client.Prepare(&context);
  grpc::Status status = client.stub()->GetJob(&context, request, job);
  return status.ok() ? 0 : client.Fail(status);
}

// Every job `request` matches, up to `limit` (0: all), a page at a time:
// one reply never holds more than the coordinator's reply size.
int ListPages(Client& client, v1::ListJobsRequest request, int limit,
              std::vector<v1::Job>* jobs) {
  std::string token;
  do {
    request.set_page_token(token);
    request.set_limit(limit > 0 ? limit - static_cast<int>(jobs->size()) : 0);
    v1::ListJobsResponse response;
    grpc::ClientContext context;
    client.Prepare(&context);
    grpc::Status status = client.stub()->ListJobs(&context, request, &response);
    if (!status.ok()) return client.Fail(status);
    for (v1::Job& job : *response.mutable_jobs())
      jobs->push_back(std::move(job));
    token = response.next_page_token();
  } while (!token.empty() &&
           (limit <= 0 || static_cast<int>(jobs->size()) < limit));
  return 0;
}

int List(Client& client, const std::string& user,
         const std::vector<std::string>& states, int limit) {
  v1::ListJobsRequest request;
  request.set_user(user);
  for (const std::string& name : states) {
    auto state = ParseJobState(name);
    if (!state) {
      fprintf(stderr,
              "dcvlrctl: --state %s: expected one of PENDING, "
              "SCHEDULED, RUNNING, SUCCEEDED, FAILED, CANCELLED, "
              "PREEMPTED\n",
              name.c_str());
      return kBadInput;
    }
    request.add_states(*state);
  }
  std::vector<v1::Job> jobs;
  if (int rc = ListPages(client, request, limit, &jobs); rc != 0) return rc;
  if (client.globals().json()) {
    nlohmann::json array = nlohmann::json::array();
    for (const v1::Job& job : jobs) array.push_back(JobToJson(job));
    PrintJson(array);
  } else {
    std::cout << JobsTable(jobs);
  }
  return 0;
}

int Get(Client& client, const std::string& ref) {
  v1::Job job;
  if (int rc = GetJob(client, ref, &job); rc != 0) return rc;
  if (client.globals().json()) {
    PrintJson(JobToJson(job));
  } else {
    std::cout << JobsTable({job});
  }
  return 0;
}

int FetchQueue(Client& client, v1::GetQueueResponse* queue) {
  grpc::ClientContext context;
  client.Prepare(&context);
  grpc::Status status =
      client.stub()->GetQueue(&context, v1::GetQueueRequest(), queue);
  return status.ok() ? 0 : client.Fail(status);
}

int Queue(Client& client) {
  v1::GetQueueResponse queue;
  if (int rc = FetchQueue(client, &queue); rc != 0) return rc;
  if (client.globals().json()) {
    PrintJson(QueueToJson(queue));
  } else {
    std::cout << QueueTables(queue);
  }
  return 0;
}

int FetchMetrics(Client& client, const std::string& ref, bool latest_only,
                 const std::vector<std::string>& keys,
                 v1::GetJobMetricsResponse* out, bool quiet_not_found = false);

int Describe(Client& client, const std::string& ref) {
  v1::Job job;
  if (int rc = GetJob(client, ref, &job); rc != 0) return rc;
  // An eval job's scores, from its newest metrics (not for another user's
  // job, whose metrics are not ours to read).
  nlohmann::json scores;
  v1::GetJobMetricsResponse metrics;
  if (!job.redacted() &&
      FetchMetrics(client, job.id(), true, {}, &metrics, true) == 0) {
    scores = ScoresFromMetrics(metrics);
  }
  v1::GetQueueResponse queue;
  if (int rc = FetchQueue(client, &queue); rc != 0) return rc;
  int position = 0;
  const v1::QueueEntry* entry = nullptr;
  for (const v1::QueueEntry& e : queue.entries()) {
    ++position;
    if (e.job_id() == job.id()) {
      entry = &e;
      break;
    }
  }
  if (client.globals().json()) {
    nlohmann::json out = JobToJson(job);
    if (entry != nullptr) {
      out["queue"] = {{"position", position},
                      {"effective_priority", entry->effective_priority()},
                      {"fair_share", entry->fair_share()},
                      {"waiting", entry->reason()}};
    }
    if (!scores.is_null()) out["scores"] = scores;
    PrintJson(out);
    return 0;
  }
  std::cout << DescribeJob(job);
  std::cout << ScoresTable(scores);
  if (entry != nullptr) {
    printf(
        "\nQueue:      position %d of %d, effective priority %.1f, "
        "%s's fair share %.3f\n            %s\n",
        position, queue.entries_size(), entry->effective_priority(),
        entry->user().c_str(), entry->fair_share(), entry->reason().c_str());
  }
  return 0;
}

int Logs(Client& client, const std::string& ref, bool follow, int rank,
         int attempt) {
  v1::StreamLogsRequest request;
  request.set_job(ref);
  request.set_follow(follow);
  request.set_rank(rank);
  request.set_attempt(attempt);
  grpc::ClientContext context;
  client.Prepare(&context, /*timeout_s=*/0);
  auto reader = client.stub()->StreamLogs(&context, request);
  // With several ranks, whole lines are printed with a rank prefix.
  std::map<int, std::string> partial;
  std::map<int, bool> seen;
  v1::LogData data;
  const bool json = client.globals().json();
  while (reader->Read(&data)) {
    seen[data.rank()] = true;
    if (json) {
      std::cout << nlohmann::json{{"rank", data.rank()},
                                  {"attempt", data.attempt()},
                                  {"data", data.data()}}
                       .dump()
                << std::endl;
      continue;
    }
    if (rank >= 0) {
      std::cout << data.data() << std::flush;
      continue;
    }
    std::string& buffer = partial[data.rank()];
    buffer += data.data();
    size_t newline;
    while ((newline = buffer.find('\n')) != std::string::npos) {
      std::cout << "[" << data.rank() << "] " << buffer.substr(0, newline + 1);
      buffer.erase(0, newline + 1);
    }
    std::cout << std::flush;
  }
  for (const auto& [r, rest] : partial) {
    if (!rest.empty()) std::cout << "[" << r << "] " << rest << "\n";
  }
  grpc::Status status = reader->Finish();
  return status.ok() ? 0 : client.Fail(status);
}

int Cancel(Client& client, const std::string& ref, bool wait);
int Wait(Client& client, const std::string& ref, double timeout_s);

int Cancel(Client& client, const std::string& ref, bool wait) {
  v1::CancelJobRequest request;
  request.set_job(ref);
  request.set_user(client.globals().claimed_user());
  v1::Job job;
  grpc::ClientContext context;
  client.Prepare(&context);
  grpc::Status status = client.stub()->CancelJob(&context, request, &job);
  if (!status.ok()) return client.Fail(status);
  if (wait) {
    int rc = Wait(client, job.id(), 0);
    return rc == kFailed ? 0 : rc;  // CANCELLED is what was asked for
  }
  if (client.globals().json()) {
    PrintJson(JobToJson(job));
  } else {
    printf("%s %s\n", job.id().c_str(),
           job.state() == v1::JOB_STATE_CANCELLED ? "cancelled" : "cancelling");
  }
  return 0;
}

std::string StateLine(const v1::Job& job) {
  std::string line = absl::StrCat(
      FormatTime(job.events_size() > 0 ? job.events().rbegin()->time_ms()
                                       : job.submit_time_ms()),
      "  ", job.id(), "  ", JobStateName(job.state()));
  if (job.attempt() > 0) absl::StrAppend(&line, "  attempt ", job.attempt());
  if (!job.reason().empty()) absl::StrAppend(&line, "  (", job.reason(), ")");
  if (IsTerminal(job.state()))
    absl::StrAppend(&line, "  exit ", job.exit_code());
  return line;
}

// Follows the job until it ends. Exit 0 iff it SUCCEEDED.
int Wait(Client& client, const std::string& ref, double timeout_s) {
  v1::WatchJobRequest request;
  request.set_job(ref);
  grpc::ClientContext context;
  client.Prepare(&context, /*timeout_s=*/0);
  if (timeout_s > 0) {
    context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  }
  auto reader = client.stub()->WatchJob(&context, request);
  v1::Job job;
  bool have = false;
  while (reader->Read(&job)) have = true;
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && have) {
      fprintf(stderr, "dcvlrctl: %s still %s after %gs\n", job.id().c_str(),
              JobStateName(job.state()).c_str(), timeout_s);
      return kTimedOut;
    }
    return client.Fail(status);
  }
  if (!have || !IsTerminal(job.state())) {
    fprintf(stderr, "dcvlrctl: the watch ended before the job did\n");
    return kFailed;
  }
  if (client.globals().json()) {
    PrintJson(JobToJson(job));
  } else {
    std::cout << StateLine(job) << std::endl;
  }
  return job.state() == v1::JOB_STATE_SUCCEEDED ? 0 : kFailed;
}

int FetchMetrics(Client& client, const std::string& ref, bool latest_only,
                 const std::vector<std::string>& keys,
                 v1::GetJobMetricsResponse* out, bool quiet_not_found) {
  v1::GetJobMetricsRequest request;
  request.set_job(ref);
  request.set_latest_only(latest_only);
  for (const std::string& key : keys) request.add_keys(key);
  grpc::ClientContext context;
  client.Prepare(&context);
  grpc::Status status = client.stub()->GetJobMetrics(&context, request, out);
  if (status.ok()) return 0;
  if (quiet_not_found && status.error_code() == grpc::StatusCode::NOT_FOUND) {
    return kFailed;
  }
  return client.Fail(status);
}

// `dcvlrctl metrics JOB`: the job's metric history.
int Metrics(Client& client, const std::string& ref,
            const std::vector<std::string>& keys, bool latest_only) {
  v1::GetJobMetricsResponse metrics;
  if (int rc = FetchMetrics(client, ref, latest_only, keys, &metrics);
      rc != 0) {
    return rc;
  }
  const std::string& output = client.globals().output;
  if (output == "json") {
    PrintJson(MetricsToJson(metrics));
  } else if (output == "csv") {
    std::cout << MetricsCsv(metrics);
  } else {
    std::cout << MetricsTable(metrics);
  }
  return 0;
}

// Follows the job until it ends: its state changes, and for jobs that
// report a step, a progress line (redrawn in place on a terminal, one line
// per new step otherwise). Exit 0 iff it SUCCEEDED.
int Watch(Client& client, const std::string& ref) {
  v1::Job first;
  if (int rc = GetJob(client, ref, &first); rc != 0) return rc;
  const bool json = client.globals().json();
  const bool tty = isatty(STDOUT_FILENO) == 1;
  std::mutex mu;
  std::condition_variable changed;
  bool ended = false;
  std::string progress_shown;  // on a terminal, the line now drawn
  auto print = [&](const std::string& line) {
    // Called with mu held.
    if (tty && !progress_shown.empty()) std::cout << "\r\033[K";
    std::cout << line << "\n";
    if (tty && !progress_shown.empty()) std::cout << progress_shown;
    std::cout << std::flush;
  };
  std::thread poller([&] {
    const int64_t max_steps = MaxStepsOf(first);
    int64_t first_step = -1;
    auto first_time = std::chrono::steady_clock::now();
    int64_t last_step = -2;
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      // Once the job has ended, one more look shows its last step.
      const bool last = ended;
      lock.unlock();
      v1::GetJobMetricsResponse metrics;
      const bool have = FetchMetrics(client, first.id(), true, {}, &metrics,
                                     /*quiet_not_found=*/true) == 0;
      lock.lock();
      if (have) {
        Progress p;
        p.max_steps = max_steps;
        for (const v1::MetricSeries& s : metrics.series()) {
          if (s.values_size() == 0) continue;
          const double value = s.values(s.values_size() - 1);
          p.step = std::max(p.step, s.steps(s.steps_size() - 1));
          if (s.key() == "loss") {
            p.loss = value;
            p.has_loss = true;
          } else if (s.key() == "tokens_per_s") {
            p.tokens_per_s = value;
            p.has_tokens_per_s = true;
          } else if (s.key() == "max_steps" && p.max_steps <= 0) {
            p.max_steps = static_cast<int64_t>(value);
          }
        }
        const auto now = std::chrono::steady_clock::now();
        if (p.step >= 0 && first_step < 0) {
          first_step = p.step;
          first_time = now;
        }
        const double elapsed =
            std::chrono::duration<double>(now - first_time).count();
        if (p.max_steps > 0 && p.step > first_step && elapsed > 0) {
          const double per_step = elapsed / (p.step - first_step);
          p.eta_s = std::max<int64_t>(0, p.max_steps - p.step) * per_step;
        }
        if (p.step != last_step && p.step >= 0) {
          last_step = p.step;
          const std::string line = ProgressLine(p);
          if (json) {
            std::cout << nlohmann::json{{"step", p.step},
                                        {"max_steps", p.max_steps},
                                        {"loss", p.has_loss
                                                     ? nlohmann::json(p.loss)
                                                     : nlohmann::json()}}
                             .dump()
                      << std::endl;
          } else if (tty) {
            progress_shown = line;
            std::cout << "\r\033[K" << line << std::flush;
          } else {
            std::cout << line << std::endl;
          }
        }
      }
      if (last) break;
      changed.wait_for(lock, std::chrono::seconds(1), [&] { return ended; });
    }
  });

  v1::WatchJobRequest request;
  request.set_job(first.id());
  grpc::ClientContext context;
  client.Prepare(&context, /*timeout_s=*/0);
  auto reader = client.stub()->WatchJob(&context, request);
  v1::Job job;
  bool have = false;
  std::string last_line;
  while (reader->Read(&job)) {
    have = true;
    std::lock_guard<std::mutex> lock(mu);
    if (json) {
      std::cout << JobToJson(job).dump() << std::endl;
    } else if (std::string line = StateLine(job); line != last_line) {
      print(line);
      last_line = line;
    }
  }
  grpc::Status status = reader->Finish();
  {
    std::lock_guard<std::mutex> lock(mu);
    ended = true;
  }
  changed.notify_all();
  poller.join();
  if (tty && !progress_shown.empty()) std::cout << "\n";
  if (!status.ok()) return client.Fail(status);
  if (!have || !IsTerminal(job.state())) {
    fprintf(stderr, "dcvlrctl: the watch ended before the job did\n");
    return kFailed;
  }
  return job.state() == v1::JOB_STATE_SUCCEEDED ? 0 : kFailed;
}

// `dcvlrctl top`: usage by node and by user, and the running jobs.
int Top(Client& client, bool once, double interval_s) {
  while (true) {
    v1::ListNodesResponse nodes;
    {
      grpc::ClientContext context;
      client.Prepare(&context);
      grpc::Status status =
          client.stub()->ListNodes(&context, v1::ListNodesRequest(), &nodes);
      if (!status.ok()) return client.Fail(status);
    }
    std::vector<v1::Job> jobs;
    {
      v1::ListJobsRequest request;
      for (v1::JobState state : {v1::JOB_STATE_PENDING, v1::JOB_STATE_SCHEDULED,
                                 v1::JOB_STATE_RUNNING}) {
        request.add_states(state);
      }
      if (int rc = ListPages(client, request, 0, &jobs); rc != 0) return rc;
    }
    v1::GetQueueResponse queue;
    if (int rc = FetchQueue(client, &queue); rc != 0) return rc;
    std::map<std::string, std::map<std::string, double>> latest;
    for (const v1::Job& job : jobs) {
      if (job.state() != v1::JOB_STATE_RUNNING || job.redacted()) continue;
      v1::GetJobMetricsResponse metrics;
      if (FetchMetrics(client, job.id(), true, {}, &metrics, true) != 0)
        continue;
      for (const v1::MetricSeries& s : metrics.series()) {
        if (s.values_size() == 0) continue;
        latest[job.id()][s.key()] = s.values(s.values_size() - 1);
        latest[job.id()]["step"] =
            std::max(latest[job.id()]["step"], static_cast<double>(s.steps(0)));
      }
    }
    const std::vector<v1::Node> node_list(nodes.nodes().begin(),
                                          nodes.nodes().end());
    const std::vector<v1::Job>& job_list = jobs;
    if (client.globals().json()) {
      nlohmann::json out;
      out["nodes"] = nlohmann::json::array();
      for (const v1::Node& node : node_list)
        out["nodes"].push_back(NodeToJson(node));
      out["jobs"] = nlohmann::json::array();
      for (const v1::Job& job : job_list) {
        nlohmann::json j = JobToJson(job);
        if (auto it = latest.find(job.id()); it != latest.end()) {
          j["latest_metrics"] = it->second;
        }
        out["jobs"].push_back(std::move(j));
      }
      out["queue"] = QueueToJson(queue);
      PrintJson(out);
    } else {
      if (!once) std::cout << "\033[H\033[2J";
      std::cout << TopTables(node_list, job_list, queue, latest) << std::flush;
    }
    if (once) return 0;
    std::this_thread::sleep_for(
        std::chrono::milliseconds(static_cast<int64_t>(interval_s * 1000)));
  }
}

int Nodes(Client& client) {
  v1::ListNodesResponse response;
  grpc::ClientContext context;
  client.Prepare(&context);
  grpc::Status status =
      client.stub()->ListNodes(&context, v1::ListNodesRequest(), &response);
  if (!status.ok()) return client.Fail(status);
  std::vector<v1::Node> nodes(response.nodes().begin(), response.nodes().end());
  if (client.globals().json()) {
    nlohmann::json array = nlohmann::json::array();
    for (const v1::Node& node : nodes) array.push_back(NodeToJson(node));
    PrintJson(array);
  } else {
    std::cout << NodesTable(nodes);
  }
  return 0;
}

int Drain(Client& client, const std::string& name, bool drain, bool evict) {
  v1::DrainNodeRequest request;
  request.set_node(name);
  request.set_drain(drain);
  request.set_evict(evict);
  v1::Node node;
  grpc::ClientContext context;
  client.Prepare(&context);
  grpc::Status status = client.stub()->DrainNode(&context, request, &node);
  if (!status.ok()) return client.Fail(status);
  if (client.globals().json()) {
    PrintJson(NodeToJson(node));
  } else {
    printf("%s %s%s\n", node.name().c_str(), drain ? "drained" : "undrained",
           evict ? "; its jobs are being evicted" : "");
  }
  return 0;
}

// The audit trail since `since` ago ("1h", "30m", "7d"; empty: all), for
// admins.
int Audit(Client& client, const std::string& since, int limit) {
  v1::ListAuditRequest request;
  if (!since.empty()) {
    absl::Duration ago;
    const bool days = absl::EndsWith(since, "d");
    double n = 0;
    if (days ? !absl::SimpleAtod(since.substr(0, since.size() - 1), &n)
             : !absl::ParseDuration(since, &ago)) {
      fprintf(stderr,
              "dcvlrctl: --since %s: not a duration such as 90s, 30m, 12h "
              "or 7d\n",
              since.c_str());
      return kBadInput;
    }
    if (days) ago = absl::Hours(24 * n);
    request.set_since_ms(absl::ToUnixMillis(absl::Now() - ago));
  }
  request.set_limit(limit);
  v1::ListAuditResponse response;
  grpc::ClientContext context;
  client.Prepare(&context);
  grpc::Status status = client.stub()->ListAudit(&context, request, &response);
  if (!status.ok()) return client.Fail(status);
  if (client.globals().json()) {
    PrintJson(AuditToJson(response));
  } else {
    std::cout << AuditTable(response);
  }
  return 0;
}

// What a job file resolves to on every node, without a coordinator: the
// files written, each process's command line and environment (the process
// contract's variables and the job's env; the agent's own environment comes
// underneath). Paths under the agent's work dir and the rendezvous address
// are shown as placeholders; the rest is exactly what the agent runs.
int Render(const Globals& globals, const std::string& path,
           const FileFlags& flags, bool config_only) {
  std::string text;
  if (!ReadFile(path, &text)) {
    fprintf(stderr, "dcvlrctl: %s: %s\n", path.c_str(), strerror(errno));
    return kBadInput;
  }
  auto parsed = ParseJobFiles(path, text, flags.Options());
  if (!parsed.ok()) {
    fprintf(stderr, "%s\n", std::string(parsed.status().message()).c_str());
    return kBadInput;
  }
  for (const ParsedJobFile& file : *parsed) {
    for (const std::string& w : file.warnings) {
      fprintf(stderr, "warning: %s\n", w.c_str());
    }
  }
  if (config_only) {
    // The worker programs' JSON alone, e.g. for `dcvlr-train --config`.
    for (const ParsedJobFile& file : *parsed) {
      const v1::JobSpec& spec = file.spec;
      if (spec.worker_config_json().empty()) {
        fprintf(stderr, "dcvlrctl: %s: job '%s' has no worker config (%s)\n",
                path.c_str(), spec.name().c_str(),
                spec.launcher() == v1::LAUNCHER_TORCHRUN_OUMI
                    ? "it runs under torchrun with Oumi"
                    : "a command job");
        return kBadInput;
      }
      std::cout << nlohmann::json::parse(spec.worker_config_json()).dump(2)
                << std::endl;
    }
    return 0;
  }

  nlohmann::json jobs = nlohmann::json::array();
  for (const ParsedJobFile& file : *parsed) {
    const v1::JobSpec& spec = file.spec;
    const auto& res = spec.resources();
    nlohmann::json job;
    job["name"] = spec.name();
    job["kind"] = JobKindName(spec.kind());
    job["launcher"] = spec.launcher() == v1::LAUNCHER_TORCHRUN_OUMI
                          ? "torchrun-oumi"
                          : "direct";
    job["resources"] = {{"nodes", res.nodes()},
                        {"gpus_per_node", res.gpus_per_node()},
                        {"procs_per_node", res.procs_per_node()}};
    if (spec.after_size() > 0) {
      job["after"] =
          std::vector<std::string>(spec.after().begin(), spec.after().end());
    }
    if (!spec.worker_config_json().empty()) {
      job["config"] = nlohmann::json::parse(spec.worker_config_json());
    }
    nlohmann::json nodes = nlohmann::json::array();
    for (int rank = 0; rank < res.nodes(); ++rank) {
      NodeContext node;
      node.job_id = "<job-id>";
      node.attempt = 1;
      node.user = globals.user;
      node.node = absl::StrCat("<node-", rank, ">");
      node.node_rank = rank;
      node.num_nodes = res.nodes();
      node.master_addr = "<node-0-address>";
      node.master_port = 29500;  // node 0 picks a free port at start
      for (int g = 0; g < res.gpus_per_node(); ++g) node.gpus.push_back(g);
      node.agent_dir = "<work-dir>";
      const std::string job_dir = "<work-dir>/jobs/<job-id>";
      node.attempt_dir = job_dir + "/attempt-1";
      node.output_dir = job_dir + "/output";
      node.checkpoint_dir = spec.checkpoint_dir().empty()
                                ? job_dir + "/checkpoints"
                                : spec.checkpoint_dir();
      node.cache_dir = "<work-dir>/cache";
      absl::StatusOr<NodePlan> plan = PlanNode(spec, node);
      if (!plan.ok()) {
        fprintf(stderr, "dcvlrctl: %s: %s\n", path.c_str(),
                std::string(plan.status().message()).c_str());
        return kBadInput;
      }
      nlohmann::json files = nlohmann::json::array();
      for (const PlannedFile& f : plan->files) {
        files.push_back({{"path", f.path}, {"content", f.content}});
      }
      nlohmann::json processes = nlohmann::json::array();
      for (const PlannedProcess& p : plan->processes) {
        processes.push_back(
            {{"rank", p.rank}, {"argv", p.argv}, {"env", p.env}});
      }
      nodes.push_back(
          {{"node_rank", rank}, {"files", files}, {"processes", processes}});
    }
    job["nodes"] = nodes;
    jobs.push_back(job);
  }
  if (globals.json()) {
    PrintJson(jobs.size() == 1 ? jobs[0] : jobs);
    return 0;
  }
  for (const nlohmann::json& job : jobs) {
    std::cout << "# job '" << job["name"].get<std::string>() << "' ("
              << job["kind"].get<std::string>() << ", "
              << job["launcher"].get<std::string>()
              << "): " << job["resources"]["nodes"] << " node(s) x "
              << job["resources"]["gpus_per_node"] << " GPU(s)";
    if (job.contains("after")) {
      std::cout << ", after "
                << absl::StrJoin(job["after"].get<std::vector<std::string>>(),
                                 ", ");
    }
    std::cout << "\n# <node-0-address> and port 29500 stand for node 0's "
                 "address and the free port it picks at start\n";
    for (const nlohmann::json& node : job["nodes"]) {
      std::cout << "\n## node " << node["node_rank"] << "\n";
      for (const nlohmann::json& f : node["files"]) {
        std::cout << "file " << f["path"].get<std::string>() << ":\n";
        std::istringstream content(f["content"].get<std::string>());
        std::string line;
        while (std::getline(content, line)) std::cout << "  | " << line << "\n";
      }
      for (const nlohmann::json& p : node["processes"]) {
        std::vector<std::string> argv;
        for (const auto& a : p["argv"])
          argv.push_back(ShellWord(a.get<std::string>()));
        std::cout << "rank " << p["rank"] << ": " << absl::StrJoin(argv, " ")
                  << "\n";
        for (const auto& [name, value] : p["env"].items()) {
          std::cout << "  " << name << "=" << value.get<std::string>() << "\n";
        }
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace dcvlr

int main(int argc, char** argv) {
  using namespace dcvlr;
  Globals globals;
  if (const char* env = getenv("DCVLR_COORDINATOR")) globals.coordinator = env;
  if (globals.coordinator.empty()) globals.coordinator = "127.0.0.1:7070";
  if (const char* env = getenv("USER")) globals.user = env;
  if (globals.user.empty()) {
    const struct passwd* pw = getpwuid(getuid());
    globals.user = pw != nullptr ? pw->pw_name : "unknown";
  }

  CLI::App app{"dcvlrctl: submit and watch jobs on a dcvlr cluster"};
  app.require_subcommand(1);
  app.fallthrough();
  app.add_option("--coordinator", globals.coordinator,
                 "coordinator HOST:PORT, or a file holding it "
                 "(default: $DCVLR_COORDINATOR or 127.0.0.1:7070)");
  app.add_option("--user", globals.user,
                 "who you claim to be; only an --insecure coordinator "
                 "believes it (default: $USER). Otherwise your MUNGE "
                 "credential or user certificate says who you are");
  if (const char* env = getenv("DCVLR_TLS_CA")) globals.tls.ca = env;
  if (const char* env = getenv("DCVLR_TLS_CERT")) globals.tls.cert = env;
  if (const char* env = getenv("DCVLR_TLS_KEY")) globals.tls.key = env;
  if (const char* env = getenv("DCVLR_MUNGE_SOCKET")) {
    globals.munge_socket = env;
  }
  app.add_option("--tls-ca", globals.tls.ca,
                 "the cluster CA's certificate (PEM; default: $DCVLR_TLS_CA): "
                 "talk TLS and check the coordinator against it");
  app.add_option("--tls-cert", globals.tls.cert,
                 "your user certificate (PEM, OU=dcvlr-user; default: "
                 "$DCVLR_TLS_CERT), instead of a MUNGE credential");
  app.add_option("--tls-key", globals.tls.key,
                 "its private key (default: $DCVLR_TLS_KEY)");
  app.add_option("--munge-socket", globals.munge_socket,
                 "munged's socket (default: $DCVLR_MUNGE_SOCKET, else the "
                 "system's)");
  app.add_option("-o,--output", globals.output,
                 "table or json (csv too for metrics)")
      ->check(CLI::IsMember({"table", "json", "csv"}));

  std::string file, job, node, user_filter;
  std::vector<std::string> states;
  bool dry_run = false, follow = false, wait_flag = false;
  int rank = -1, attempt = 0, limit = 0;
  double timeout_s = 0;

  auto* submit =
      app.add_subcommand("submit", "queue a job file; prints the job id");
  submit->add_option("FILE", file, "job file (YAML)")->required();
  submit->add_flag("--dry-run", dry_run, "only validate; submit nothing");
  FileFlags file_flags;
  for (CLI::App* command : {submit}) {
    command
        ->add_option("--nodes", file_flags.nodes,
                     "nodes (wins over the file; e.g. for an Oumi config)")
        ->check(CLI::Range(1, kMaxNodes));
    command
        ->add_option("--gpus-per-node", file_flags.gpus_per_node,
                     "GPUs per node (wins over the file)")
        ->check(CLI::Range(1, kMaxGpusPerNode));
  }

  auto* get = app.add_subcommand("get", "one job, or every job");
  get->add_option("JOB", job, "job id or name");

  auto* list = app.add_subcommand("list", "jobs, newest first");
  list->add_option("--user", user_filter, "only this user's jobs");
  list->add_option("--state", states, "only jobs in these states");
  list->add_option("--limit", limit, "at most this many");

  auto* describe =
      app.add_subcommand("describe", "a job's spec, attempts and events");
  describe->add_option("JOB", job, "job id or name")->required();

  auto* logs = app.add_subcommand("logs", "a job's output");
  logs->add_option("JOB", job, "job id or name")->required();
  logs->add_flag("-f,--follow", follow, "keep printing until the attempt ends");
  logs->add_option("--rank", rank, "only this rank (default: all)");
  logs->add_option("--attempt", attempt, "this attempt (default: the newest)");

  auto* cancel = app.add_subcommand("cancel", "stop a job");
  cancel->add_option("JOB", job, "job id or name")->required();
  cancel->add_flag("--wait", wait_flag, "return once its processes are gone");

  auto* wait = app.add_subcommand(
      "wait", "block until a job ends; exit 0 iff it SUCCEEDED");
  wait->add_option("JOB", job, "job id or name")->required();
  wait->add_option("--timeout", timeout_s,
                   "give up after this many seconds (exit 4)");

  auto* watch = app.add_subcommand(
      "watch",
      "print a job's state as it changes and its training progress "
      "(step of max_steps, loss, tokens/s, ETA), until it ends");
  watch->add_option("JOB", job, "job id or name")->required();

  std::vector<std::string> metric_keys;
  bool latest_only = false;
  auto* metrics = app.add_subcommand(
      "metrics", "a job's metric history: one row per step (-o json, -o csv)");
  metrics->add_option("JOB", job, "job id or name")->required();
  metrics->add_option("--key", metric_keys, "only these keys (repeatable)");
  metrics->add_flag("--latest", latest_only,
                    "only the newest value of each key");

  bool once = false;
  double interval_s = 2;
  auto* top = app.add_subcommand(
      "top", "GPUs by node, usage by user, running jobs' progress; refreshes");
  top->add_flag("--once", once, "print once and exit (for scripts)");
  top->add_option("--interval", interval_s, "seconds between refreshes")
      ->check(CLI::Range(0.1, 3600.0));

  auto* nodes =
      app.add_subcommand("nodes", "the cluster's nodes and their GPUs");
  auto* queue = app.add_subcommand(
      "queue",
      "pending jobs in scheduling order with why each waits, and "
      "every user's fair share");
  auto* drain = app.add_subcommand("drain", "place no new work on a node");
  drain->add_option("NODE", node)->required();
  bool evict = false;
  drain->add_flag(
      "--evict", evict,
      "also stop the jobs there (with grace); they resume elsewhere");
  auto* undrain = app.add_subcommand("undrain", "place work on a node again");
  undrain->add_option("NODE", node)->required();

  std::string since;
  auto* audit = app.add_subcommand(
      "audit", "who changed what, and what was refused, newest first (admins)");
  audit->add_option("--since", since, "only this recent: 90s, 30m, 12h, 7d");
  audit->add_option("--limit", limit, "at most this many (default 1000)");

  auto* render = app.add_subcommand(
      "render",
      "print what each node would run for a job file: files, "
      "command lines, environment");
  render->add_option("FILE", file, "job file (YAML)")->required();
  render->add_option("--nodes", file_flags.nodes, "nodes (wins over the file)")
      ->check(CLI::Range(1, kMaxNodes));
  render
      ->add_option("--gpus-per-node", file_flags.gpus_per_node,
                   "GPUs per node (wins over the file)")
      ->check(CLI::Range(1, kMaxGpusPerNode));
  bool config_only = false;
  render->add_flag("--config", config_only,
                   "print only the worker program's JSON config "
                   "(dcvlr-train / dcvlr-eval --config)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kBadInput;
  }

  if (render->parsed()) return Render(globals, file, file_flags, config_only);
  globals.user_given = app.count("--user") > 0;
  std::optional<TlsMaterial> tls;
  if (globals.secure() || globals.tls.any()) {
    absl::StatusOr<TlsMaterial> loaded =
        LoadTls(globals.tls, CertRole::kUser, /*cert_optional=*/true);
    if (!loaded.ok()) {
      fprintf(stderr, "dcvlrctl: %s\n",
              std::string(loaded.status().message()).c_str());
      return kBadInput;
    }
    tls = *std::move(loaded);
  }
  Client client(globals, tls ? &*tls : nullptr);
  if (submit->parsed()) return Submit(client, file, dry_run, file_flags);
  if (get->parsed())
    return job.empty() ? List(client, "", {}, 0) : Get(client, job);
  if (list->parsed()) return List(client, user_filter, states, limit);
  if (describe->parsed()) return Describe(client, job);
  if (logs->parsed()) return Logs(client, job, follow, rank, attempt);
  if (cancel->parsed()) return Cancel(client, job, wait_flag);
  if (wait->parsed()) return Wait(client, job, timeout_s);
  if (watch->parsed()) return Watch(client, job);
  if (metrics->parsed()) return Metrics(client, job, metric_keys, latest_only);
  if (top->parsed()) return Top(client, once, interval_s);
  if (nodes->parsed()) return Nodes(client);
  if (queue->parsed()) return Queue(client);
  if (drain->parsed()) return Drain(client, node, true, evict);
  if (undrain->parsed()) return Drain(client, node, false, false);
  if (audit->parsed()) return Audit(client, since, limit);
  return kBadInput;
}
