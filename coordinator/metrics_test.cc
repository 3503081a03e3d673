// The exporter over a real Core on a fake clock: what a scrape shows while a
// job runs, and that nothing of it is left once the job ends.
#include "coordinator/metrics.h"

#include <cstdlib>
#include <filesystem>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/text_serializer.h"

namespace dcvlr {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class NullChannel : public AgentChannel {
 public:
  void Send(const v1::CoordinatorMessage& message) override {
    if (message.has_ack()) ack = message.ack();
  }
  void Close() override {}
  v1::RegisterAck ack;
};

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dcvlr-metrics-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    logs_ = std::make_unique<LogStore>(dir_ + "/logs");
    history_ = std::make_unique<MetricHistory>(MetricHistoryOptions(), nullptr);
    exporter_ = std::make_shared<CoordinatorMetrics>(history_.get(), 2);
    CoreOptions options;
    options.now_ms = [this] { return now_ms_; };
    options.metric_history = history_.get();
    options.observer = exporter_.get();
    options.steady_ns = [this] { return now_ms_ * 1'000'000; };
    auto store = Store::Open(dir_ + "/state.db");
    ASSERT_TRUE(store.ok());
    core_ = std::make_unique<Core>(options, *std::move(store), logs_.get(),
                                   std::make_unique<FirstFitPolicy>());
    ASSERT_TRUE(core_->Recover().ok());
    exporter_->SetCore(core_.get());
    v1::RegisterRequest request;
    request.set_name("n1");
    request.set_metrics_address("0.0.0.0:9400");
    for (int i = 0; i < 2; ++i) request.add_gpus()->set_index(i);
    session_ = *core_->RegisterAgent(request, "10.0.0.5", channel_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Scrape() {
    return prometheus::TextSerializer().Serialize(exporter_->Collect());
  }

  // Submits a one-GPU job and reports it running.
  std::string Run(const std::string& name) {
    auto job = core_->Submit("alice", "job.yaml",
                             "name: " + name +
                                 "\nkind: command\ncommand: [\"true\"]\n"
                                 "resources: {gpus_per_node: 1}\n",
                             false);
    EXPECT_TRUE(job.ok()) << job.status();
    now_ms_ += 3000;
    core_->Tick();
    Update(job->id(), v1::AttemptUpdate::PHASE_STARTED);
    return job->id();
  }

  void Update(const std::string& id, v1::AttemptUpdate::Phase phase) {
    v1::AttemptUpdate update;
    update.set_job_id(id);
    update.set_attempt(1);
    update.set_phase(phase);
    update.set_master_port(phase == v1::AttemptUpdate::PHASE_STARTED ? 1234
                                                                     : 0);
    core_->OnAttemptUpdate("n1", session_, update);
  }

  void Relay(const std::string& id, std::vector<std::string> names,
             std::vector<double> values, int64_t step) {
    v1::MetricBatch batch;
    batch.set_job_id(id);
    batch.set_attempt(1);
    // Each attempt's metrics file is read from its own start.
    int64_t& offset = offsets_[id];
    batch.set_start_offset(offset);
    batch.set_end_offset(++offset);
    v1::MetricPoint* point = batch.add_points();
    point->set_step(step);
    for (size_t i = 0; i < names.size(); ++i) {
      batch.add_names(names[i]);
      point->add_keys(static_cast<uint32_t>(i));
      point->add_values(values[i]);
    }
    ASSERT_TRUE(history_->Ingest(batch).ok());
  }

  std::string dir_;
  int64_t now_ms_ = 1'000'000;
  std::map<std::string, int64_t> offsets_;  // by job: where its file is read to
  int64_t session_ = 0;
  std::shared_ptr<NullChannel> channel_ = std::make_shared<NullChannel>();
  std::unique_ptr<LogStore> logs_;
  std::unique_ptr<MetricHistory> history_;
  std::shared_ptr<CoordinatorMetrics> exporter_;
  std::unique_ptr<Core> core_;
};

TEST_F(MetricsTest, RunningJobHasTrainingGaugesUntilItEnds) {
  const std::string id = Run("tiny");
  Relay(id, {"loss", "lr", "tokens_per_s"}, {2.5, 0.001, 5000}, 7);
  std::string text = Scrape();
  EXPECT_THAT(text, HasSubstr("dcvlr_job_loss{job_id=\"" + id +
                              "\",job_name=\"tiny\",user=\"alice\"} 2.5"));
  EXPECT_THAT(text, HasSubstr("dcvlr_job_step{job_id=\"" + id +
                              "\",job_name=\"tiny\",user=\"alice\"} 7"));
  EXPECT_THAT(text, HasSubstr("dcvlr_job_tokens_per_second{"));
  EXPECT_THAT(text, HasSubstr("dcvlr_node_gpus_allocated{node=\"n1\"} 1"));
  EXPECT_THAT(text, HasSubstr("dcvlr_gpu_allocated{gpu=\"0\",job_id=\"" + id +
                              "\",node=\"n1\"} 1"));
  EXPECT_THAT(text, HasSubstr("dcvlr_jobs{state=\"running\"} 1"));
  // Submitted, then 3 s until the tick placed it and it started.
  EXPECT_THAT(text, HasSubstr("dcvlr_job_submit_to_running_seconds_count 1"));
  EXPECT_THAT(text, HasSubstr("dcvlr_job_submit_to_running_seconds_sum 3"));

  Update(id, v1::AttemptUpdate::PHASE_EXITED);
  text = Scrape();
  EXPECT_THAT(text, Not(HasSubstr(id)));
  EXPECT_THAT(text, HasSubstr("dcvlr_jobs{state=\"succeeded\"} 1"));
  EXPECT_THAT(text, HasSubstr("dcvlr_node_gpus_free{node=\"n1\"} 2"));
}

TEST_F(MetricsTest, EvalScoresStayForTheMostRecentEndedJobs) {
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(Run("eval-" + std::to_string(i)));
    Relay(ids.back(),
          {"eval_accuracy", "eval_accuracy/mathvista", "eval_hits/mathvista",
           "eval_total/mathvista", "loss"},
          {0.5, 0.25 + i, 25, 100, 1.0}, -1);
    Update(ids.back(), v1::AttemptUpdate::PHASE_EXITED);
  }
  const std::string text = Scrape();
  // The exporter keeps 2: the oldest is gone, and no training gauges stay.
  EXPECT_THAT(text, Not(HasSubstr("job_id=\"" + ids[0] + "\"")));
  EXPECT_THAT(
      text, HasSubstr("dcvlr_eval_accuracy{benchmark=\"mathvista\","
                      "job_id=\"" +
                      ids[2] + "\",job_name=\"eval-2\",user=\"alice\"} 2.25"));
  EXPECT_THAT(text, HasSubstr("dcvlr_eval_accuracy{job_id=\"" + ids[1] +
                              "\",job_name=\"eval-1\",user=\"alice\"} 0.5"));
  EXPECT_THAT(text, HasSubstr("dcvlr_eval_total{benchmark=\"mathvista\""));
  EXPECT_THAT(text, Not(HasSubstr("dcvlr_job_loss{")));
}

