// Cluster tests: the real dcvlr-coordinator, dcvlr-agent and dcvlrctl as
// processes on loopback.
#include "tests/cluster.h"

#include <signal.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/names.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dcvlr::testing {
namespace {

using ::testing::HasSubstr;

bool Alive(pid_t pid) { return kill(pid, 0) == 0; }

// Running, or able to run: not gone and not a zombie (dead, its exit status
// not yet collected by its parent).
bool Running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() &&
         line[paren + 2] != 'Z';
}

TEST(ClusterTest, LogLevelsShowDebugDetailOnlyWhenAskedFor) {
  Cluster cluster;
  cluster.StartCoordinator({"--log-level", "debug"});
  cluster.StartAgent("n1", 1, {"--log-level", "warning"});
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string id =
      cluster.Submit("hi.yaml", "name: hi\nkind: command\nrun: \"true\"\n");
  EXPECT_EQ(cluster.AwaitEnd(id).state(), v1::JOB_STATE_SUCCEEDED);
  // The coordinator at debug: the placement, the agent's reports and the
  // store batches, each line with its severity and source.
  const std::string coordinator = cluster.CoordinatorLog();
  EXPECT_THAT(coordinator, ::testing::ContainsRegex(
                               "I[0-9]{8} [^\n]*core_attempts.cc:[0-9]+\\] "
                               "job=" +
                               id + " attempt=1 placed on n1"));
  EXPECT_THAT(coordinator, HasSubstr("job=" + id +
                                     " attempt=1 reports "
                                     "PHASE_EXITED"));
  EXPECT_THAT(coordinator, HasSubstr("store batch: "));
  EXPECT_THAT(coordinator, HasSubstr("node=n1 connected"));
  // The agent at warning: none of its info lines.
  const std::string agent = ReadAll(cluster.dir() + "/agent-n1.log");
  EXPECT_THAT(agent, ::testing::Not(HasSubstr("registered with")));
  EXPECT_THAT(agent, ::testing::Not(HasSubstr("exited code=0")));
  // A level that does not exist is refused before anything starts.
  CommandResult bad =
      RunCommand({BinDir() + "/dcvlr-coordinator", "--log-level", "loud"},
                 cluster.dir() + "/bad-level");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("--log-level: loud not in"));
}

TEST(ClusterTest, CommandJobSucceedsAndItsLogsComeBack) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 2);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));

  const std::string id = cluster.Submit(
      "hello.yaml",
      "name: hello\nkind: command\n"
      "command: [\"/bin/sh\", \"-c\", \"echo hello from $DCVLR_JOB_ID; "
      "echo to stderr >&2\"]\n");
  ASSERT_EQ(id, "j-1");
  CommandResult wait = cluster.Ctl({"wait", id, "--timeout", "60"});
  EXPECT_EQ(wait.exit_code, 0) << wait.out << wait.err;
  EXPECT_THAT(wait.out, HasSubstr("SUCCEEDED"));

  CommandResult logs = cluster.Ctl({"logs", id, "--rank", "0"});
  EXPECT_EQ(logs.exit_code, 0) << logs.err;
  EXPECT_EQ(logs.out, "hello from j-1\nto stderr\n");

  CommandResult get = cluster.Ctl({"get", id, "-o", "json"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  auto json = nlohmann::json::parse(get.out);
  EXPECT_EQ(json["id"], "j-1");
  EXPECT_EQ(json["name"], "hello");
  EXPECT_EQ(json["user"], "tester");
  EXPECT_EQ(json["state"], "SUCCEEDED");
  EXPECT_EQ(json["attempt"], 1);
  EXPECT_EQ(json["nodes"], nlohmann::json::array({"n1"}));
  EXPECT_EQ(json["exit_code"], 0);

  CommandResult describe = cluster.Ctl({"describe", id});
  EXPECT_THAT(describe.out, HasSubstr("submitted by tester"));
  EXPECT_THAT(describe.out, HasSubstr("scheduled"));
  EXPECT_THAT(describe.out, HasSubstr("started"));
  EXPECT_THAT(describe.out, HasSubstr("succeeded"));

  CommandResult nodes = cluster.Ctl({"nodes", "-o", "json"});
  auto node_json = nlohmann::json::parse(nodes.out);
  ASSERT_EQ(node_json.size(), 1u);
  EXPECT_EQ(node_json[0]["gpus_total"], 2);
  EXPECT_EQ(node_json[0]["gpus_free"], 2);
}

TEST(ClusterTest, FailingJobReportsItsExitCode) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 0);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string id =
      cluster.Submit("fail.yaml",
                     "kind: command\nretry: {on_failure: 1, backoff_s: 0.1}\n"
                     "run: |\n  echo failing\n  exit 3\n");
  CommandResult wait = cluster.Ctl({"wait", id, "--timeout", "60"});
  EXPECT_EQ(wait.exit_code, 1);
  v1::Job job = cluster.GetJob(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.exit_code(), 3);
  EXPECT_EQ(job.attempt(), 2) << "on_failure: 1 allows one retry";
  EXPECT_THAT(job.reason(), HasSubstr("exited with code 3"));
  CommandResult describe = cluster.Ctl({"describe", id});
  EXPECT_THAT(describe.out, HasSubstr("Exit code:  3"));
  EXPECT_THAT(describe.out, HasSubstr("retry 1 of 1"));
}

