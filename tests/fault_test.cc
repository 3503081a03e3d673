// Fault tests with the real binaries: agents killed and restarted.
#include <signal.h>

#include <fstream>

#include "coordinator/store_testing.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster.h"
#include "tests/http.h"
#include "tests/tcp_proxy.h"

namespace dcvlr::testing {
namespace {

TEST(FaultTest, AFailingStoreRefusesChangesKeepsJobsRunningAndRecovers) {
  // A second connection holds the state store's write lock, as a stuck
  // sqlite3 shell would: the coordinator's writes fail (after its 5 s busy
  // timeout) and it turns read-only until they succeed again.
  Cluster cluster;
  cluster.StartCoordinator({"--metrics-listen", "127.0.0.1:0"});
  cluster.StartAgent("n1", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string release = cluster.dir() + "/release";
  const std::string running =
      cluster.Submit("run.yaml", "kind: command\nrun: |\n  while [ ! -e " +
                                     release + " ]; do sleep 0.1; done\n");
  ASSERT_EQ(cluster.AwaitState(running, v1::JOB_STATE_RUNNING).state(),
            v1::JOB_STATE_RUNNING);
  auto metric = [&] {
    const std::string text =
        HttpGet("http://" + ReadAddress(cluster.state_dir() + "/metrics.addr") +
                "/metrics")
            .value_or("");
    const size_t at = text.find("\ndcvlr_store_healthy ");
    return at == std::string::npos ? std::string("?") : text.substr(at + 21, 1);
  };
  EXPECT_EQ(metric(), "1");

  WriteLock lock(cluster.state_dir() + "/state.db");
  CommandResult refused = cluster.Ctl(
      {"submit", cluster.WriteFile("x.yaml", "kind: command\nrun: 'true'\n")});
  EXPECT_EQ(refused.exit_code, 1) << refused.err;
  EXPECT_THAT(refused.err, ::testing::HasSubstr("read-only"));
  EXPECT_THAT(refused.err,
              ::testing::Not(::testing::HasSubstr("cannot reach")));
  EXPECT_EQ(metric(), "0");
  CommandResult cancel = cluster.Ctl({"cancel", running});
  EXPECT_EQ(cancel.exit_code, 1);
  EXPECT_THAT(cancel.err, ::testing::HasSubstr("read-only"));
  // The running job ends meanwhile; its end is kept.
  std::ofstream(release).close();
  EXPECT_EQ(cluster.AwaitEnd(running).state(), v1::JOB_STATE_SUCCEEDED);

  lock.Release();
  ASSERT_TRUE(
      Eventually([&] { return metric() == "1"; }, std::chrono::seconds(30)));
  const std::string after =
      cluster.Submit("after.yaml", "kind: command\nrun: 'true'\n");
  EXPECT_EQ(cluster.AwaitEnd(after).state(), v1::JOB_STATE_SUCCEEDED);
  // The refused submit left nothing; the ended job is on disk: a restarted
  // coordinator has both jobs and only them.
  cluster.KillCoordinator();
  cluster.StartCoordinator({"--metrics-listen", "127.0.0.1:0"});
  EXPECT_EQ(cluster.GetJob(running).state(), v1::JOB_STATE_SUCCEEDED);
  CommandResult list = cluster.Ctl({"list", "-o", "json"});
  EXPECT_EQ(nlohmann::json::parse(list.out).size(), 2u) << list.out;
}

TEST(FaultTest, KilledAgentTakesItsJobWithItAndTheJobMovesOn) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string pids = cluster.dir() + "/pids";
  const std::string id =
      cluster.Submit("tree.yaml",
                     "kind: command\nresources: {gpus_per_node: 1}\n"
                     "retry: {max_attempts: 3}\n"
                     "env: {PIDS: " +
                         pids +
                         "}\n"
                         "run: |\n"
                         "  if [ \"$DCVLR_ATTEMPT\" = 1 ]; then\n"
                         "    sleep 300 & echo $! >> $PIDS\n"
                         "    bash -c 'sleep 301 & echo $! >> $PIDS; wait' &\n"
                         "    echo $$ >> $PIDS\n"
                         "    wait\n"
                         "  fi\n"
                         "  echo attempt $DCVLR_ATTEMPT on $DCVLR_NODE\n");
  std::vector<pid_t> tree = AwaitPids(pids, 3);
  ASSERT_EQ(tree.size(), 3u);
  cluster.StartAgent("n2", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(2));

  cluster.KillAgent("n1", SIGKILL);
  // The job's whole process group dies with its agent...
  for (pid_t pid : tree) {
    EXPECT_TRUE(Eventually([&] { return ProcessDead(pid); }))
        << "pid " << pid << " outlived its agent";
  }
  // ...and once n1 counts as lost the job runs again on n2.
  v1::Job job = cluster.AwaitEnd(id, std::chrono::seconds(60));
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason();
  ASSERT_EQ(job.attempts_size(), 2);
  EXPECT_THAT(job.attempts(0).reason(), ::testing::HasSubstr("node n1 lost"));
  EXPECT_EQ(job.attempts(1).placements(0).node(), "n2");
  EXPECT_EQ(cluster.Ctl({"logs", id, "--rank", "0"}).out, "attempt 2 on n2\n");
}

TEST(FaultTest, RestartedAgentKillsWhatItsPreviousLifeLeft) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string pids = cluster.dir() + "/pids";
  // setsid leaves the job's process group: only the agent's environment
  // scan can find it once the agent is gone. It writes its pid only once
  // it has left (the group's end must not take it along before).
  cluster.Submit("escape.yaml",
                 "kind: command\nretry: {max_attempts: 1}\n"
                 "env: {PIDS: " +
                     pids +
                     "}\n"
                     "run: |\n  setsid sh -c 'echo $$ >> $PIDS; exec sleep "
                     "300' &\n  wait\n");
  std::vector<pid_t> escaped = AwaitPids(pids, 1);
  ASSERT_EQ(escaped.size(), 1u);
  cluster.KillAgent("n1", SIGKILL);
  ASSERT_FALSE(ProcessDead(escaped[0]))
      << "nothing escaped; the test proves nothing";

