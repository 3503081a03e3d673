// A local cluster of real dcvlr processes for tests: one dcvlr-coordinator
// and N dcvlr-agent processes on loopback with ephemeral ports, each in its
// own process group, all under one temporary directory.
#ifndef DCVLR_TESTS_CLUSTER_H_
#define DCVLR_TESTS_CLUSTER_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dcvlr/v1/client.grpc.pb.h"
#include "grpcpp/channel.h"

namespace dcvlr::testing {

// A child process in its own process group; killed (the whole group) when
// destroyed.
class Process {
 public:
  // Starts `argv` with stdout and stderr appended to `log_path`.
  Process(std::vector<std::string> argv, const std::string& log_path,
          std::vector<std::string> extra_env = {});
  ~Process();

  pid_t pid() const { return pid_; }
  // Sends `sig` to the process only (not its group).
  void Signal(int sig);
  // Waits for it to end and returns its wait status.
  int Wait();

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `argv` (argv[0] a path) to its end, its stdout and stderr kept in
// `output_base`.out and .err.
CommandResult RunCommand(std::vector<std::string> argv,
                         const std::string& output_base);

class Cluster {
 public:
  // Creates the directory; starts nothing.
  Cluster();
  ~Cluster();

  const std::string& dir() const { return dir_; }

  // Turns on TLS and MUNGE for what starts next, as a lab runs (the first
  // StartCoordinator() without --insecure does it by itself): a cluster
  // CA with certificates for the coordinator, for each of `nodes` and for
  // root (the harness's own calls; uid 0 is an admin), made by
  // deploy/dcvlr-certs.sh under certs_dir(); and a munged of the cluster's
  // own with a fresh key. The coordinator then serves TLS with --auth
  // munge, agents dial it with their node's certificate, and Ctl() runs
  // dcvlrctl as the Unix user it is given (runuser) with a MUNGE
  // credential. Must be called before StartCoordinator().
  void EnableSecurity(const std::vector<std::string>& nodes);
  bool secure() const { return secure_; }
  std::string certs_dir() const { return dir_ + "/certs"; }
  std::string munge_socket() const { return dir_ + "/munge.socket"; }
  // Runs deploy/dcvlr-certs.sh with `args` against certs_dir().
  CommandResult Certs(std::vector<std::string> args);
  // A TLS channel to the coordinator as the user certificate `user` (made
  // on demand), or with no certificate for an empty `user`.
  std::shared_ptr<grpc::Channel> TlsChannel(const std::string& user) const;
  std::string state_dir() const { return dir_ + "/state"; }
  std::string addr_file() const { return state_dir() + "/coordinator.addr"; }

  // Starts the coordinator (again, after KillCoordinator) and waits for its
  // "listening on" line. It serves TLS and takes users' MUNGE credentials
  // (EnableSecurity()), unless `extra_args` hold --insecure.
  void StartCoordinator(std::vector<std::string> extra_args = {});
  // kill -9.
  void KillCoordinator();
  // SIGTERM, and waits for it to exit.
  void StopCoordinator();
  // Sends `sig` to the coordinator (SIGHUP reloads its cluster config).
  void SignalCoordinator(int sig);
  // The coordinator's log (stdout and stderr) so far.
  std::string CoordinatorLog() const;
  // Starts an agent with `gpus` pretend GPUs. It dials `coordinator`
  // (default: the coordinator's address file), with a certificate for
  // `name` (made on demand) when the cluster is secure.
  void StartAgent(const std::string& name, int gpus,
                  std::vector<std::string> extra_args = {},
                  const std::string& coordinator = "");
  void KillAgent(const std::string& name, int sig);
  // Waits until the coordinator lists `count` READY nodes.
  bool AwaitReadyNodes(int count);

  // Runs dcvlrctl against this cluster as `user`: in a secure cluster as
  // that Unix user (made if missing; root is an admin), whose MUNGE
  // credential says who it is; else with --user.
  CommandResult Ctl(std::vector<std::string> args,
                    const std::string& user = "tester");
  // Writes a job file under the cluster's directory; returns its path.
  std::string WriteFile(const std::string& name, const std::string& text);
  // Submits a job file through dcvlrctl; returns the job id.
  std::string Submit(const std::string& name, const std::string& yaml);

  v1::Job GetJob(const std::string& id);
  // Watches the job until `done(job)` holds or `timeout` passes; returns the
  // job as last seen.
  v1::Job AwaitJob(const std::string& id,
                   const std::function<bool(const v1::Job&)>& done,
                   std::chrono::seconds timeout = std::chrono::seconds(60));
  // AwaitJob until the job is in `state`.
  v1::Job AwaitState(const std::string& id, v1::JobState state,
                     std::chrono::seconds timeout = std::chrono::seconds(60));
  v1::Job AwaitEnd(const std::string& id,
                   std::chrono::seconds timeout = std::chrono::seconds(60));

  v1::ClientService::Stub* stub() { return stub_.get(); }
  std::string address() const { return address_; }

 private:
  std::string dir_;
  std::string address_;
  std::unique_ptr<Process> coordinator_;
  std::vector<std::pair<std::string, std::unique_ptr<Process>>> agents_;
  std::unique_ptr<v1::ClientService::Stub> stub_;
  int coordinator_starts_ = 0;
  bool secure_ = false;
  std::unique_ptr<Process> munged_;
};

// Makes the Unix user `name` unless it exists (useradd, no home, no login
// shell); returns its uid, or -1 with the failure in the test's output.
int EnsureUnixUser(const std::string& name);

// The directory holding the built programs.
std::string BinDir();

// A file's contents; empty if it cannot be read.
std::string ReadAll(const std::string& path);

// For benchmark drivers: one SubmitJob RPC of `yaml` as user "bench";
// returns the job's id, or prints the error and exits 1.
std::string SubmitOrExit(v1::ClientService::Stub* stub,
                         const std::string& yaml);

// Waits (up to `timeout`) for a coordinator's log to hold its first
// stdout line, "listening on HOST:PORT", and returns HOST:PORT; empty if
// it never does.
std::string AwaitListening(
    const std::string& log_path,
    std::chrono::milliseconds timeout = std::chrono::seconds(30));

// Waits (polling, bounded) until `condition` holds.
bool Eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

// Waits until the file at `path` holds at least `count` pids (as job scripts
// write them, one per line) and returns them; fewer if it never does.
std::vector<pid_t> AwaitPids(const std::string& path, size_t count);

// Gone, or a zombie that whoever reaps it has not reaped yet.
bool ProcessDead(pid_t pid);

}  // namespace dcvlr::testing

#endif  // DCVLR_TESTS_CLUSTER_H_
