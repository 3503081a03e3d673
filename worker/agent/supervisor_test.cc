#include "worker/agent/supervisor.h"

#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::HasSubstr;

bool Alive(pid_t pid) { return kill(pid, 0) == 0; }

// Killed descendants are reaped by the supervisor's reaper thread, which
// may not have run yet: wait (bounded) for the pid to be gone entirely, so
// that a zombie left behind fails the test too.
bool GoneEventually(pid_t pid) {
  for (int i = 0; i < 500 && Alive(pid); ++i) usleep(10000);
  return !Alive(pid);
}

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dcvlr-supervisor-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    supervisor_ =
        std::make_unique<Supervisor>(dir_, [this](const AttemptExit& e) {
          std::lock_guard<std::mutex> lock(mu_);
          exits_.push_back(e);
          cv_.notify_all();
        });
  }
  void TearDown() override {
    supervisor_.reset();
    std::filesystem::remove_all(dir_);
  }

  AttemptSpec Spec(const std::string& job, std::vector<std::string> scripts,
                   double grace_s = 5) {
    AttemptSpec spec;
    spec.job_id = job;
    spec.attempt = 1;
    spec.grace_s = grace_s;
    for (size_t rank = 0; rank < scripts.size(); ++rank) {
      ProcessSpec p;
      p.rank = static_cast<int>(rank);
      p.argv = {"/bin/bash", "-c", scripts[rank]};
      p.env = {"PATH=/usr/bin:/bin", "DCVLR_JOB_ID=" + job, "DCVLR_ATTEMPT=1",
               "DCVLR_AGENT_DIR=" + dir_, "OUT=" + dir_};
      p.log_path = dir_ + "/" + job + "-rank-" + std::to_string(rank) + ".log";
      spec.processes.push_back(p);
    }
    return spec;
  }

  AttemptExit AwaitExit(const std::string& job) {
    std::unique_lock<std::mutex> lock(mu_);
    auto found = [&] {
      for (const auto& e : exits_) {
        if (e.job_id == job) return true;
      }
      return false;
    };
    EXPECT_TRUE(cv_.wait_for(lock, std::chrono::seconds(30), found))
        << "no exit reported for " << job;
    for (const auto& e : exits_) {
      if (e.job_id == job) return e;
    }
    return {};
  }

  // Waits until `path` exists and holds `lines` numbers; returns them.
  std::vector<pid_t> AwaitPids(const std::string& path, size_t lines) {
    for (int i = 0; i < 3000; ++i) {
      std::ifstream in(path);
      if (!in) {
        usleep(10000);  // polling for a file the children write
        continue;
      }
      std::vector<pid_t> pids;
      pid_t pid;
      while (in >> pid) pids.push_back(pid);
      if (pids.size() >= lines) return pids;
      usleep(10000);  // polling a file the children write
    }
    ADD_FAILURE() << path << " never got " << lines << " pids";
    return {};
  }

  std::string Read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::string dir_;
  std::unique_ptr<Supervisor> supervisor_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<AttemptExit> exits_;
};

TEST_F(SupervisorTest, ReportsSuccessAndWritesLogs) {
  ASSERT_TRUE(
      supervisor_->Start(Spec("j-1", {"echo out; echo err >&2", "exit 0"}))
          .ok());
  AttemptExit exit = AwaitExit("j-1");
  EXPECT_EQ(exit.exit_code, 0);
  EXPECT_FALSE(exit.stopped);
  EXPECT_EQ(Read(dir_ + "/j-1-rank-0.log"), "out\nerr\n");
  EXPECT_TRUE(supervisor_->Running().empty());
}

TEST_F(SupervisorTest, AFailingRankStopsItsPeersAndIsReported) {
  ASSERT_TRUE(supervisor_->Start(Spec("j-2", {"sleep 100", "exit 3"})).ok());
  AttemptExit exit = AwaitExit("j-2");
  EXPECT_EQ(exit.exit_code, 3);
  EXPECT_THAT(exit.message, HasSubstr("rank 1 exited with code 3"));
}

