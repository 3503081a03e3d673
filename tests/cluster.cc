#include "tests/cluster.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/names.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace dcvlr::testing {

std::string AwaitListening(const std::string& log_path,
                           std::chrono::milliseconds timeout) {
  constexpr char kListening[] = "listening on ";
  std::string log;
  if (!Eventually(
          [&] {
            log = ReadAll(log_path);
            const size_t at = log.find(kListening);
            return at != std::string::npos &&
                   log.find('\n', at) != std::string::npos;
          },
          timeout)) {
    return "";
  }
  const size_t at = log.find(kListening) + strlen(kListening);
  return log.substr(at, log.find('\n', at) - at);
}

std::string SubmitOrExit(v1::ClientService::Stub* stub,
                         const std::string& yaml) {
  grpc::ClientContext context;
  v1::SubmitJobRequest request;
  request.set_user("bench");
  request.set_source_name("bench.yaml");
  request.set_source(yaml);
  v1::SubmitJobResponse response;
  const grpc::Status status = stub->SubmitJob(&context, request, &response);
  if (!status.ok()) {
    fprintf(stderr, "submit: %s\n", status.error_message().c_str());
    exit(1);
  }
  return response.job().id();
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string BinDir() { return DCVLR_BIN_DIR; }

namespace {

bool Lists(const std::vector<std::string>& argv, const std::string& flag) {
  return std::find(argv.begin(), argv.end(), flag) != argv.end();
}

}  // namespace

bool Eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return condition();
}

std::vector<pid_t> AwaitPids(const std::string& path, size_t count) {
  std::vector<pid_t> pids;
  Eventually([&] {
    std::ifstream in(path);
    pids.clear();
    pid_t pid;
    while (in >> pid) pids.push_back(pid);
    return pids.size() >= count;
  });
  return pids;
}