TEST(ClusterTest, TwoNodeJobSeesConsistentRendezvousVariables) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 2);
  cluster.StartAgent("n2", 2);
  ASSERT_TRUE(cluster.AwaitReadyNodes(2));
  const std::string id = cluster.Submit(
      "gang.yaml",
      "name: gang\nkind: command\n"
      "resources: {nodes: 2, gpus_per_node: 2, procs_per_node: gpu}\n"
      "run: |\n"
      "  echo \"RANK=$RANK LOCAL_RANK=$LOCAL_RANK WORLD_SIZE=$WORLD_SIZE "
      "LOCAL_WORLD_SIZE=$LOCAL_WORLD_SIZE NODE_RANK=$NODE_RANK "
      "MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT "
      "NODE=$DCVLR_NODE GPUS=$CUDA_VISIBLE_DEVICES "
      "ATTEMPT=$DCVLR_ATTEMPT CKPT=$DCVLR_CHECKPOINT_DIR\"\n");
  v1::Job job = cluster.AwaitEnd(id);
  ASSERT_EQ(JobStateName(job.state()), "SUCCEEDED") << job.reason();

  CommandResult logs = cluster.Ctl({"logs", id});
  ASSERT_EQ(logs.exit_code, 0) << logs.err;
  // "[R] RANK=R ..." per rank.
  std::map<int, std::map<std::string, std::string>> ranks;
  for (absl::string_view line :
       absl::StrSplit(logs.out, '\n', absl::SkipEmpty())) {
    std::map<std::string, std::string> vars;
    for (absl::string_view word : absl::StrSplit(line, ' ')) {
      std::vector<std::string> kv =
          absl::StrSplit(word, absl::MaxSplits('=', 1));
      if (kv.size() == 2) vars[kv[0]] = kv[1];
    }
    int rank;
    ASSERT_TRUE(absl::SimpleAtoi(vars["RANK"], &rank)) << line;
    EXPECT_EQ(ranks.count(rank), 0u) << "rank " << rank << " twice";
    ranks[rank] = vars;
  }
  ASSERT_EQ(ranks.size(), 4u) << logs.out;
  std::set<std::string> nodes;
  for (const auto& [rank, vars] : ranks) {
    EXPECT_EQ(vars.at("WORLD_SIZE"), "4");
    EXPECT_EQ(vars.at("LOCAL_WORLD_SIZE"), "2");
    EXPECT_EQ(vars.at("NODE_RANK"), std::to_string(rank / 2));
    EXPECT_EQ(vars.at("LOCAL_RANK"), std::to_string(rank % 2));
    EXPECT_EQ(vars.at("MASTER_ADDR"), ranks[0].at("MASTER_ADDR"));
    EXPECT_EQ(vars.at("MASTER_PORT"), ranks[0].at("MASTER_PORT"));
    EXPECT_EQ(vars.at("GPUS"), "0,1");
    EXPECT_EQ(vars.at("ATTEMPT"), "1");
    nodes.insert(vars.at("NODE"));
  }
  EXPECT_EQ(nodes.size(), 2u) << "both ranks of a node ran on one agent";
  EXPECT_EQ(ranks[0].at("NODE"), ranks[1].at("NODE"));
  EXPECT_EQ(ranks[0].at("MASTER_ADDR"), "127.0.0.1");
  int port = 0;
  EXPECT_TRUE(absl::SimpleAtoi(ranks[0].at("MASTER_PORT"), &port) && port > 0);
}