TEST_F(SupervisorTest, StopKillsTheWholeTreeEvenEscapedGrandchildren) {
  // A child, a grandchild in the same group, and one that left the group.
  const std::string script =
      "sleep 200 & echo $! >> $OUT/pids; "
      "bash -c 'sleep 201 & echo $! >> $OUT/pids; wait' & "
      "setsid sleep 202 & echo $! >> $OUT/pids; wait";
  ASSERT_TRUE(supervisor_->Start(Spec("j-3", {script})).ok());
  std::vector<pid_t> pids = AwaitPids(dir_ + "/pids", 3);
  ASSERT_EQ(pids.size(), 3u);
  for (pid_t pid : pids) EXPECT_TRUE(Alive(pid));
  supervisor_->Stop("j-3", 1, 5, "test");
  AttemptExit exit = AwaitExit("j-3");
  EXPECT_TRUE(exit.stopped);
  EXPECT_THAT(exit.message, HasSubstr("stopped: test"));
  for (pid_t pid : pids) {
    EXPECT_TRUE(GoneEventually(pid)) << "pid " << pid << " survived";
  }
}

TEST_F(SupervisorTest, ProcessesIgnoringSigtermAreKilledAfterTheGrace) {
  ASSERT_TRUE(supervisor_
                  ->Start(Spec("j-4",
                               {"trap '' TERM; echo ready > $OUT/ready; while "
                                ":; do sleep 0.1; done"},
                               0.2))
                  .ok());
  AwaitPids(dir_ + "/ready", 0);
  supervisor_->Stop("j-4", 1, 0.2, "test");
  AttemptExit exit = AwaitExit("j-4");
  EXPECT_EQ(exit.signal, SIGKILL);
  EXPECT_EQ(exit.exit_code, 128 + SIGKILL);
}

TEST_F(SupervisorTest, AProgramThatCannotRunExits127WithAMessage) {
  AttemptSpec spec = Spec("j-5", {""});
  spec.processes[0].argv = {"/nonexistent/program"};
  ASSERT_TRUE(supervisor_->Start(spec).ok());
  AttemptExit exit = AwaitExit("j-5");
  EXPECT_EQ(exit.exit_code, 127);
  EXPECT_THAT(Read(spec.processes[0].log_path),
              HasSubstr("cannot run /nonexistent/program"));
}

TEST_F(SupervisorTest, TaggedProcessesAreMatchedByNodeJobAndAttempt) {
  // Agents sharing a machine (as in tests, even of different clusters) may
  // run the same (job, attempt): ending it on one must spare the other's.
  AttemptSpec spec = Spec("j-7", {"echo $$ > $OUT/pid; sleep 100"});
  ASSERT_TRUE(supervisor_->Start(spec).ok());
  pid_t pid = AwaitPids(dir_ + "/pid", 1).at(0);
  EXPECT_EQ(SignalTaggedProcesses(dir_ + "-other", "j-7", 1, SIGKILL), 0);
  EXPECT_EQ(SignalTaggedProcesses(dir_, "j-7", 2, SIGKILL), 0);
  EXPECT_EQ(SignalTaggedProcesses(dir_, "j-8", 1, SIGKILL), 0);
  EXPECT_TRUE(Alive(pid));
  EXPECT_EQ(SignalTaggedProcesses(dir_, "j-7", 1, SIGKILL), 1);
  EXPECT_EQ(AwaitExit("j-7").signal, SIGKILL);
}

TEST_F(SupervisorTest, RefusesToStartTheSameAttemptTwice) {
  ASSERT_TRUE(supervisor_->Start(Spec("j-6", {"sleep 100"})).ok());
  EXPECT_FALSE(supervisor_->Start(Spec("j-6", {"sleep 100"})).ok());
  supervisor_->StopAll(1, "test");
  AwaitExit("j-6");
}

}  // namespace
}  // namespace dcvlr
