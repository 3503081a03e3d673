// Runs the processes of job attempts on this machine and reports when an
// attempt's processes have all ended.
//
// Each process runs in a session (and process group) of its own, so a stop
// reaches its whole tree: SIGTERM to the group, the grace period, then
// SIGKILL. The agent is made a child subreaper, so descendants that escape
// their group are reparented to it and reaped here; before an attempt is
// reported ended, any process still carrying the attempt's DCVLR_JOB_ID,
// DCVLR_ATTEMPT and this agent's DCVLR_AGENT_DIR (its work dir) in its
// environment is killed. The work dir keeps apart agents that share a
// machine, even agents of different clusters that reuse node names and job
// ids, as tests do; and it is what a restarted agent shares with its
// previous life. Nothing of an ended attempt is
// left running, and no zombies stay.
//
// Thread-safe. The exit callback runs on the supervisor's reaper thread.
#ifndef DCVLR_WORKER_AGENT_SUPERVISOR_H_
#define DCVLR_WORKER_AGENT_SUPERVISOR_H_

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace dcvlr {

struct ProcessSpec {
  int rank = 0;
  std::vector<std::string> argv;
  std::vector<std::string> env;  // NAME=value, the whole environment
  std::string log_path;          // stdout and stderr, appended
  std::string cwd;
  std::string pid_path;  // where the pid is written, if not empty
};

struct AttemptSpec {
  std::string job_id;
  int attempt = 0;
  double grace_s = 30;
  std::vector<ProcessSpec> processes;
};

struct AttemptExit {
  std::string job_id;
  int attempt = 0;
  // The first failing process's exit code (128 + signal when killed), or 0.
  int exit_code = 0;
  int signal = 0;
  // Ended by Stop() / StopAll().
  bool stopped = false;
  std::string message;
  // The rank of the first failing process, or -1.
  int failed_rank = -1;
};

class Supervisor {
 public:
  using ExitCallback = std::function<void(const AttemptExit&)>;

  // `agent_dir` must match the DCVLR_AGENT_DIR of the processes'
  // environments.
  Supervisor(std::string agent_dir, ExitCallback on_exit);
  // Kills every process still running and waits for them.
  ~Supervisor();

  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts every process of the attempt. If one cannot be started, those
  // already started are killed and an error returns; no callback follows.
  absl::Status Start(const AttemptSpec& spec);

  // SIGTERM now, SIGKILL after `grace_s`. The exit callback reports
  // `stopped`.
  void Stop(const std::string& job_id, int attempt, double grace_s,
            const std::string& reason);
  void StopAll(double grace_s, const std::string& reason);

  // (job, attempt) of every attempt with processes alive.
  std::vector<std::pair<std::string, int>> Running() const;

  // Blocks until no attempt runs or `timeout_ms` passes; true if none runs.
  bool AwaitIdle(int64_t timeout_ms);

 private:
  struct Process {
    pid_t pid = 0;
    int rank = 0;
    std::string pid_path;
    bool exited = false;
    int status = 0;
  };
  struct Attempt {
    std::string job_id;
    int number = 0;
    double grace_s = 30;
    std::vector<Process> processes;
    bool stopping = false;
    bool stopped_by_order = false;
    std::string stop_reason;
    // The first process to fail, for the report.
    int first_failure = -1;
    std::chrono::steady_clock::time_point kill_at;
  };

  // Forks happen on one long-lived thread: PR_SET_PDEATHSIG fires when the
  // thread that forked a child exits, and it must fire only with the agent.
  absl::Status LaunchOnThisThread(const AttemptSpec& spec,
                                  std::vector<Process>* started);
  void LauncherLoop();
  void ReaperLoop();
  void KillerLoop();
  void BeginStop(Attempt& attempt, double grace_s);
  // Called with mu_ held once every process of `attempt` has exited.
  AttemptExit Finish(Attempt& attempt);

  const std::string agent_dir_;
  const ExitCallback on_exit_;

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::pair<std::string, int>, Attempt> attempts_;
  std::map<pid_t, std::pair<std::string, int>> pid_to_attempt_;
  std::deque<std::function<void()>> launch_queue_;
  bool shutting_down_ = false;

  std::thread launcher_;
  std::thread reaper_;
  std::thread killer_;
};

// Sends `sig` to every process whose environment names this attempt on this
// agent (DCVLR_JOB_ID, DCVLR_ATTEMPT, DCVLR_AGENT_DIR). Returns how many;
// with `pids`, appends theirs.
int SignalTaggedProcesses(const std::string& agent_dir,
                          const std::string& job_id, int attempt, int sig,
                          std::vector<pid_t>* pids = nullptr);

}  // namespace dcvlr

#endif  // DCVLR_WORKER_AGENT_SUPERVISOR_H_
