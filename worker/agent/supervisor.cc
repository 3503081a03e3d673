#include "worker/agent/supervisor.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace dcvlr {
namespace {

int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

bool Failed(int status) {
  return !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}

// After fork, in the child of a multithreaded process: only async-signal-safe
// calls from here on.
void WriteError(const char* what, const char* detail) {
  ssize_t ignored = write(2, what, strlen(what));
  if (detail != nullptr) {
    ignored = write(2, detail, strlen(detail));
    ignored = write(2, ": ", 2);
    const char* error = strerror(errno);
    ignored = write(2, error, strlen(error));
  }
  ignored = write(2, "\n", 1);
  (void)ignored;
}

// The process the agent starts for each rank leads a new session (so a stop
// reaches its whole process group) and stays as a small shim between the
// agent and the job's program:
//   1. It asks the kernel for SIGHUP when the agent dies (PR_SET_PDEATHSIG)
//      and then kills its whole group: a killed agent leaves nothing behind.
//   2. It forks the program, which gets the default signal mask, and waits.
//   3. SIGTERM and SIGINT reach the program through the group; the shim
//      itself outlives them.
//   4. When the program ends, the shim ends the same way (exit code or
//      signal), so the agent sees the program's own status.
[[noreturn]] void RunShim(pid_t agent, int null_fd, int log_fd, const char* cwd,
                          char* const argv[], char* const envp[]) {
  setsid();
  prctl(PR_SET_PDEATHSIG, SIGHUP);
  if (getppid() != agent) _exit(137);
  sigset_t shim_signals;
  sigemptyset(&shim_signals);
  for (int sig : {SIGCHLD, SIGHUP, SIGTERM, SIGINT})
    sigaddset(&shim_signals, sig);
  sigprocmask(SIG_SETMASK, &shim_signals, nullptr);
  signal(SIGCHLD, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  dup2(null_fd, 0);
  dup2(log_fd, 1);
  dup2(log_fd, 2);
  if (cwd != nullptr && chdir(cwd) != 0) {
    WriteError("dcvlr: cannot enter the working directory ", cwd);
    _exit(127);
  }
  const pid_t program = fork();
  if (program == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvpe(argv[0], argv, envp);
    WriteError("dcvlr: cannot run ", argv[0]);
    _exit(127);
  }
  if (program < 0) {
    WriteError("dcvlr: fork failed", nullptr);
    _exit(127);
  }
  while (true) {
    siginfo_t info;
    const int sig = sigwaitinfo(&shim_signals, &info);
    if (sig == SIGHUP) {
      kill(0, SIGKILL);  // the agent is gone: so is the job, shim included
    }
    if (sig != SIGCHLD) continue;
    int status = 0;
    pid_t done;
    while ((done = waitpid(-1, &status, WNOHANG)) > 0) {
      if (done != program) continue;
      if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
      const int term = WTERMSIG(status);
      signal(term, SIG_DFL);
      sigset_t only;
      sigemptyset(&only);
      sigaddset(&only, term);
      sigprocmask(SIG_UNBLOCK, &only, nullptr);
      kill(getpid(), term);
      _exit(128 + term);
    }
  }
}

// Whether `pid` exists and is not a zombie.
bool IsRunning(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() &&
         line[paren + 2] != 'Z';
}

}  // namespace

int SignalTaggedProcesses(const std::string& agent_dir,
                          const std::string& job_id, int attempt, int sig,
                          std::vector<pid_t>* pids) {
  const std::string want_node = "DCVLR_AGENT_DIR=" + agent_dir;
  const std::string want_job = "DCVLR_JOB_ID=" + job_id;
  const std::string want_attempt = absl::StrCat("DCVLR_ATTEMPT=", attempt);
  const pid_t self = getpid();
  int signalled = 0;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return 0;
  while (struct dirent* entry = readdir(proc)) {
    char* end = nullptr;
    long pid = strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 1 || pid == self) continue;
    std::ifstream environ(absl::StrCat("/proc/", pid, "/environ"),
                          std::ios::binary);
    if (!environ) continue;
    bool node_match = false, job_match = false, attempt_match = false;
    std::string var;
    while (std::getline(environ, var, '\0')) {
      node_match |= var == want_node;
      job_match |= var == want_job;
      attempt_match |= var == want_attempt;
    }
    if (node_match && job_match && attempt_match &&
        kill(static_cast<pid_t>(pid), sig) == 0) {
      ++signalled;
      if (pids != nullptr) pids->push_back(static_cast<pid_t>(pid));
    }
  }
  closedir(proc);
  return signalled;
}