TEST(ClusterTest, CancelKillsTheWholeProcessTree) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string pids = cluster.dir() + "/pids";
  const std::string id =
      cluster.Submit("tree.yaml",
                     "kind: command\n"
                     "env: {PIDS: " +
                         pids +
                         "}\n"
                         "run: |\n"
                         "  sleep 300 & echo $! >> $PIDS\n"
                         "  bash -c 'sleep 301 & echo $! >> $PIDS; sleep 302' "
                         "& echo $! >> $PIDS\n"
                         "  setsid sleep 303 & echo $! >> $PIDS\n"
                         "  echo $$ >> $PIDS\n"
                         "  wait\n");
  std::vector<pid_t> tree = AwaitPids(pids, 5);
  ASSERT_EQ(tree.size(), 5u);
  for (pid_t pid : tree) ASSERT_TRUE(Alive(pid));
  ASSERT_EQ(cluster.AwaitState(id, v1::JOB_STATE_RUNNING).state(),
            v1::JOB_STATE_RUNNING);

  CommandResult cancel = cluster.Ctl({"cancel", id, "--wait"});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(cluster.GetJob(id).state(), v1::JOB_STATE_CANCELLED);
  // Once the job is CANCELLED nothing of it may run. The agent, their
  // subreaper, then collects the dead (zombies for a moment) too.
  for (pid_t pid : tree)
    EXPECT_FALSE(Running(pid)) << "pid " << pid << " survived";
  EXPECT_TRUE(Eventually([&] {
    return std::none_of(tree.begin(), tree.end(), Alive);
  })) << "the agent left zombies";
}