bool ProcessDead(pid_t pid) {
  if (kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string field;
  for (int i = 0; i < 3 && stat >> field; ++i) {
  }
  return field == "Z";
}

Process::Process(std::vector<std::string> argv, const std::string& log_path,
                 std::vector<std::string> extra_env) {
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_ = fork();
  if (pid_ == 0) {
    setpgid(0, 0);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    for (std::string& e : extra_env) putenv(e.data());
    execv(args[0], args.data());
    _exit(127);
  }
  setpgid(pid_, pid_);
}

Process::~Process() {
  if (!reaped_) {
    kill(-pid_, SIGKILL);
    Wait();
  }
}

void Process::Signal(int sig) { kill(pid_, sig); }

int Process::Wait() {
  int status = 0;
  if (!reaped_) {
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }
  return status;
}

Cluster::Cluster() {
  char tmpl[] = "/tmp/dcvlr-cluster-XXXXXX";
  dir_ = mkdtemp(tmpl);
}

Cluster::~Cluster() {
  // Agents first (they stop their jobs), then the coordinator.
  for (auto& [name, agent] : agents_) {
    if (agent) agent->Signal(SIGTERM);
  }
  for (auto& [name, agent] : agents_) {
    if (agent) agent->Wait();
  }
  agents_.clear();
  coordinator_.reset();
  if (!::testing::Test::HasFailure()) {
    std::filesystem::remove_all(dir_);
  } else {
    fprintf(stderr, "cluster files kept in %s\n", dir_.c_str());
  }
}

void Cluster::StartCoordinator(std::vector<std::string> extra_args) {
  const std::string out =
      dir_ + "/coordinator-" + std::to_string(++coordinator_starts_) + ".log";
  std::vector<std::string> argv = {BinDir() + "/dcvlr-coordinator", "--listen",
                                   "127.0.0.1:0", "--state-dir", state_dir()};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  // As a lab runs it, unless the test asks for --insecure.
  if (!secure_ && !Lists(argv, "--insecure") && !Lists(argv, "--tls-cert")) {
    EnableSecurity({});
  }
  if (secure_ && !Lists(argv, "--tls-cert")) {
    const std::string certs = certs_dir();
    argv.insert(argv.end(),
                {"--tls-cert", certs + "/coordinator.pem", "--tls-key",
                 certs + "/coordinator.key", "--tls-ca", certs + "/ca.pem",
                 "--munge-socket", munge_socket()});
  }
  if (!Lists(argv, "--tls-cert") && !Lists(argv, "--insecure")) {
    argv.push_back("--insecure");
  }
  coordinator_ = std::make_unique<Process>(argv, out);
  address_ = AwaitListening(out);
  ASSERT_FALSE(address_.empty()) << ReadAll(out);
  stub_ = v1::ClientService::NewStub(
      secure_
          ? TlsChannel("root")
          : grpc::CreateChannel(address_, grpc::InsecureChannelCredentials()));
}

void Cluster::EnableSecurity(const std::vector<std::string>& nodes) {
  // munged wants its socket's directory open to all; test users read the
  // CA and job files here.
  chmod(dir_.c_str(), 0755);
  for (std::vector<std::string> args :
       {std::vector<std::string>{"ca"},
        std::vector<std::string>{"coordinator", "localhost"},
        std::vector<std::string>{"user", "root"}}) {
    CommandResult made = Certs(args);
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }
  if (!nodes.empty()) {
    std::vector<std::string> args = {"node"};
    args.insert(args.end(), nodes.begin(), nodes.end());
    CommandResult made = Certs(args);
    ASSERT_EQ(made.exit_code, 0) << made.err;
  }
  const std::string munge_dir = dir_ + "/munge";
  mkdir(munge_dir.c_str(), 0700);
  CommandResult key = RunCommand(
      {"/usr/sbin/mungekey", "--create", "--keyfile=" + munge_dir + "/key"},
      dir_ + "/mungekey");
  ASSERT_EQ(key.exit_code, 0) << key.err;
  munged_ = std::make_unique<Process>(
      std::vector<std::string>{"/usr/sbin/munged", "--foreground",
                               "--socket=" + munge_socket(),
                               "--key-file=" + munge_dir + "/key",
                               "--log-file=" + munge_dir + "/munged.log",
                               "--pid-file=" + munge_dir + "/munged.pid",
                               "--seed-file=" + munge_dir + "/munged.seed"},
      dir_ + "/munged.out");
  ASSERT_TRUE(Eventually([&] {
    struct stat st;
    return stat(munge_socket().c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
  })) << ReadAll(dir_ + "/munged.out");
  secure_ = true;
}

CommandResult Cluster::Certs(std::vector<std::string> args) {
  static int counter = 0;
  std::vector<std::string> argv = {
      std::string(DCVLR_SOURCE_DIR) + "/deploy/dcvlr-certs.sh", "--dir",
      certs_dir()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(std::move(argv),
                    dir_ + "/certs-" + std::to_string(++counter));
}

std::shared_ptr<grpc::Channel> Cluster::TlsChannel(
    const std::string& user) const {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadAll(certs_dir() + "/ca.pem");
  if (!user.empty()) {
    const std::string base = certs_dir() + "/users/" + user;
    if (ReadAll(base + ".pem").empty()) {
      const_cast<Cluster*>(this)->Certs({"user", user});
    }
    options.pem_cert_chain = ReadAll(base + ".pem");
    options.pem_private_key = ReadAll(base + ".key");
  }
  return grpc::CreateChannel(address_, grpc::SslCredentials(options));
}

int EnsureUnixUser(const std::string& name) {
  auto uid = [&]() -> int {
    struct passwd* pw = getpwnam(name.c_str());
    return pw == nullptr ? -1 : static_cast<int>(pw->pw_uid);
  };
  // useradd may find /etc/passwd locked by a test running beside this one.
  Eventually([&] {
    if (uid() >= 0) return true;
    char tmpl[] = "/tmp/dcvlr-useradd-XXXXXX";
    const std::string base = mkdtemp(tmpl);
    RunCommand({"/usr/sbin/useradd", "--no-create-home", "--shell",
                "/usr/sbin/nologin", name},
               base + "/useradd");
    std::filesystem::remove_all(base);
    return uid() >= 0;
  });
  EXPECT_GE(uid(), 0) << "useradd " << name << " failed";
  return uid();
}

void Cluster::SignalCoordinator(int sig) { coordinator_->Signal(sig); }

std::string Cluster::CoordinatorLog() const {
  return ReadAll(dir_ + "/coordinator-" + std::to_string(coordinator_starts_) +
                 ".log");
}

void Cluster::KillCoordinator() {
  coordinator_->Signal(SIGKILL);
  coordinator_->Wait();
  coordinator_.reset();
}

void Cluster::StopCoordinator() {
  coordinator_->Signal(SIGTERM);
  coordinator_->Wait();
  coordinator_.reset();
}

void Cluster::StartAgent(const std::string& name, int gpus,
                         std::vector<std::string> extra_args,
                         const std::string& coordinator) {
  std::vector<std::string> argv = {
      BinDir() + "/dcvlr-agent",
      "--coordinator",
      coordinator.empty() ? addr_file() : coordinator,
      "--name",
      name,
      "--gpus",
      std::to_string(gpus),
      "--work-dir",
      dir_ + "/work-" + name};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  if (secure_ && !Lists(argv, "--tls-cert") && !Lists(argv, "--insecure")) {
    const std::string base = certs_dir() + "/nodes/" + name;
    if (ReadAll(base + ".pem").empty()) {
      CommandResult made = Certs({"node", name});
      EXPECT_EQ(made.exit_code, 0) << made.err;
    }
    argv.insert(argv.end(),
                {"--tls-cert", base + ".pem", "--tls-key", base + ".key",
                 "--tls-ca", certs_dir() + "/ca.pem"});
  }
  if (!Lists(argv, "--tls-cert") && !Lists(argv, "--insecure")) {
    argv.push_back("--insecure");
  }
  agents_.emplace_back(
      name, std::make_unique<Process>(argv, dir_ + "/agent-" + name + ".log"));
}

void Cluster::KillAgent(const std::string& name, int sig) {
  for (auto& [n, agent] : agents_) {
    if (n == name && agent) {
      agent->Signal(sig);
      agent->Wait();
      agent.reset();
    }
  }
}

bool Cluster::AwaitReadyNodes(int count) {
  return Eventually([&] {
    grpc::ClientContext context;
    v1::ListNodesResponse response;
    if (!stub_->ListNodes(&context, v1::ListNodesRequest(), &response).ok()) {
      return false;
    }
    int ready = 0;
    for (const auto& node : response.nodes()) {
      ready += node.state() == v1::NODE_STATE_READY;
    }
    return ready >= count;
  });
}

CommandResult RunCommand(std::vector<std::string> argv,
                         const std::string& output_base) {
  std::vector<char*> raw;
  for (std::string& a : argv) raw.push_back(a.data());
  raw.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    int out = open((output_base + ".out").c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                   0644);
    int err = open((output_base + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                   0644);
    dup2(out, 1);
    dup2(err, 2);
    execv(raw[0], raw.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CommandResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadAll(output_base + ".out");
  result.err = ReadAll(output_base + ".err");
  return result;
}

CommandResult Cluster::Ctl(std::vector<std::string> args,
                           const std::string& user) {
  static int counter = 0;
  std::vector<std::string> argv = {BinDir() + "/dcvlrctl", "--coordinator",
                                   address_, "--user", user};
  if (secure_) {
    // As that Unix user, who they are is what their MUNGE credential says.
    EnsureUnixUser(user);
    argv = {"/usr/sbin/runuser",
            "-u",
            user,
            "--",
            BinDir() + "/dcvlrctl",
            "--coordinator",
            address_,
            "--tls-ca",
            certs_dir() + "/ca.pem",
            "--munge-socket",
            munge_socket()};
  }
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(std::move(argv),
                    dir_ + "/ctl-" + std::to_string(++counter));
}

std::string Cluster::WriteFile(const std::string& name,
                               const std::string& text) {
  const std::string path = dir_ + "/" + name;
  std::ofstream(path, std::ios::trunc) << text;
  return path;
}

std::string Cluster::Submit(const std::string& name, const std::string& yaml) {
  CommandResult result = Ctl({"submit", WriteFile(name, yaml)});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::string id = result.out;
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

v1::Job Cluster::GetJob(const std::string& id) {
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_job(id);
  v1::Job job;
  grpc::Status status = stub_->GetJob(&context, request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

v1::Job Cluster::AwaitJob(const std::string& id,
                          const std::function<bool(const v1::Job&)>& done,
                          std::chrono::seconds timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  v1::WatchJobRequest request;
  request.set_job(id);
  auto reader = stub_->WatchJob(&context, request);
  v1::Job job;
  while (reader->Read(&job)) {
    if (done(job)) {
      context.TryCancel();
      break;
    }
  }
  reader->Finish();
  return job;
}

v1::Job Cluster::AwaitState(const std::string& id, v1::JobState state,
                            std::chrono::seconds timeout) {
  return AwaitJob(
      id, [state](const v1::Job& j) { return j.state() == state; }, timeout);
}

v1::Job Cluster::AwaitEnd(const std::string& id, std::chrono::seconds timeout) {
  return AwaitJob(
      id, [](const v1::Job& j) { return IsTerminal(j.state()); }, timeout);
}

}  // namespace dcvlr::testing
