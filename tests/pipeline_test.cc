// The DCVLR loop through the whole system: one file submits a train job and
// an eval job; the eval waits for the training, reads its final checkpoint
// from the shared checkpoint root, decodes the held-out benchmark with
// dcvlr-eval and scores it. And what goes wrong on the way: a training that
// fails cancels its eval; a broken benchmark fails the eval with the
// benchmark's own error as the reason.
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cluster.h"

namespace dcvlr::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kTrain[] = R"(name: tiny
kind: train
resources: {nodes: 1, gpus_per_node: 2}
retry: {max_attempts: 1}
model: {model_name: tiny-vlm}
data:
  train:
    datasets:
      - dataset_name: synthetic_shapes
        dataset_kwargs: {split: train, num_samples: 64, seed: 3}
training:
  learning_rate: 1e-3
  max_steps: 4
  per_device_train_batch_size: 4
  logging_steps: 1
  save_steps: 2
  seed: 1
)";

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* program : {"dcvlr-train", "dcvlr-eval"}) {
      if (!fs::exists(BinDir() + "/" + program)) {
        GTEST_SKIP() << program << " is not built (DCVLR_WORKER=OFF)";
      }
    }
    const std::string benchmarks =
        cluster_.WriteFile("benchmarks.yaml",
                           "benchmarks:\n"
                           "  small_shapes: {synthetic: {split: test, "
                           "num_samples: 12, seed: 5}}\n");
    cluster_.StartCoordinator({"--checkpoint-root",
                               cluster_.dir() + "/shared-checkpoints",
                               "--benchmarks", benchmarks});
    cluster_.StartAgent("n1", 2);
    ASSERT_TRUE(cluster_.AwaitReadyNodes(1));
  }

  // The synthetic held-out split as a VLMEvalKit TSV.
  std::string WriteBenchmark(int rows) {
    const std::string tsv = cluster_.dir() + "/shapes.tsv";
    testing::Process gen({BinDir() + "/dcvlr-train", "gen-synthetic", "--out",
                          cluster_.dir() + "/shapes", "--train", "1", "--test",
                          std::to_string(rows), "--seed", "3", "--tsv", tsv},
                         cluster_.dir() + "/gen.log");
    const int status = gen.Wait();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << ReadAll(cluster_.dir() + "/gen.log");
    return tsv;
  }

  // The eval's output dir on the node that ran it.
  fs::path OutputDir(const std::string& id) {
    return fs::path(cluster_.dir()) / "work-n1" / "jobs" / id / "output";
  }

  Cluster cluster_;
};

