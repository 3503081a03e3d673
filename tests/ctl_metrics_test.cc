// dcvlrctl's monitoring commands through the real binaries: watch's
// progress bar, metrics' history (table, CSV, JSON; kept across a
// coordinator restart) and top.
#include <fstream>
#include <iterator>
#include <regex>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster.h"

namespace dcvlr::testing {
namespace {

using ::testing::HasSubstr;

// Steps 1..20, loss 100 - step + 0.5, then exits 0.
constexpr char kTwentySteps[] = R"(name: twenty
kind: command
resources: {gpus_per_node: 1}
run: |
  for i in $(seq 1 20); do
    echo "{\"step\": $i, \"loss\": $((100 - i)).5, \"max_steps\": 20}" >> "$DCVLR_METRICS_FILE"
    sleep 0.05
  done
)";

TEST(CtlMetricsTest, WatchShowsProgressAndMetricsKeepsTheHistory) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 2);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string id = cluster.Submit("twenty.yaml", kTwentySteps);

  CommandResult watch = cluster.Ctl({"watch", id});
  EXPECT_EQ(watch.exit_code, 0) << watch.out << watch.err;
  EXPECT_THAT(watch.out, HasSubstr("SUCCEEDED"));
  EXPECT_THAT(watch.out,
              HasSubstr("step 20/20 [##############################] 100%  "
                        "loss 80.5000"));

  CommandResult table = cluster.Ctl({"metrics", id});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_TRUE(
      std::regex_search(table.out, std::regex(R"(^STEP +loss +max_steps\n)")))
      << table.out;
  EXPECT_TRUE(std::regex_search(table.out, std::regex(R"(\n20 +80\.5 +20\n$)")))
      << table.out;
  EXPECT_EQ(std::count(table.out.begin(), table.out.end(), '\n'), 21);

  CommandResult csv =
      cluster.Ctl({"metrics", id, "-o", "csv", "--key", "loss"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  EXPECT_THAT(csv.out, HasSubstr("step,loss\n1,99.5\n"));
  EXPECT_THAT(csv.out, HasSubstr("\n20,80.5\n"));

  // The history outlives the coordinator process.
  cluster.StopCoordinator();
  cluster.StartCoordinator();
  CommandResult json = cluster.Ctl({"metrics", id, "-o", "json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["job_id"], id);
  EXPECT_EQ(parsed["series"]["loss"]["seen"], 20);
  ASSERT_EQ(parsed["series"]["loss"]["points"].size(), 20u);
  EXPECT_EQ(parsed["series"]["loss"]["points"][19]["step"], 20);
  EXPECT_EQ(parsed["series"]["loss"]["points"][19]["value"], 80.5);
}

// Lines written while the coordinator is down reach it once it is back,
// each exactly once, even after the job has ended meanwhile.
TEST(CtlMetricsTest, RelayResumesWhereTheRestartedCoordinatorsHistoryEnds) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 1);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string go = cluster.dir() + "/go";
  const std::string id = cluster.Submit(
      "gap.yaml",
      "name: gap\nkind: command\nresources: {gpus_per_node: 1}\nrun: |\n"
      "  for i in $(seq 1 50); do echo \"{\\\"step\\\": $i, \\\"loss\\\": "
      "$i}\" >> \"$DCVLR_METRICS_FILE\"; done\n"
      "  while [ ! -e " +
          go +
          " ]; do sleep 0.05; done\n"
          "  for i in $(seq 51 100); do echo \"{\\\"step\\\": $i, "
          "\\\"loss\\\": $i}\" >> \"$DCVLR_METRICS_FILE\"; done\n");
  ASSERT_TRUE(Eventually([&] {
    CommandResult r = cluster.Ctl({"metrics", id, "--latest", "-o", "json"});
    return r.exit_code == 0 &&
           nlohmann::json::parse(r.out)["series"]["loss"]["seen"] == 50;
  }));
  cluster.KillCoordinator();
  cluster.WriteFile("go", "");
  // The job ends while the coordinator is down.
  ASSERT_TRUE(Eventually([&] {
    std::ifstream log(cluster.dir() + "/agent-n1.log");
    std::string text((std::istreambuf_iterator<char>(log)), {});
    return text.find("job=" + id + " attempt=1 exited code=0") !=
           std::string::npos;
  }));
  cluster.StartCoordinator();
  v1::Job job = cluster.AwaitEnd(id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.reason();
  nlohmann::json loss;
  EXPECT_TRUE(Eventually([&] {
    CommandResult r = cluster.Ctl({"metrics", id, "-o", "json"});
    if (r.exit_code != 0) return false;
    loss = nlohmann::json::parse(r.out)["series"]["loss"];
    return loss["points"].size() >= 100;
  })) << loss.dump();
  EXPECT_EQ(loss["seen"], 100);
  ASSERT_EQ(loss["points"].size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(loss["points"][i]["step"], i + 1) << i;
  }
}

TEST(CtlMetricsTest, TopShowsUsageByNodeAndUser) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartAgent("n1", 2);
  ASSERT_TRUE(cluster.AwaitReadyNodes(1));
  const std::string id = cluster.Submit(
      "loop.yaml",
      "name: loop\nkind: command\nresources: {gpus_per_node: 1}\nrun: |\n"
      "  for i in $(seq 1 3000); do\n"
      "    echo \"{\\\"step\\\": $i, \\\"loss\\\": 2.5}\" >> "
      "\"$DCVLR_METRICS_FILE\"\n"
      "    sleep 0.1\n"
      "  done\n");
  ASSERT_TRUE(Eventually([&] {
    return cluster.Ctl({"metrics", id, "--latest"}).exit_code == 0;
  }));

  CommandResult top = cluster.Ctl({"top", "--once"});
  ASSERT_EQ(top.exit_code, 0) << top.err;
  EXPECT_THAT(top.out, HasSubstr("GPUs: 1 of 2 in use"));
  EXPECT_TRUE(std::regex_search(
      top.out, std::regex("\nn1 +READY +2 +1 +1 +" + id + "\n")))
      << top.out;
  EXPECT_TRUE(
      std::regex_search(top.out, std::regex(R"(\ntester +1 +1 +0 +0 )")))
      << top.out;
  EXPECT_TRUE(std::regex_search(
      top.out,
      std::regex("\n" + id + " +loop +tester +RUNNING +1 +[0-9]+ +2\\.5 ")))
      << top.out;

  CommandResult json = cluster.Ctl({"top", "--once", "-o", "json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto parsed = nlohmann::json::parse(json.out);
  ASSERT_EQ(parsed["jobs"].size(), 1u);
  EXPECT_EQ(parsed["jobs"][0]["latest_metrics"]["loss"], 2.5);

  CommandResult missing = cluster.Ctl({"metrics", "j-999"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("no job 'j-999'"));
  cluster.Ctl({"cancel", id});
}

}  // namespace
}  // namespace dcvlr::testing
