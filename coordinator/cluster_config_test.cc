#include "coordinator/cluster_config.h"

#include "coordinator/benchmarks.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

using ::testing::HasSubstr;

constexpr char kExample[] = R"(preemption: true
fair_share_half_life: 12h
default_grace_s: 45
checkpoint_root: /shared/ckpt
aging: {points_per_hour: 2, max_points: 30}
backfill: {max_reservations: 2}
groups:
  vision: {shares: 3, max_gpus: 16}
  nlp: {shares: 1}
users:
  alice: {group: vision, shares: 2, max_gpus: 8}
  bob: {group: nlp}
  carol:
)";

TEST(ClusterConfigTest, CheckpointRootMustBeAbsolute) {
  absl::StatusOr<ClusterConfig> config =
      ParseClusterConfig("c.yaml", "checkpoint_root: ckpt\n");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(
      std::string(config.status().message()),
      HasSubstr("c.yaml:1:18: checkpoint_root: must be an absolute path"));
}

TEST(ClusterConfigTest, ParsesEveryKey) {
  absl::StatusOr<ClusterConfig> config =
      ParseClusterConfig("cluster.yaml", kExample);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->preemption);
  EXPECT_DOUBLE_EQ(config->fair_share_half_life_s, 12 * 3600);
  EXPECT_DOUBLE_EQ(config->default_grace_s, 45);
  EXPECT_EQ(config->checkpoint_root, "/shared/ckpt");
  EXPECT_DOUBLE_EQ(config->aging_points_per_hour, 2);
  EXPECT_DOUBLE_EQ(config->aging_max_points, 30);
  EXPECT_EQ(config->max_reservations, 2);
  EXPECT_DOUBLE_EQ(config->Group("vision").shares, 3);
  EXPECT_EQ(config->Group("vision").max_gpus, 16);
  EXPECT_EQ(config->Group("nlp").max_gpus, 0);
  EXPECT_EQ(config->User("alice").group, "vision");
  EXPECT_DOUBLE_EQ(config->User("alice").shares, 2);
  EXPECT_EQ(config->User("alice").max_gpus, 8);
  EXPECT_EQ(config->User("bob").group, "nlp");
  EXPECT_EQ(config->User("carol").group, kDefaultGroup);
  EXPECT_EQ(config->User("nobody").group, kDefaultGroup);
  EXPECT_DOUBLE_EQ(config->User("nobody").shares, 1);
}

TEST(ClusterConfigTest, EmptyFileGivesTheDefaults) {
  absl::StatusOr<ClusterConfig> config = ParseClusterConfig("c.yaml", "");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->preemption);
  EXPECT_DOUBLE_EQ(config->fair_share_half_life_s, 7 * 86400);
  EXPECT_TRUE(config->users.empty());
}

TEST(ClusterConfigTest, ErrorsNameFileLineColumnAndKey) {
  absl::StatusOr<ClusterConfig> config =
      ParseClusterConfig("c.yaml",
                         "preemption: true\n"
                         "fair_share_halflife: 7d\n");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            "c.yaml:2:1: fair_share_halflife: unknown key (did you mean "
            "'fair_share_half_life'?); known: preemption, "
            "fair_share_half_life, default_grace_s, checkpoint_root, aging, "
            "backfill, submit_limits, admins, max_priority, audit_retention, "
            "groups, users");
}