TEST_F(PipelineTest, TrainThenEvalScoresTheFinalCheckpoint) {
  const std::string tsv = WriteBenchmark(24);
  const std::string file = cluster_.WriteFile(
      "pipeline.yaml", std::string(kTrain) +
                           "---\n"
                           "name: tiny-eval\n"
                           "kind: eval\n"
                           "resources: {nodes: 1, gpus_per_node: 2}\n"
                           "retry: {max_attempts: 1}\n"
                           "model: {from: tiny}\n"
                           "benchmarks: [{name: shapes, path: " +
                           tsv +
                           "}, small_shapes]\n"
                           "eval: {batch_size: 8, max_new_tokens: 4}\n");
  CommandResult submit = cluster_.Ctl({"submit", file, "-o", "json"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  const nlohmann::json ids = nlohmann::json::parse(submit.out)["jobs"];
  ASSERT_EQ(ids.size(), 2u) << submit.out;
  const std::string train = ids[0]["id"], eval = ids[1]["id"];

  v1::Job eval_job = cluster_.AwaitEnd(eval, std::chrono::seconds(400));
  v1::Job train_job = cluster_.GetJob(train);
  ASSERT_EQ(train_job.state(), v1::JOB_STATE_SUCCEEDED)
      << train_job.reason() << cluster_.Ctl({"logs", train}).out;
  ASSERT_EQ(eval_job.state(), v1::JOB_STATE_SUCCEEDED)
      << eval_job.reason() << cluster_.Ctl({"logs", eval}).out;
  // The eval started only after the training had ended.
  ASSERT_GT(eval_job.attempts_size(), 0);
  EXPECT_GE(eval_job.attempts(0).started_ms(), train_job.end_time_ms());

  // Its summary is the DCVLR scorer's shape, over every item of the TSV...
  const nlohmann::json summary = nlohmann::json::parse(
      ReadAll(OutputDir(eval) / "dcvlr_scoring_summary.json"));
  const nlohmann::json& shapes = summary["benchmark_results"]["shapes"];
  EXPECT_EQ(shapes["total_samples"], 24);
  EXPECT_EQ(summary["overall_statistics"]["overall_accuracy"],
            shapes["accuracy"]);
  // ...and scoring its predictions again on their own gives the same hits.
  CommandResult rescore;
  {
    const std::string out = cluster_.dir() + "/rescore.json";
    testing::Process score(
        {BinDir() + "/dcvlr-eval", "score", "--predictions",
         (OutputDir(eval) / "shapes_predictions.tsv").string(), "--name",
         "shapes", "--output", out},
        cluster_.dir() + "/rescore.log");
    ASSERT_EQ(score.Wait(), 0) << ReadAll(cluster_.dir() + "/rescore.log");
    EXPECT_EQ(nlohmann::json::parse(
                  ReadAll(out))["benchmark_results"]["shapes"]["hits"],
              shapes["hits"]);
  }
  // A benchmark named in the coordinator's list is generated by dcvlr-eval
  // and kept beside the predictions as the TSV it read.
  EXPECT_EQ(summary["benchmark_results"]["small_shapes"]["total_samples"], 12);
  const std::string generated =
      ReadAll(OutputDir(eval) / "small_shapes_benchmark.tsv");
  EXPECT_EQ(generated.rfind("index\t", 0), 0u) << generated.substr(0, 80);
  // The scores are the job's metrics, and describe shows them.
  CommandResult describe = cluster_.Ctl({"describe", eval, "-o", "json"});
  ASSERT_EQ(describe.exit_code, 0) << describe.err;
  const nlohmann::json scores = nlohmann::json::parse(describe.out)["scores"];
  EXPECT_EQ(scores["benchmarks"]["shapes"]["hits"], shapes["hits"]);
  EXPECT_EQ(scores["benchmarks"]["shapes"]["total"], 24);
  EXPECT_EQ(scores["benchmarks"]["small_shapes"]["total"], 12);
  EXPECT_DOUBLE_EQ(
      scores["overall_accuracy"].get<double>(),
      summary["overall_statistics"]["overall_accuracy"].get<double>());
  EXPECT_THAT(cluster_.Ctl({"describe", eval}).out,
              ::testing::ContainsRegex("small_shapes +12 +[0-9]+ +[0-9.]+"));
  // The eval's log ends with the accuracy.
  EXPECT_THAT(cluster_.Ctl({"logs", eval, "--rank", "0"}).out,
              HasSubstr("done benchmarks=2 samples=36 accuracy="));
}

TEST_F(PipelineTest, FailedTrainingCancelsItsEval) {
  // A dataset the trainer rejects at start: exit 2, a user failure.
  std::string bad_train = kTrain;
  bad_train.replace(bad_train.find("num_samples: 64"), 15, "num_samples: -5");
  const std::string file = cluster_.WriteFile(
      "pipeline.yaml", bad_train +
                           "---\nname: tiny-eval\nkind: eval\n"
                           "model: {from: tiny}\n"
                           "benchmarks: [/nonexistent/x.tsv]\n");
  CommandResult submit = cluster_.Ctl({"submit", file, "-o", "json"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  const nlohmann::json ids = nlohmann::json::parse(submit.out)["jobs"];
  const std::string train = ids[0]["id"], eval = ids[1]["id"];
  v1::Job eval_job = cluster_.AwaitEnd(eval, std::chrono::seconds(120));
  EXPECT_EQ(cluster_.GetJob(train).state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(eval_job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_THAT(eval_job.reason(),
              HasSubstr("dependency " + train + " ended FAILED"));
  EXPECT_EQ(eval_job.attempts_size(), 0);  // it never ran
}

TEST_F(PipelineTest, BrokenBenchmarkFailsTheEvalWithItsError) {
  const std::string good = WriteBenchmark(4);
  // Drop the answer column's header: the TSV is unusable.
  std::string text = ReadAll(good);
  const size_t header_end = text.find('\n');
  std::string header = text.substr(0, header_end);
  header.replace(header.find("answer"), 6, "solution");
  const std::string broken =
      cluster_.WriteFile("broken.tsv", header + text.substr(header_end));
  const std::string file = cluster_.WriteFile(
      "pipeline.yaml", std::string(kTrain) +
                           "---\nname: tiny-eval\nkind: eval\n"
                           "resources: {nodes: 1, gpus_per_node: 1}\n"
                           "model: {from: tiny}\n"
                           "benchmarks: [" +
                           broken + "]\n");
  CommandResult submit = cluster_.Ctl({"submit", file, "-o", "json"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  const std::string eval = nlohmann::json::parse(submit.out)["jobs"][1]["id"];
  v1::Job job = cluster_.AwaitEnd(eval, std::chrono::seconds(400));
  ASSERT_EQ(job.state(), v1::JOB_STATE_FAILED) << job.reason();
  // The reason names the file and the missing column; nothing was retried.
  EXPECT_THAT(job.reason(), HasSubstr("broken.tsv"));
  EXPECT_THAT(job.reason(), HasSubstr("answer"));
  EXPECT_EQ(job.attempts_size(), 1);
  CommandResult describe = cluster_.Ctl({"describe", eval});
  EXPECT_THAT(describe.out, HasSubstr("broken.tsv"));
}

TEST_F(PipelineTest, UnknownBenchmarkIsRejectedAtSubmit) {
  const std::string file = cluster_.WriteFile(
      "eval.yaml",
      "kind: eval\nmodel: /x/ckpt\nbenchmarks: [synthetic_shapes, mmmu]\n");
  CommandResult submit = cluster_.Ctl({"submit", file});
  EXPECT_EQ(submit.exit_code, 2);
  EXPECT_THAT(submit.err,
              HasSubstr("eval.yaml:3:32: benchmarks[1]: unknown benchmark "
                        "'mmmu'"));
  EXPECT_EQ(cluster_.Ctl({"list"}).out.find("eval"), std::string::npos);
}

}  // namespace
}  // namespace dcvlr::testing