Supervisor::Supervisor(std::string agent_dir, ExitCallback on_exit)
    : agent_dir_(std::move(agent_dir)), on_exit_(std::move(on_exit)) {
  // Orphaned descendants of our children come to us, not to init.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  launcher_ = std::thread([this] { LauncherLoop(); });
  reaper_ = std::thread([this] { ReaperLoop(); });
  killer_ = std::thread([this] { KillerLoop(); });
}

Supervisor::~Supervisor() {
  StopAll(0, "agent shutting down");
  AwaitIdle(10000);
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
  }
  changed_.notify_all();
  launcher_.join();
  killer_.join();
  // The reaper blocks in waitpid while children exist; all are dead now.
  reaper_.join();
}

void Supervisor::LauncherLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    changed_.wait(lock,
                  [this] { return shutting_down_ || !launch_queue_.empty(); });
    if (launch_queue_.empty()) return;
    auto task = std::move(launch_queue_.front());
    launch_queue_.pop_front();
    lock.unlock();
    task();
    lock.lock();
  }
}

absl::Status Supervisor::Start(const AttemptSpec& spec) {
  const auto key = std::make_pair(spec.job_id, spec.attempt);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (attempts_.count(key)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "job=", spec.job_id, " attempt=", spec.attempt, " already runs"));
    }
    // Reserve the key so that a concurrent Start fails.
    Attempt& attempt = attempts_[key];
    attempt.job_id = spec.job_id;
    attempt.number = spec.attempt;
    attempt.grace_s = spec.grace_s;
  }
  std::promise<absl::Status> done;
  std::future<absl::Status> result = done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    launch_queue_.push_back([this, &spec, &done] {
      std::vector<Process> started;
      absl::Status status = LaunchOnThisThread(spec, &started);
      done.set_value(status);
    });
  }
  changed_.notify_all();
  return result.get();
}

absl::Status Supervisor::LaunchOnThisThread(const AttemptSpec& spec,
                                            std::vector<Process>* started) {
  const auto key = std::make_pair(spec.job_id, spec.attempt);
  absl::Status status;
  for (const ProcessSpec& p : spec.processes) {
    // Everything the child needs is prepared before fork: after it, only
    // async-signal-safe calls.
    std::vector<char*> argv, envp;
    for (const std::string& a : p.argv)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const std::string& e : p.env)
      envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    int log_fd = open(p.log_path.c_str(),
                      O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      status = absl::UnavailableError(
          absl::StrCat("open ", p.log_path, ": ", strerror(errno)));
      break;
    }
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    const pid_t parent = getpid();
    pid_t pid;
    {
      // Hold the lock across fork so the reaper cannot see this pid exit
      // before it is registered.
      std::lock_guard<std::mutex> lock(mu_);
      pid = fork();
      if (pid == 0) {
        RunShim(parent, null_fd, log_fd,
                p.cwd.empty() ? nullptr : p.cwd.c_str(), argv.data(),
                envp.data());
      }
      if (pid > 0) {
        attempts_[key].processes.push_back({pid, p.rank, p.pid_path});
        pid_to_attempt_[pid] = key;
      }
    }
    close(log_fd);
    if (null_fd >= 0) close(null_fd);
    if (pid < 0) {
      status =
          absl::ResourceExhaustedError(absl::StrCat("fork: ", strerror(errno)));
      break;
    }
    if (!p.pid_path.empty()) {
      std::ofstream(p.pid_path, std::ios::trunc) << pid << "\n";
    }
  }
  changed_.notify_all();
  if (!status.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    Attempt& attempt = attempts_[key];
    if (attempt.processes.empty()) {
      attempts_.erase(key);
    } else {
      // Those started die now; their exit is not reported.
      attempt.stopping = true;
      attempt.stop_reason = "launch failed";
      attempt.kill_at = std::chrono::steady_clock::now();
      for (const Process& proc : attempt.processes) kill(-proc.pid, SIGKILL);
    }
  }
  return status;
}

void Supervisor::BeginStop(Attempt& attempt, double grace_s) {
  if (attempt.stopping) {
    // A second stop may only shorten the grace period.
    auto at = std::chrono::steady_clock::now() +
              std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
    if (at < attempt.kill_at) attempt.kill_at = at;
    changed_.notify_all();
    return;
  }
  attempt.stopping = true;
  attempt.kill_at =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
  for (const Process& proc : attempt.processes) {
    if (!proc.exited) kill(-proc.pid, SIGTERM);
  }
  changed_.notify_all();
}

void Supervisor::Stop(const std::string& job_id, int attempt, double grace_s,
                      const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = attempts_.find({job_id, attempt});
  if (it == attempts_.end()) return;
  it->second.stopped_by_order = true;
  if (it->second.stop_reason.empty()) it->second.stop_reason = reason;
  BeginStop(it->second, grace_s);
}

