// Chaos: while several checkpointing jobs run, kill agents (and restart
// them), job processes and the coordinator at random, from a fixed seed and
// for a bounded time. Then every job must have SUCCEEDED, no two attempts of
// a job may ever have run at once, and no process may be left behind.
#include <dirent.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cluster.h"

namespace dcvlr::testing {
namespace {

constexpr int kJobs = 4;
constexpr int kSteps = 150;  // 0.1 s each: ~15 s of work per job
constexpr int kAgents = 3;

// Pids of live (non-zombie) processes whose environment holds `needle`.
std::vector<pid_t> TaggedProcesses(const std::string& needle) {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  while (struct dirent* entry = readdir(proc)) {
    const pid_t pid = atoi(entry->d_name);
    if (pid <= 1) continue;
    std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
    std::string field;
    for (int i = 0; i < 3 && stat >> field; ++i) {
    }
    if (field == "Z") continue;
    std::ifstream environ(absl::StrCat("/proc/", pid, "/environ"),
                          std::ios::binary);
    std::string var;
    while (std::getline(environ, var, '\0')) {
      if (var == needle) {
        pids.push_back(pid);
        break;
      }
    }
  }
  closedir(proc);
  return pids;
}

TEST(ChaosTest, JobsSurviveRandomKillsWithoutEverRunningTwice) {
  unsigned seed = 20261126;
  if (const char* env = getenv("DCVLR_CHAOS_SEED")) seed = atoi(env);
  std::mt19937 random(seed);
  fprintf(stderr, "chaos seed %u (set DCVLR_CHAOS_SEED to replay)\n", seed);

  Cluster cluster;
  cluster.StartCoordinator();
  for (int a = 0; a < kAgents; ++a) cluster.StartAgent(absl::StrCat("n", a), 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(kAgents));
  const std::string shared = cluster.dir() + "/shared";
  std::filesystem::create_directories(shared);
  const std::string tag = "CHAOS_TAG=" + cluster.dir();

  std::vector<std::string> ids;
  for (int j = 0; j < kJobs; ++j) {
    const std::string ckpt = absl::StrCat(shared, "/ckpt-", j);
    ids.push_back(cluster.Submit(
        absl::StrCat("chaos-", j, ".yaml"),
        absl::StrCat(
            "kind: command\nresources: {gpus_per_node: 1}\n"
            "retry: {max_attempts: 100, on_failure: 100, backoff_s: 0.2}\n"
            "checkpoint_dir: ",
            ckpt, "\n", "env: {CHAOS_TAG: ", cluster.dir(),
            ", SHARED: ", shared, "}\n",
            "run: |\n"
            "  exec 9>$SHARED/$DCVLR_JOB_ID.lock\n"
            "  if ! flock -n 9; then\n"
            "    echo \"$DCVLR_JOB_ID attempt $DCVLR_ATTEMPT overlapped\" >> "
            "$SHARED/overlaps\n"
            "    exit 1\n"
            "  fi\n"
            "  step=$(cat $DCVLR_CHECKPOINT_DIR/step 2>/dev/null || echo 0)\n"
            "  trap 'exit 75' TERM\n"
            "  while [ $step -lt ",
            kSteps,
            " ]; do\n"
            "    sleep 0.1 & wait $!\n"
            "    step=$((step + 1))\n"
            "    echo $step > $DCVLR_CHECKPOINT_DIR/step.tmp\n"
            "    mv $DCVLR_CHECKPOINT_DIR/step.tmp $DCVLR_CHECKPOINT_DIR/step\n"
            "  done\n"
            "  echo finished at step $step\n")));
  }

  // Chaos, for a bounded time.
  std::vector<bool> agent_up(kAgents, true);
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int events = 0;
  while (std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(
        std::uniform_int_distribution<>(500, 2000)(random)));
    const int what = std::uniform_int_distribution<>(0, 9)(random);
    if (what < 4) {
      const int a = std::uniform_int_distribution<>(0, kAgents - 1)(random);
      const std::string name = absl::StrCat("n", a);
      if (agent_up[a]) {
        cluster.KillAgent(name, SIGKILL);
      } else {
        cluster.StartAgent(name, 1);
      }
      agent_up[a] = !agent_up[a];
      fprintf(stderr, "chaos: agent %s %s\n", name.c_str(),
              agent_up[a] ? "restarted" : "killed");
    } else if (what < 8) {
      std::vector<pid_t> pids = TaggedProcesses(tag);
      if (!pids.empty()) {
        const pid_t victim = pids[std::uniform_int_distribution<size_t>(
            0, pids.size() - 1)(random)];
        kill(victim, SIGKILL);
        fprintf(stderr, "chaos: killed job process %d\n", victim);
      }
    } else {
      cluster.KillCoordinator();
      cluster.StartCoordinator();
      fprintf(stderr, "chaos: coordinator killed and restarted\n");
    }
    ++events;
  }
  for (int a = 0; a < kAgents; ++a) {
    if (!agent_up[a]) cluster.StartAgent(absl::StrCat("n", a), 1);
  }
  fprintf(stderr, "chaos: %d events; now letting the jobs finish\n", events);

  for (int j = 0; j < kJobs; ++j) {
    v1::Job job = cluster.AwaitEnd(ids[j], std::chrono::seconds(180));
    EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED)
        << ids[j] << ": " << job.reason();
    std::ifstream step(absl::StrCat(shared, "/ckpt-", j, "/step"));
    int last = 0;
    step >> last;
    EXPECT_EQ(last, kSteps) << ids[j];
  }
  EXPECT_FALSE(std::filesystem::exists(shared + "/overlaps"))
      << "two attempts of one job ran at once";
  // Nothing of any job outlives it.
  EXPECT_TRUE(Eventually([&] { return TaggedProcesses(tag).empty(); },
                         std::chrono::seconds(10)));
}

}  // namespace
}  // namespace dcvlr::testing