TEST(ClusterConfigTest, ParsesSubmitLimits) {
  absl::StatusOr<ClusterConfig> config = ParseClusterConfig(
      "c.yaml",
      "submit_limits: {max_pending_jobs: 10000, jobs_per_s: 50, burst: 1000}\n"
      "users:\n  alice: {max_pending_jobs: 20000}\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->max_pending_jobs, 10000);
  EXPECT_DOUBLE_EQ(config->submit_jobs_per_s, 50);
  EXPECT_DOUBLE_EQ(config->submit_burst, 1000);
  EXPECT_EQ(config->User("alice").max_pending_jobs, 20000);
  EXPECT_EQ(config->User("bob").max_pending_jobs, -1);
  absl::StatusOr<ClusterConfig> bad =
      ParseClusterConfig("c.yaml", "submit_limits: {jobs_per_s: -1}\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(),
              HasSubstr("c.yaml:1:29: submit_limits.jobs_per_s"));
}

TEST(ClusterConfigTest, AdminsPriorityCapsAndAuditRetention) {
  absl::StatusOr<ClusterConfig> config = ParseClusterConfig(
      "c.yaml",
      "admins: [carol, \"@wheel\"]\n"
      "max_priority: 40\n"
      "audit_retention: 30d\n"
      "groups:\n  vision: {max_priority: 60}\n"
      "users:\n  alice: {group: vision}\n  bob: {group: vision, "
      "max_priority: 80}\n");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->MaxPriority("dave"), 40);
  EXPECT_EQ(config->MaxPriority("alice"), 60);
  EXPECT_EQ(config->MaxPriority("bob"), 80);
  EXPECT_DOUBLE_EQ(config->audit_retention_s, 30 * 86400.0);
  EXPECT_TRUE(config->IsAdmin("carol", 1000, {}));
  EXPECT_TRUE(config->IsAdmin("dave", 1001, {"users", "wheel"}));
  EXPECT_FALSE(config->IsAdmin("dave", 1001, {"users"}));
  EXPECT_TRUE(config->IsAdmin("anyone", 0, {}));     // uid 0
  EXPECT_FALSE(config->IsAdmin("wheel", 1002, {}));  // @wheel is a group
  absl::StatusOr<ClusterConfig> bad =
      ParseClusterConfig("c.yaml", "admins: [\"@\", ok]\nmax_priority: 101\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("c.yaml:1:10: admins[0]"));
  EXPECT_THAT(bad.status().message(), HasSubstr("c.yaml:2:15: max_priority"));
}

TEST(ClusterConfigTest, ACyclicAliasIsRefusedNotFollowed) {
  // A SIGHUP reload of this once overflowed the coordinator's stack.
  absl::StatusOr<ClusterConfig> config =
      ParseClusterConfig("c.yaml", "users: &u {alice: *u}\n");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            "c.yaml:1:8: an alias makes this node contain itself");
  absl::StatusOr<BenchmarkRegistry> benchmarks =
      ParseBenchmarks("b.yaml", "benchmarks: &b [*b]\n");
  ASSERT_FALSE(benchmarks.ok());
  EXPECT_EQ(benchmarks.status().message(),
            "b.yaml:1:13: an alias makes this node contain itself");
}

TEST(ClusterConfigTest, ReportsEveryErrorAtOnce) {
  absl::StatusOr<ClusterConfig> config =
      ParseClusterConfig("c.yaml",
                         "preemption: maybe\n"
                         "fair_share_half_life: 7 weeks\n"
                         "groups:\n"
                         "  vision: {shares: -1, max_gpus: 2.5}\n"
                         "users:\n"
                         "  alice: {group: visoin, quota: 3}\n");
  ASSERT_FALSE(config.ok());
  const std::string message(config.status().message());
  EXPECT_THAT(message,
              HasSubstr("c.yaml:1:13: preemption: expected true or false, "
                        "got 'maybe'"));
  EXPECT_THAT(message, HasSubstr("c.yaml:2:23: fair_share_half_life: expected "
                                 "a duration such as 7d"));
  EXPECT_THAT(message, HasSubstr("c.yaml:4:20: groups.vision.shares: must be "
                                 "from 0 to 1e+06, got -1"));
  EXPECT_THAT(message, HasSubstr("c.yaml:4:34: groups.vision.max_gpus: "
                                 "expected an integer, got '2.5'"));
  EXPECT_THAT(message, HasSubstr("c.yaml:6:18: users.alice.group: unknown "
                                 "group 'visoin' (did you mean 'vision'?)"));
  EXPECT_THAT(message, HasSubstr("c.yaml:6:26: users.alice.quota: unknown "
                                 "key"));
}

TEST(ClusterConfigTest, InvalidYamlIsPositioned) {
  absl::StatusOr<ClusterConfig> config =
      ParseClusterConfig("c.yaml", "users: {alice: [\n");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("c.yaml:"));
  EXPECT_THAT(config.status().message(), HasSubstr("invalid YAML"));
}

TEST(ClusterConfigTest, DurationsTakeUnits) {
  EXPECT_DOUBLE_EQ(*ParseDurationSeconds("7d"), 7 * 86400);
  EXPECT_DOUBLE_EQ(*ParseDurationSeconds("12h"), 12 * 3600);
  EXPECT_DOUBLE_EQ(*ParseDurationSeconds("30m"), 1800);
  EXPECT_DOUBLE_EQ(*ParseDurationSeconds("45s"), 45);
  EXPECT_DOUBLE_EQ(*ParseDurationSeconds("3600"), 3600);
  EXPECT_DOUBLE_EQ(*ParseDurationSeconds("1.5h"), 5400);
  EXPECT_FALSE(ParseDurationSeconds("h").ok());
  EXPECT_FALSE(ParseDurationSeconds("-1d").ok());
  EXPECT_FALSE(ParseDurationSeconds("7w").ok());
}

TEST(ClusterConfigTest, MissingFileIsNotFound) {
  absl::StatusOr<ClusterConfig> config =
      LoadClusterConfigFile("/nonexistent/cluster.yaml");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace dcvlr