TEST(ClusterTest, AFloodOfMetricsLinesLeavesTheAgentResponsive) {
  // 300,000 short lines (3.6 MB), then a 2 MB line with no structure, then
  // a checkpoint line. The agent's scan of this once took minutes of CPU
  // under a lock its heartbeats needed: the node was declared lost and the
  // job requeued. Now the scan is one pass, the long line is skipped, and
  // the checkpoint after it is still seen.
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string id = cluster.Submit(
      "flood.yaml",
      "kind: command\n"
      "run: |\n"
      "  yes '{\"step\": 1, \"loss\": 0.5}' | head -n 300000 >> "
      "$DCVLR_METRICS_FILE\n"
      "  head -c 2000000 /dev/zero | tr '\\0' x >> $DCVLR_METRICS_FILE\n"
      "  echo >> $DCVLR_METRICS_FILE\n"
      "  echo '{\"checkpoint_step\": 7}' >> $DCVLR_METRICS_FILE\n"
      "  sleep 3\n");
  const v1::Job job = cluster.AwaitEnd(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason();
  EXPECT_EQ(job.attempt(), 1) << "the job was requeued: the node was lost";
  ASSERT_EQ(job.attempts_size(), 1);
  EXPECT_EQ(job.attempts(0).last_checkpoint_step(), 7);
}

TEST(ClusterTest, ListingsPageSoNoReplyOutgrowsTheMessageLimit) {
  // Six jobs of ~950 KB each: one reply of them all (5.6 MB) once broke
  // `dcvlrctl get` and `list` for every user against gRPC's 4 MiB limit.
  Cluster cluster;
  cluster.StartCoordinator();
  const std::string pad(950 * 1024, 'p');
  for (int i = 0; i < 6; ++i) {
    cluster.Submit("big.yaml",
                   "kind: command\nrun: 'true'\nenv: {PAD: " + pad + "}\n");
  }
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"list", "-o", "json"},
        std::vector<std::string>{"get", "-o", "json"}}) {
    CommandResult listed = cluster.Ctl(args);
    ASSERT_EQ(listed.exit_code, 0) << args[0] << ": " << listed.err;
    const nlohmann::json jobs = nlohmann::json::parse(listed.out);
    ASSERT_EQ(jobs.size(), 6u) << args[0];
    for (int i = 0; i < 6; ++i) {
      EXPECT_EQ(jobs[i]["id"], "j-" + std::to_string(6 - i)) << args[0];
    }
  }
  CommandResult limited = cluster.Ctl({"list", "--limit", "4", "-o", "json"});
  ASSERT_EQ(limited.exit_code, 0) << limited.err;
  EXPECT_EQ(nlohmann::json::parse(limited.out).size(), 4u);
}

TEST(ClusterTest, CoordinatorKill9AndRestartKeepsEveryJob) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 2);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string release = cluster.dir() + "/release";

  const std::string done =
      cluster.Submit("done.yaml", "kind: command\nrun: echo done\n");
  ASSERT_EQ(cluster.AwaitEnd(done).state(), v1::JOB_STATE_SUCCEEDED);
  const std::string failed =
      cluster.Submit("failed.yaml", "kind: command\nrun: exit 4\n");
  ASSERT_EQ(cluster.AwaitEnd(failed).state(), v1::JOB_STATE_FAILED);
  // Runs until the test creates a file.
  const std::string running =
      cluster.Submit("running.yaml",
                     "kind: command\nresources: {gpus_per_node: 2}\n"
                     "run: |\n  echo before\n  while [ ! -e " +
                         release +
                         " ]; do sleep 0.05; done\n"
                         "  echo after\n");
  ASSERT_EQ(cluster.AwaitState(running, v1::JOB_STATE_RUNNING).state(),
            v1::JOB_STATE_RUNNING);
  // Waits for the GPUs that `running` holds.
  const std::string pending = cluster.Submit(
      "pending.yaml",
      "kind: command\nresources: {gpus_per_node: 1}\nrun: echo later\n");
  const std::string cancelled = cluster.Submit(
      "cancelled.yaml",
      "kind: command\nresources: {gpus_per_node: 2}\nrun: echo never\n");
  ASSERT_EQ(cluster.Ctl({"cancel", cancelled}).exit_code, 0);

  std::map<std::string, v1::Job> before;
  for (const std::string& id : {done, failed, running, pending, cancelled}) {
    before[id] = cluster.GetJob(id);
  }
  cluster.KillCoordinator();
  cluster.StartCoordinator();

  for (const auto& [id, job] : before) {
    v1::Job after = cluster.GetJob(id);
    EXPECT_EQ(JobStateName(after.state()), JobStateName(job.state())) << id;
    EXPECT_EQ(after.attempt(), job.attempt()) << id;
    EXPECT_EQ(after.exit_code(), job.exit_code()) << id;
    EXPECT_EQ(after.spec().name(), job.spec().name()) << id;
  }
  // The running attempt goes on untouched once its agent is back, and
  // finishes as attempt 1.
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  std::ofstream(release) << "go\n";
  v1::Job finished = cluster.AwaitEnd(running);
  EXPECT_EQ(JobStateName(finished.state()), "SUCCEEDED") << finished.reason();
  EXPECT_EQ(finished.attempt(), 1);
  CommandResult logs = cluster.Ctl({"logs", running});
  EXPECT_EQ(logs.out, "[0] before\n[0] after\n");
  // And the job that waited for its GPUs runs now.
  EXPECT_EQ(cluster.AwaitEnd(pending).state(), v1::JOB_STATE_SUCCEEDED);
  // New ids continue after the old ones.
  EXPECT_EQ(cluster.Submit("next.yaml", "kind: command\nrun: 'true'\n"), "j-6");
}

