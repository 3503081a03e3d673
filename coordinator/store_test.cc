#include "coordinator/store.h"

#include <cstdlib>
#include <filesystem>

#include "gtest/gtest.h"

namespace dcvlr {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dcvlr-store-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path() const { return dir_ + "/state.db"; }
  std::string dir_;
};

TEST_F(StoreTest, JobsAndNodesSurviveReopen) {
  {
    auto store = Store::Open(Path());
    ASSERT_TRUE(store.ok()) << store.status();
    for (int i = 1; i <= 3; ++i) {
      v1::Job job;
      job.set_id("j-" + std::to_string(i));
      job.set_state(v1::JOB_STATE_PENDING);
      ASSERT_TRUE((*store)->PutJob(job).ok());
    }
    v1::Job updated;
    updated.set_id("j-2");
    updated.set_state(v1::JOB_STATE_SUCCEEDED);
    ASSERT_TRUE((*store)->PutJob(updated).ok());
    v1::Node node;
    node.set_name("n1");
    node.add_gpus()->set_index(0);
    ASSERT_TRUE((*store)->PutNode(node).ok());
  }
  auto store = Store::Open(Path());
  ASSERT_TRUE(store.ok());
  auto jobs = (*store)->LoadJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 3u);
  EXPECT_EQ((*jobs)[0].id(), "j-1");
  EXPECT_EQ((*jobs)[1].state(), v1::JOB_STATE_SUCCEEDED);
  auto nodes = (*store)->LoadNodes();
  ASSERT_TRUE(nodes.ok());
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_EQ((*nodes)[0].gpus_size(), 1);
}

TEST_F(StoreTest, UsageSurvivesReopenAndIsReplacedAsAWhole) {
  {
    auto store = Store::Open(Path());
    ASSERT_TRUE(store.ok()) << store.status();
    auto empty = (*store)->LoadUsage();
    ASSERT_TRUE(empty.ok()) << empty.status();
    EXPECT_TRUE(empty->user_gpu_s.empty());
    EXPECT_EQ(empty->as_of_ms, 0);
    Usage first;
    first.user_gpu_s = {{"alice", 1.5}, {"bob", 2.0}};
    first.as_of_ms = 1000;
    ASSERT_TRUE((*store)->PutUsage(first).ok());
    Usage second;
    second.user_gpu_s = {{"alice", 3600.25}, {"carol", 0.5}};
    second.as_of_ms = 2000;
    ASSERT_TRUE((*store)->PutUsage(second).ok());
  }
  auto store = Store::Open(Path());
  ASSERT_TRUE(store.ok());
  auto usage = (*store)->LoadUsage();
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->as_of_ms, 2000);
  ASSERT_EQ(usage->user_gpu_s.size(), 2u);  // bob's row went with the first
  EXPECT_DOUBLE_EQ(usage->user_gpu_s.at("alice"), 3600.25);
  EXPECT_DOUBLE_EQ(usage->user_gpu_s.at("carol"), 0.5);
}

TEST_F(StoreTest, TheAuditTrailIsReadNewestFirstSinceATimeAndPruned) {
  auto store = Store::Open(Path());
  ASSERT_TRUE(store.ok()) << store.status();
  StoreBatch batch;
  for (int i = 1; i <= 4; ++i) {
    v1::AuditRecord record;
    record.set_time_ms(i * 1000);
    record.set_principal("user" + std::to_string(i));
    record.set_action("submit");
    batch.audit.push_back(record);
  }
  ASSERT_TRUE((*store)->Write(batch).ok());
  auto all = (*store)->LoadAudit(0, 10);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 4u);
  EXPECT_EQ((*all)[0].principal(), "user4");
  EXPECT_EQ((*all)[3].principal(), "user1");
  auto recent = (*store)->LoadAudit(3000, 10);
  ASSERT_EQ(recent->size(), 2u);
  EXPECT_EQ((*store)->LoadAudit(0, 1)->size(), 1u);

  StoreBatch prune;
  prune.prune_audit_before_ms = 2500;
  ASSERT_FALSE(prune.empty());
  ASSERT_TRUE((*store)->Write(prune).ok());
  auto kept = (*store)->LoadAudit(0, 10);
  ASSERT_EQ(kept->size(), 2u);
  EXPECT_EQ(kept->back().principal(), "user3");
}

TEST_F(StoreTest, RejectsIdsItCannotOrder) {
  auto store = Store::Open(Path());
  ASSERT_TRUE(store.ok());
  v1::Job job;
  job.set_id("../etc");
  EXPECT_FALSE((*store)->PutJob(job).ok());
}

TEST_F(StoreTest, OpenFailsClearlyOnABadPath) {
  auto store = Store::Open(dir_ + "/missing/dir/state.db");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("missing/dir/state.db"),
            std::string::npos);
}

TEST(JobSeqTest, ParsesOnlyJobIds) {
  EXPECT_EQ(JobSeq("j-42"), 42);
  EXPECT_EQ(JobSeq("j-"), -1);
  EXPECT_EQ(JobSeq("x-1"), -1);
  EXPECT_EQ(JobSeq("j-1/../2"), -1);
}

}  // namespace
}  // namespace dcvlr