TEST_F(MetricsTest, TargetsNameTheCoordinatorAndEachAgent) {
  auto targets = nlohmann::json::parse(
      PrometheusTargets(core_->Snapshot(), "127.0.0.1:9300"));
  ASSERT_EQ(targets.size(), 2u);
  EXPECT_EQ(targets[0]["targets"][0], "127.0.0.1:9300");
  EXPECT_EQ(targets[0]["labels"]["dcvlr_role"], "coordinator");
  // The agent's wildcard host is the node's address.
  EXPECT_EQ(targets[1]["targets"][0], "10.0.0.5:9400");
  EXPECT_EQ(targets[1]["labels"]["dcvlr_node"], "n1");
}

TEST_F(MetricsTest, RegistrationAckCarriesMetricsOffsets) {
  const std::string id = Run("resend");
  Relay(id, {"loss"}, {1}, 1);
  Relay(id, {"loss"}, {1}, 2);
  v1::RegisterRequest request;
  request.set_name("n1");
  request.add_gpus()->set_index(0);
  request.add_gpus()->set_index(1);
  v1::RunningAttempt* running = request.add_running();
  running->set_job_id(id);
  running->set_attempt(1);
  auto channel = std::make_shared<NullChannel>();
  // The agent reconnects: its old stream is gone.
  core_->OnAgentDisconnected("n1", session_);
  ASSERT_TRUE(core_->RegisterAgent(request, "10.0.0.5", channel).ok());
  ASSERT_EQ(channel->ack.metrics_offsets_size(), 1);
  EXPECT_EQ(channel->ack.metrics_offsets(0).offset(), 2);
}

}  // namespace
}  // namespace dcvlr