TEST(ClusterTest, DrainStopsPlacementsAndEvictMovesRunningJobs) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  // Runs until stopped on its first attempt; succeeds on the next.
  const std::string id = cluster.Submit(
      "move.yaml",
      "kind: command\nresources: {gpus_per_node: 1}\n"
      "run: |\n"
      "  if [ \"$DCVLR_ATTEMPT\" = 1 ]; then exec sleep 300; fi\n"
      "  echo resumed on $DCVLR_NODE\n");
  ASSERT_EQ(cluster.AwaitState(id, v1::JOB_STATE_RUNNING).state(),
            v1::JOB_STATE_RUNNING);
  cluster.StartAgent("n2", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(2));
  ASSERT_EQ(cluster.Ctl({"drain", "n2"}, "root").exit_code, 0);
  // A job submitted now must wait: n1 is busy and n2 is drained.
  const std::string waiting = cluster.Submit(
      "wait.yaml",
      "kind: command\nresources: {gpus_per_node: 1}\nrun: 'true'\n");
  ASSERT_TRUE(Eventually([&] {
    return cluster.GetJob(waiting).reason().find("waiting for") !=
           std::string::npos;
  })) << "no scheduling pass looked at the job";
  EXPECT_EQ(cluster.GetJob(waiting).state(), v1::JOB_STATE_PENDING);
  ASSERT_EQ(cluster.Ctl({"undrain", "n2"}, "root").exit_code, 0);
  EXPECT_EQ(cluster.AwaitEnd(waiting).state(), v1::JOB_STATE_SUCCEEDED);

  CommandResult evict = cluster.Ctl({"drain", "n1", "--evict"}, "root");
  ASSERT_EQ(evict.exit_code, 0) << evict.err;
  v1::Job job = cluster.AwaitEnd(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason();
  ASSERT_EQ(job.attempts_size(), 2);
  EXPECT_THAT(job.attempts(0).reason(), HasSubstr("killed by signal 15"));
  EXPECT_EQ(job.attempts(1).placements(0).node(), "n2");
  EXPECT_EQ(cluster.Ctl({"logs", id, "--rank", "0"}).out, "resumed on n2\n");
  CommandResult nodes = cluster.Ctl({"nodes", "-o", "json"});
  auto json = nlohmann::json::parse(nodes.out);
  EXPECT_EQ(json[0]["state"], "DRAINED");
}