void Supervisor::StopAll(double grace_s, const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, attempt] : attempts_) {
    attempt.stopped_by_order = true;
    if (attempt.stop_reason.empty()) attempt.stop_reason = reason;
    BeginStop(attempt, grace_s);
  }
}

std::vector<std::pair<std::string, int>> Supervisor::Running() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<std::string, int>> out;
  for (const auto& [key, attempt] : attempts_) {
    if (!attempt.processes.empty()) out.push_back(key);
  }
  return out;
}

bool Supervisor::AwaitIdle(int64_t timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                           [this] { return attempts_.empty(); });
}

void Supervisor::KillerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutting_down_) {
    auto next = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    const auto now = std::chrono::steady_clock::now();
    for (auto& [key, attempt] : attempts_) {
      if (!attempt.stopping) continue;
      if (attempt.kill_at <= now) {
        for (const Process& proc : attempt.processes) {
          if (!proc.exited) kill(-proc.pid, SIGKILL);
        }
        SignalTaggedProcesses(agent_dir_, attempt.job_id, attempt.number,
                              SIGKILL);
        // Check again shortly in case a new process escaped meanwhile.
        next = std::min(next, now + std::chrono::milliseconds(200));
      } else {
        next = std::min(next, attempt.kill_at);
      }
    }
    changed_.wait_until(lock, next);
  }
}

AttemptExit Supervisor::Finish(Attempt& attempt) {
  // Pid files mark attempts that may still run; this one no longer does.
  for (const Process& proc : attempt.processes) {
    if (!proc.pid_path.empty()) unlink(proc.pid_path.c_str());
  }
  AttemptExit exit;
  exit.job_id = attempt.job_id;
  exit.attempt = attempt.number;
  exit.stopped = attempt.stopped_by_order;
  if (attempt.first_failure >= 0) {
    const Process& failed = attempt.processes[attempt.first_failure];
    exit.failed_rank = failed.rank;
    exit.exit_code = ExitCodeOf(failed.status);
    exit.signal = WIFSIGNALED(failed.status) ? WTERMSIG(failed.status) : 0;
    exit.message = exit.signal != 0
                       ? absl::StrCat("rank ", failed.rank,
                                      " killed by signal ", exit.signal)
                       : absl::StrCat("rank ", failed.rank,
                                      " exited with code ", exit.exit_code);
  }
  if (exit.stopped) {
    absl::StrAppend(&exit.message, exit.message.empty() ? "" : "; ",
                    "stopped: ", attempt.stop_reason);
  }
  return exit;
}

void Supervisor::ReaperLoop() {
  while (true) {
    int status = 0;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      // No children: wait until there are, or until shutdown.
      std::unique_lock<std::mutex> lock(mu_);
      if (shutting_down_) return;
      changed_.wait_for(lock, std::chrono::milliseconds(200), [this] {
        return shutting_down_ || !pid_to_attempt_.empty();
      });
      continue;
    }
    std::optional<AttemptExit> report;
    std::vector<pid_t> killed;  // the attempt's last processes, dying
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto owner = pid_to_attempt_.find(pid);
      if (owner == pid_to_attempt_.end()) continue;  // a reparented orphan
      auto it = attempts_.find(owner->second);
      pid_to_attempt_.erase(owner);
      if (it == attempts_.end()) continue;
      Attempt& attempt = it->second;
      bool all_exited = true;
      for (size_t i = 0; i < attempt.processes.size(); ++i) {
        Process& proc = attempt.processes[i];
        if (proc.pid == pid) {
          proc.exited = true;
          proc.status = status;
          // The process's group goes with it.
          kill(-pid, SIGKILL);
          if (Failed(status) && attempt.first_failure < 0) {
            attempt.first_failure = static_cast<int>(i);
            // A failed rank takes its peers down, as torchrun does.
            if (!attempt.stopping) BeginStop(attempt, attempt.grace_s);
          }
        }
        all_exited = all_exited && proc.exited;
      }
      if (all_exited) {
        SignalTaggedProcesses(agent_dir_, attempt.job_id, attempt.number,
                              SIGKILL, &killed);
        const bool launch_failed = attempt.stop_reason == "launch failed";
        AttemptExit exit = Finish(attempt);
        attempts_.erase(it);
        if (!launch_failed) report = std::move(exit);
      }
    }
    changed_.notify_all();
    if (!report) continue;
    // A SIGKILLed process runs on until the kernel schedules its death: the
    // attempt counts as ended (and its GPUs as free) only once none does.
    // Those that are our children (orphans we adopted) are reaped here.
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (pid_t dying : killed) {
      while (std::chrono::steady_clock::now() < deadline) {
        int ignored;
        const pid_t reaped = waitpid(dying, &ignored, WNOHANG);
        if (reaped == dying || !IsRunning(dying)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
    on_exit_(*report);
  }
}

}  // namespace dcvlr
