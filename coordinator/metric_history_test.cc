#include "coordinator/metric_history.h"

#include <unistd.h>

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcvlr {
namespace {

v1::MetricBatch Batch(const std::string& job, int attempt, int64_t start,
                      int64_t end, int64_t first_step, int count) {
  v1::MetricBatch batch;
  batch.set_job_id(job);
  batch.set_attempt(attempt);
  batch.set_start_offset(start);
  batch.set_end_offset(end);
  batch.add_names("loss");
  batch.add_names("lr");
  for (int i = 0; i < count; ++i) {
    v1::MetricPoint* p = batch.add_points();
    p->set_step(first_step + i);
    p->set_time_ms(1000 + first_step + i);
    p->add_keys(0);
    p->add_values(static_cast<double>(first_step + i));
    p->add_keys(1);
    p->add_values(0.5);
  }
  return batch;
}

TEST(SeriesHistoryTest, HalvesResolutionWhenFullAndKeepsTheNewest) {
  SeriesHistory series(8);
  for (int step = 0; step < 100; ++step) series.Add(step, step, step * 2.0);
  v1::MetricSeries out;
  series.ToProto("loss", false, &out);
  EXPECT_EQ(out.seen(), 100);
  EXPECT_LE(out.steps_size(), 9);
  EXPECT_GE(out.steps_size(), 4);
  // Evenly spaced by the stride, from the first arrival on.
  for (int i = 0; i + 1 < out.steps_size() - 1; ++i) {
    EXPECT_EQ(out.steps(i), i * out.stride()) << i;
  }
  EXPECT_EQ(out.steps(out.steps_size() - 1), 99);
  EXPECT_EQ(out.values(out.values_size() - 1), 198.0);

  SeriesHistory back = SeriesHistory::FromProto(out, 8);
  v1::MetricSeries again;
  back.ToProto("loss", false, &again);
  EXPECT_EQ(again.SerializeAsString(), out.SerializeAsString());
}

class MetricHistoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/metric-history-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<Store> OpenStore() {
    auto store = Store::Open(dir_ + "/state.db", false);
    EXPECT_TRUE(store.ok()) << store.status();
    return *std::move(store);
  }
  std::string dir_;
};

TEST_F(MetricHistoryTest, RefusesABatchThatWouldLeaveAGap) {
  MetricHistory history({}, nullptr);
  EXPECT_EQ(*history.Ingest(Batch("j-1", 1, 0, 100, 0, 10)), 10);
  EXPECT_EQ(history.Ingest(Batch("j-1", 1, 200, 250, 10, 5)).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(history.Ingest(Batch("j-2", 1, 50, 60, 0, 1)).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(history.Offset("j-1", 1), 100);
  EXPECT_EQ(history.points_ingested(), 10);
  // The next batch in order still fits.
  EXPECT_EQ(*history.Ingest(Batch("j-1", 1, 100, 150, 10, 5)), 5);
}

TEST_F(MetricHistoryTest, DropsResentBatchesByOffset) {
  MetricHistory history({}, nullptr);
  EXPECT_EQ(*history.Ingest(Batch("j-1", 1, 0, 100, 0, 10)), 10);
  EXPECT_EQ(history.Offset("j-1", 1), 100);
  EXPECT_EQ(*history.Ingest(Batch("j-1", 1, 0, 100, 0, 10)), 0);
  EXPECT_EQ(*history.Ingest(Batch("j-1", 1, 100, 150, 10, 5)), 5);
  auto got = history.Get("j-1", {"loss"}, false);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->series_size(), 1);
  EXPECT_EQ(got->series(0).steps_size(), 15);
  EXPECT_EQ(history.points_ingested(), 15);
  auto latest = history.Latest({"j-1", "j-2"});
  ASSERT_EQ(latest.size(), 1u);
  EXPECT_EQ(latest["j-1"]["loss"], 14.0);
  EXPECT_EQ(latest["j-1"]["step"], 14.0);
  EXPECT_EQ(history.Get("j-2", {}, false).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(MetricHistoryTest, BoundsKeysPerJob) {
  MetricHistoryOptions options;
  options.max_keys_per_job = 3;
  MetricHistory history(options, nullptr);
  v1::MetricBatch batch;
  batch.set_job_id("j-1");
  batch.set_attempt(1);
  batch.set_end_offset(10);
  v1::MetricPoint* p = batch.add_points();
  for (int i = 0; i < 10; ++i) {
    batch.add_names("key" + std::to_string(i));
    p->add_keys(i);
    p->add_values(i);
  }
  ASSERT_TRUE(history.Ingest(batch).ok());
  EXPECT_EQ(history.Get("j-1", {}, true)->series_size(), 3);
}

TEST_F(MetricHistoryTest, SurvivesARestartThroughTheStore) {
  {
    MetricHistory history({}, OpenStore());
    ASSERT_TRUE(history.Recover().ok());
    ASSERT_TRUE(history.Ingest(Batch("j-7", 2, 0, 400, 0, 40)).ok());
    ASSERT_TRUE(history.Flush().ok());
  }
  MetricHistory history({}, OpenStore());
  ASSERT_TRUE(history.Recover().ok());
  EXPECT_EQ(history.Offset("j-7", 2), 400);
  // A resend from before the restart is recognised...
  EXPECT_EQ(*history.Ingest(Batch("j-7", 2, 0, 400, 0, 40)), 0);
  // ...and new points add to the stored history instead of replacing it.
  EXPECT_EQ(*history.Ingest(Batch("j-7", 2, 400, 410, 40, 1)), 1);
  ASSERT_TRUE(history.Flush().ok());
  auto got = history.Get("j-7", {"loss"}, false);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->series(0).steps_size(), 41);
  EXPECT_EQ(got->series(0).values(40), 40.0);
}

TEST_F(MetricHistoryTest, EndedJobsLeaveMemoryButNotTheStore) {
  MetricHistoryOptions options;
  options.ended_jobs_in_memory = 2;
  MetricHistory history(options, OpenStore());
  for (int i = 1; i <= 5; ++i) {
    const std::string id = "j-" + std::to_string(i);
    ASSERT_TRUE(history.Ingest(Batch(id, 1, 0, 10, 0, 3)).ok());
    history.JobEnded(id);
  }
  ASSERT_TRUE(history.Flush().ok());
  // Only the two most recent stay in memory (what a scrape sees)...
  EXPECT_EQ(history.Latest({"j-1", "j-2", "j-3", "j-4", "j-5"}).size(), 2u);
  // ...and the others are read back from the store when asked for.
  auto got = history.Get("j-1", {}, false);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->series_size(), 2);
}

}  // namespace
}  // namespace dcvlr