TEST(ClusterTest, ASubmitFloodIsRefusedWithAClearMessage) {
  // Three 1 MiB files once made 104,598 jobs in 30 s. With submit_limits,
  // a user's flood stops at the bound, says why, and costs others nothing.
  Cluster cluster;
  const std::string config = cluster.WriteFile(
      "cluster.yaml",
      "submit_limits: {max_pending_jobs: 8, jobs_per_s: 0.001, burst: 6}\n");
  cluster.StartCoordinator({"--cluster-config", config});
  const std::string job = "kind: command\nrun: 'true'\n";
  std::string three;
  for (const char* name : {"a", "b", "c"}) {
    three += std::string("---\nname: ") + name + "\n" + job;
  }
  EXPECT_EQ(
      cluster.Ctl({"submit", cluster.WriteFile("1.yaml", three)}).exit_code, 0);
  EXPECT_EQ(
      cluster.Ctl({"submit", cluster.WriteFile("2.yaml", three)}).exit_code, 0);
  // The bucket (6) is empty: refused whole, saying when to retry.
  CommandResult rate =
      cluster.Ctl({"submit", cluster.WriteFile("3.yaml", job)});
  EXPECT_EQ(rate.exit_code, 1);
  EXPECT_THAT(rate.err, HasSubstr("submit rate limit of 0.001 jobs/s"));
  // Another user is not held back by tester's flood.
  CommandResult other =
      cluster.Ctl({"submit", cluster.WriteFile("4.yaml", three)}, "carol");
  EXPECT_EQ(other.exit_code, 0) << other.err;
  CommandResult more =
      cluster.Ctl({"submit", cluster.WriteFile("5.yaml", three)}, "carol");
  EXPECT_EQ(more.exit_code, 0) << more.err;
  // carol has 6 of her 8 pending: 3 more break that bound, which is
  // checked before the (also empty) bucket and names itself.
  CommandResult pending =
      cluster.Ctl({"submit", cluster.WriteFile("6.yaml", three)}, "carol");
  EXPECT_EQ(pending.exit_code, 1);
  EXPECT_THAT(pending.err,
              HasSubstr("user carol has 6 jobs that have not ended; the "
                        "cluster allows 8"));
  CommandResult list = cluster.Ctl({"list", "-o", "json"});
  EXPECT_EQ(nlohmann::json::parse(list.out).size(), 12u) << list.out;
}