  cluster.StartAgent("n1", 1);
  EXPECT_TRUE(Eventually([&] { return ProcessDead(escaped[0]); }));
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
}

TEST(FaultTest, CutOffAgentStopsItsAttemptBeforeItRunsElsewhere) {
  Cluster cluster;
  cluster.StartCoordinator();
  TcpProxy proxy(cluster.address());
  cluster.StartAgent("n1", 1, {}, proxy.address());
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string marks = cluster.dir();
  // Attempt 1 runs until killed; attempt 2 says whether attempt 1 was
  // still alive when it began.
  const std::string id = cluster.Submit(
      "partition.yaml",
      "kind: command\nresources: {gpus_per_node: 1}\nretry: {max_attempts: 3}\n"
      "env: {MARKS: " +
          marks +
          "}\n"
          "run: |\n"
          "  if [ \"$DCVLR_ATTEMPT\" = 1 ]; then\n"
          "    echo $$ > $MARKS/attempt1.pid\n"
          "    exec sleep 300\n"
          "  fi\n"
          "  if kill -0 $(cat $MARKS/attempt1.pid) 2>/dev/null; then\n"
          "    echo OVERLAP\n"
          "  else\n"
          "    echo clean\n"
          "  fi\n");
  std::vector<pid_t> first = AwaitPids(marks + "/attempt1.pid", 1);
  ASSERT_EQ(first.size(), 1u);
  cluster.StartAgent("n2", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(2));

  proxy.Cut();  // n1 lives on, but nothing it says arrives, nor the reverse
  v1::Job job = cluster.AwaitEnd(id, std::chrono::seconds(90));
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason();
  ASSERT_EQ(job.attempts_size(), 2);
  EXPECT_THAT(job.attempts(0).reason(), ::testing::HasSubstr("node n1 lost"));
  EXPECT_EQ(job.attempts(1).placements(0).node(), "n2");
  EXPECT_EQ(cluster.Ctl({"logs", id, "--rank", "0"}).out, "clean\n")
      << "attempt 2 started while attempt 1 still ran";
  EXPECT_TRUE(ProcessDead(first[0]));
  std::ifstream log(cluster.dir() + "/agent-n1.log");
  std::string text((std::istreambuf_iterator<char>(log)),
                   std::istreambuf_iterator<char>());
  EXPECT_THAT(text, ::testing::HasSubstr("lease expired"));
}

}  // namespace
}  // namespace dcvlr::testing