TEST(ClusterTest, ClusterConfigQuotasShowInTheQueueAndReloadOnSighup) {
  Cluster cluster;
  const std::string config =
      cluster.WriteFile("cluster.yaml",
                        "groups:\n  vision: {shares: 3, max_gpus: 1}\n"
                        "users:\n  tester: {group: vision}\n");
  cluster.StartCoordinator({"--cluster-config", config});
  cluster.StartAgent("n1", 4);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string job =
      "kind: command\nresources: {gpus_per_node: 1}\nrun: exec sleep 300\n";
  const std::string first = cluster.Submit("a.yaml", job);
  const std::string second = cluster.Submit("b.yaml", job);
  ASSERT_EQ(cluster.AwaitState(first, v1::JOB_STATE_RUNNING).state(),
            v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(Eventually([&] {
    return cluster.GetJob(second).reason().find("quota") != std::string::npos;
  }));
  CommandResult queue = cluster.Ctl({"queue", "-o", "json"});
  ASSERT_EQ(queue.exit_code, 0) << queue.err;
  auto json = nlohmann::json::parse(queue.out);
  ASSERT_EQ(json["jobs"].size(), 1u);
  EXPECT_EQ(json["jobs"][0]["id"], second);
  EXPECT_THAT(json["jobs"][0]["reason"].get<std::string>(),
              HasSubstr("group vision at quota 1/1 GPUs"));
  CommandResult describe = cluster.Ctl({"describe", second});
  EXPECT_THAT(describe.out, HasSubstr("position 1 of 1"));

  // A broken file is refused and the old quota stays...
  cluster.WriteFile("cluster.yaml", "groups:\n  vision: {max_gpus: lots}\n");
  cluster.SignalCoordinator(SIGHUP);
  ASSERT_TRUE(Eventually([&] {
    return cluster.CoordinatorLog().find("rejected") != std::string::npos;
  }));
  EXPECT_THAT(cluster.CoordinatorLog(), HasSubstr("cluster.yaml:2:"));
  EXPECT_EQ(cluster.GetJob(second).state(), v1::JOB_STATE_PENDING);
  // ...and a good one takes effect: the quota rises and the job starts.
  cluster.WriteFile("cluster.yaml",
                    "groups:\n  vision: {max_gpus: 2}\n"
                    "users:\n  tester: {group: vision}\n");
  cluster.SignalCoordinator(SIGHUP);
  EXPECT_EQ(cluster.AwaitState(second, v1::JOB_STATE_RUNNING).state(),
            v1::JOB_STATE_RUNNING);
  for (const std::string& id : {first, second}) {
    EXPECT_EQ(cluster.Ctl({"cancel", id, "--wait"}).exit_code, 0);
  }
}

// A job file whose aliases expand to 10^10 nodes: 10 levels, each a list of
// 10 aliases of the level before.
std::string AliasBombJob() {
  std::string text = "kind: command\nrun: x\nl0: &l0 [x]\n";
  for (int level = 1; level <= 10; ++level) {
    const std::string name = "l" + std::to_string(level);
    const std::string below = "*l" + std::to_string(level - 1);
    text += name + ": &" + name + " [" + below;
    for (int c = 1; c < 10; ++c) text += ", " + below;
    text += "]\n";
  }
  return text;
}

TEST(ClusterTest, BadJobFilesAreRejectedWithFileLineAndKey) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 8);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  struct Case {
    std::string name;
    std::string text;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"syntax.yaml", "kind: command\nrun: [unclosed\n",
       "syntax.yaml:3:1: invalid YAML"},
      {"binary.yaml", std::string("kind: command\n\x00\xff\xfe", 16),
       "binary.yaml:2:1: byte 0x00"},
      {"unknown.yaml", "kind: command\nrun: x\nretries: 3\n",
       "unknown.yaml:3:1: retries: unknown key"},
      {"type.yaml", "kind: command\nrun: x\nresources: {nodes: two}\n",
       "type.yaml:3:20: resources.nodes: expected an integer, got 'two'"},
      {"zero.yaml", "kind: command\nrun: x\nresources: {nodes: 0}\n",
       "zero.yaml:3:20: resources.nodes: must be from 1 to 1024"},
      {"negative.yaml",
       "kind: command\nrun: x\nresources: {gpus_per_node: -2}\n",
       "negative.yaml:3:28: resources.gpus_per_node: must be from 0 to 64"},
      {"absurd.yaml", "kind: command\nrun: x\nresources: {nodes: 100000}\n",
       "absurd.yaml:3:20: resources.nodes: must be from 1 to 1024"},
      {"after.yaml", "kind: command\nrun: x\nafter: [j-99]\n",
       "after.yaml:3:9: after[0]: no job with id or name 'j-99'"},
      {"toobig.yaml", "kind: command\nrun: x\nresources: {gpus_per_node: 16}\n",
       "toobig.yaml:3:28: resources.gpus_per_node: 16 GPUs per node asked for, "
       "but the largest node has 8"},
      // Once a stack overflow of the coordinator and of dcvlrctl.
      {"selfalias.yaml", "kind: command\nrun: x\ntraining: &a [*a]\n",
       "selfalias.yaml:3:11: an alias makes this node contain itself"},
      // 10 levels of 10 aliases: 10^10 nodes in 600 bytes; once gigabytes.
      {"bomb.yaml", AliasBombJob(),
       "the document expands to more than 200000 nodes once its aliases are "
       "expanded"},
  };
  for (const Case& c : cases) {
    CommandResult result =
        cluster.Ctl({"submit", cluster.WriteFile(c.name, c.text)});
    EXPECT_EQ(result.exit_code, 2) << c.name << ": " << result.err;
    EXPECT_THAT(result.err, HasSubstr(c.expected)) << c.name;
    CommandResult dry =
        cluster.Ctl({"submit", "--dry-run", cluster.WriteFile(c.name, c.text)});
    EXPECT_EQ(dry.exit_code, 2) << c.name;
  }
  CommandResult missing = cluster.Ctl({"submit", cluster.dir() + "/nope.yaml"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("nope.yaml"));
  // Nothing was submitted.
  CommandResult list = cluster.Ctl({"list", "-o", "json"});
  EXPECT_EQ(nlohmann::json::parse(list.out).size(), 0u) << list.out;
  // The coordinator is still there.
  EXPECT_EQ(cluster.Submit("ok.yaml", "kind: command\nrun: 'true'\n"), "j-1");
}

}  // namespace
}  // namespace dcvlr::testing
