// dcvlr-eval as real processes: dcvlr-train makes a small checkpoint once,
// then dcvlr-eval runs on a synthetic TSV as one rank and as two ranks
// (torchrun's environment, Gloo on loopback), and `dcvlr-eval score`
// re-scores what it wrote.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "worker/eval/tsv.h"
#include "worker/trainer/test_util.h"

namespace dcvlr::eval {
namespace {

namespace fs = std::filesystem;
using ::dcvlr::trainer::testing::FreePort;
using ::dcvlr::trainer::testing::ReadAll;
using nlohmann::json;

constexpr int kRows = 24;

// Starts `bin` with `env` added to ours; stdout and stderr go to `log`.
// With `sigterm_pending`, the program starts with a SIGTERM already sent
// (blocked across exec until it installs its handler and unblocks it).
pid_t Spawn(const std::string& bin, const std::vector<std::string>& args,
            const std::map<std::string, std::string>& env, const fs::path& log,
            bool sigterm_pending = false) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (sigterm_pending) {
      sigset_t term;
      sigemptyset(&term);
      sigaddset(&term, SIGTERM);
      sigprocmask(SIG_BLOCK, &term, nullptr);
      ::kill(::getpid(), SIGTERM);
    }
    for (const char* k :
         {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
          "DCVLR_OUTPUT_DIR", "DCVLR_METRICS_FILE"})
      ::unsetenv(k);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    FILE* f = std::fopen(log.c_str(), "w");
    ::dup2(fileno(f), 2);
    ::dup2(fileno(f), 1);
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    std::string b = bin;
    argv.push_back(b.data());
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(b.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string LastLine(const std::string& text) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

class EvalProcessTest : public ::testing::Test {
 protected:
  // One small training run serves every test: 4 steps of tiny-vlm.
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() /
            ("dcvlr_eval_process." + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    json c = {
        {"model", {{"model_name", "tiny-vlm"}}},
        {"data",
         {{"train",
           {{"datasets",
             {{{"dataset_name", "synthetic_shapes"},
               {"dataset_kwargs",
                {{"split", "train"}, {"num_samples", 64}, {"seed", 3}}}}}}}}}},
        {"training",
         {{"learning_rate", "1e-3"},
          {"max_steps", 4},
          {"per_device_train_batch_size", 8},
          {"logging_steps", 2},
          {"seed", 5},
          {"output_dir", (root_ / "train").string()}}}};
    std::ofstream(root_ / "train.json") << c.dump(2);
    train_code_ = WaitExit(
        Spawn(DCVLR_TRAIN_BIN, {"--config", (root_ / "train.json").string()},
              {{"DCVLR_CHECKPOINT_DIR", (root_ / "ckpt").string()}},
              root_ / "train.log"));
    gen_code_ = WaitExit(
        Spawn(DCVLR_TRAIN_BIN,
              {"gen-synthetic", "--tsv", (root_ / "synthetic.tsv").string(),
               "--test", std::to_string(kRows), "--seed", "9"},
              {}, root_ / "gen.log"));
  }
  static void TearDownTestSuite() {
    if (!::testing::UnitTest::GetInstance()->Failed()) fs::remove_all(root_);
  }

  void SetUp() override {
    ASSERT_EQ(train_code_, 0) << ReadAll(root_ / "train.log");
    ASSERT_EQ(gen_code_, 0) << ReadAll(root_ / "gen.log");
  }

  // An eval config whose outputs go to root_/name.
  fs::path WriteEvalConfig(const std::string& name, const std::string& ckpt,
                           const std::string& tsv) {
    json c = {{"model", {{"checkpoint", ckpt}}},
              {"benchmarks", {{{"name", "synthetic_shapes"}, {"path", tsv}}}},
              {"output_dir", (root_ / name / "out").string()},
              {"batch_size", 5},
              {"max_new_tokens", 8},
              {"seed", 0}};
    fs::create_directories(root_ / name);
    fs::path p = root_ / name / "eval.json";
    std::ofstream(p) << c.dump(2);
    return p;
  }

  // Runs dcvlr-eval as `world` ranks; returns each rank's exit code.
  std::vector<int> RunEval(const std::string& name, int world,
                           const fs::path& config,
                           bool sigterm_pending = false) {
    std::string port = std::to_string(FreePort());
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      std::map<std::string, std::string> env = {
          {"DCVLR_METRICS_FILE", (root_ / name / "metrics.jsonl").string()}};
      if (world > 1) {
        env["RANK"] = env["LOCAL_RANK"] = std::to_string(r);
        env["WORLD_SIZE"] = env["LOCAL_WORLD_SIZE"] = std::to_string(world);
        env["MASTER_ADDR"] = "127.0.0.1";
        env["MASTER_PORT"] = port;
      }
      pids.push_back(Spawn(DCVLR_EVAL_BIN, {"--config", config.string()}, env,
                           Log(name, r), sigterm_pending));
    }
    std::vector<int> codes;
    for (pid_t p : pids) codes.push_back(WaitExit(p));
    return codes;
  }

  fs::path Log(const std::string& name, int rank) {
    return root_ / name / ("rank" + std::to_string(rank) + ".log");
  }
  std::string Tsv() { return (root_ / "synthetic.tsv").string(); }
  std::string Ckpt() { return (root_ / "ckpt").string(); }

  static fs::path root_;
  static int train_code_, gen_code_;
};

fs::path EvalProcessTest::root_;
int EvalProcessTest::train_code_ = -1;
int EvalProcessTest::gen_code_ = -1;

TEST_F(EvalProcessTest, OneAndTwoRanksAgreeAndRescoringMatches) {
  auto one = RunEval("one", 1, WriteEvalConfig("one", Ckpt(), Tsv()));
  ASSERT_EQ(one, (std::vector<int>{0})) << ReadAll(Log("one", 0));
  auto two = RunEval("two", 2, WriteEvalConfig("two", Ckpt(), Tsv()));
  ASSERT_EQ(two, (std::vector<int>{0, 0}))
      << ReadAll(Log("two", 0)) << ReadAll(Log("two", 1));

  const fs::path out1 = root_ / "one" / "out", out2 = root_ / "two" / "out";
  for (const char* f :
       {"synthetic_shapes_predictions.tsv", "synthetic_shapes_predictions.json",
        "dcvlr_scoring_summary.json"}) {
    EXPECT_TRUE(fs::exists(out1 / f)) << f;
    EXPECT_TRUE(fs::exists(out2 / f)) << f;
  }
  // Same predictions whatever the world size.
  const std::string pred1 = ReadAll(out1 / "synthetic_shapes_predictions.tsv");
  EXPECT_EQ(pred1, ReadAll(out2 / "synthetic_shapes_predictions.tsv"));
  TsvTable table;
  std::string error;
  ASSERT_TRUE(ParseTsv(pred1, "pred", &table, &error)) << error;
  EXPECT_EQ(table.header,
            (std::vector<std::string>{"index", "question", "A", "B", "C", "D",
                                      "answer", "prediction", "category"}));
  ASSERT_EQ(table.rows.size(), size_t(kRows));
  for (int i = 0; i < kRows; ++i)
    EXPECT_EQ(table.rows[i][0], std::to_string(i));  // file order kept

  // The summary is consistent with the predictions re-scored on their own.
  json summary = json::parse(ReadAll(out1 / "dcvlr_scoring_summary.json"));
  const json& bench = summary["benchmark_results"]["synthetic_shapes"];
  EXPECT_EQ(bench["total_samples"], kRows);
  EXPECT_EQ(summary["overall_statistics"]["total_samples"], kRows);
  EXPECT_EQ(summary["overall_statistics"]["total_hits"], bench["hits"]);
  EXPECT_DOUBLE_EQ(
      summary["overall_statistics"]["overall_accuracy"].get<double>(),
      bench["accuracy"].get<double>());
  const fs::path rescored = root_ / "one" / "rescored.json";
  int code =
      WaitExit(Spawn(DCVLR_EVAL_BIN,
                     {"score", "--predictions",
                      (out1 / "synthetic_shapes_predictions.tsv").string(),
                      "--output", rescored.string()},
                     {}, root_ / "one" / "score.log"));
  ASSERT_EQ(code, 0) << ReadAll(root_ / "one" / "score.log");
  json again = json::parse(ReadAll(rescored));
  const json& r = again["benchmark_results"]["synthetic_shapes"];
  EXPECT_EQ(r["total_samples"], bench["total_samples"]);
  EXPECT_EQ(r["hits"], bench["hits"]);
  EXPECT_EQ(r["categories"], bench["categories"]);
  EXPECT_EQ(r["stage_breakdown"], bench["stage_breakdown"]);
  int category_total = 0;
  for (const auto& [name, c] : bench["categories"].items())
    category_total += c["total_samples"].get<int>();
  EXPECT_EQ(category_total, kRows);
  // The score command prints the overall line last.
  EXPECT_TRUE(std::regex_search(
      LastLine(ReadAll(root_ / "one" / "score.log")),
      std::regex("^benchmark synthetic_shapes samples=24 hits=[0-9]+ "
                 "accuracy=[0-9.]+$")));

  // stderr ends with the per-benchmark line and the done line.
  const std::string log = ReadAll(Log("one", 0));
  char want[128];
  snprintf(want, sizeof(want), "done benchmarks=1 samples=%d accuracy=%.4f",
           kRows, bench["accuracy"].get<double>());
  EXPECT_EQ(LastLine(log), want) << log;
  EXPECT_NE(log.find("benchmark synthetic_shapes samples=24 hits=" +
                     bench["hits"].dump()),
            std::string::npos);

  // Metrics: numbers only, per benchmark then overall.
  std::ifstream metrics(root_ / "one" / "metrics.jsonl");
  std::vector<json> lines;
  for (std::string line; std::getline(metrics, line);)
    lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["eval_total/synthetic_shapes"], kRows);
  EXPECT_EQ(lines[0]["eval_hits/synthetic_shapes"], bench["hits"]);
  EXPECT_DOUBLE_EQ(lines[1]["eval_accuracy"].get<double>(),
                   bench["accuracy"].get<double>());
  for (const json& l : lines)
    for (const auto& [k, v] : l.items()) EXPECT_TRUE(v.is_number()) << k;
}

TEST_F(EvalProcessTest, MismatchedTensorShapeFailsNamingTheTensor) {
  // A copy of the checkpoint whose recorded config disagrees with its weights.
  const fs::path bad = root_ / "bad_ckpt" / "step-4";
  fs::create_directories(bad.parent_path());
  fs::copy(root_ / "ckpt" / "step-4", bad, fs::copy_options::recursive);
  json state = json::parse(ReadAll(bad / "trainer_state.json"));
  state["model"]["intermediate"] = 640;
  std::ofstream(bad / "trainer_state.json") << state.dump(2);
  auto codes = RunEval(
      "bad", 1, WriteEvalConfig("bad", bad.parent_path().string(), Tsv()));
  const std::string log = ReadAll(Log("bad", 0));
  EXPECT_EQ(codes, (std::vector<int>{1})) << log;
  EXPECT_NE(log.find("tensor model.layers.0.mlp.gate_proj.weight has shape "
                     "[704, 256] in the checkpoint, the model expects "
                     "[640, 256]"),
            std::string::npos)
      << log;
  EXPECT_FALSE(
      fs::exists(root_ / "bad" / "out" / "dcvlr_scoring_summary.json"));
}

TEST_F(EvalProcessTest, HuggingFaceCheckpointIsRefusedSayingSo) {
  const fs::path hf = root_ / "hf_ckpt" / "step-4";
  fs::create_directories(hf.parent_path());
  fs::copy(root_ / "ckpt" / "step-4", hf, fs::copy_options::recursive);
  json state = json::parse(ReadAll(hf / "trainer_state.json"));
  state["model"] = {{"hf_model_dir", "/models/qwen"},
                    {"architecture", "Qwen2_5_VLForConditionalGeneration"}};
  std::ofstream(hf / "trainer_state.json") << state.dump(2);
  auto codes =
      RunEval("hf", 1, WriteEvalConfig("hf", hf.parent_path().string(), Tsv()));
  const std::string log = ReadAll(Log("hf", 0));
  EXPECT_NE(codes, (std::vector<int>{0})) << log;
  EXPECT_NE(
      log.find("a checkpoint of a Hugging Face model "
               "(Qwen2_5_VLForConditionalGeneration from \"/models/qwen\")"),
      std::string::npos)
      << log;
}

TEST_F(EvalProcessTest, BrokenTsvFailsNamingFileLineAndColumn) {
  const fs::path tsv = root_ / "broken.tsv";
  std::ofstream(tsv) << "index\timage\tquestion\tA\tB\tanswer\n"
                     << "0\tnot-an-index\tq?\tx\ty\tA\n";
  auto codes =
      RunEval("broken", 1, WriteEvalConfig("broken", Ckpt(), tsv.string()));
  const std::string log = ReadAll(Log("broken", 0));
  EXPECT_EQ(codes, (std::vector<int>{1})) << log;
  EXPECT_NE(log.find(tsv.string() +
                     ":2: column \"image\": \"not-an-index\" is too short "
                     "for an image and names no row's index"),
            std::string::npos)
      << log;
}

TEST_F(EvalProcessTest, SigtermExitsRequeueOnEveryRank) {
  auto codes = RunEval("term", 2, WriteEvalConfig("term", Ckpt(), Tsv()),
                       /*sigterm_pending=*/true);
  EXPECT_EQ(codes, (std::vector<int>{75, 75}))
      << ReadAll(Log("term", 0)) << ReadAll(Log("term", 1));
  EXPECT_FALSE(
      fs::exists(root_ / "term" / "out" / "dcvlr_scoring_summary.json"));
  EXPECT_NE(ReadAll(Log("term", 1)).find("stopped by signal, exiting 75"),
            std::string::npos);
}

TEST_F(EvalProcessTest, BadConfigExitsTwo) {
  const fs::path cfg = root_ / "badcfg.json";
  std::ofstream(cfg) << R"({"model": {"checkpoint": "x"}, "benchmarks": 3})";
  fs::create_directories(root_ / "badcfg");
  int code = WaitExit(Spawn(DCVLR_EVAL_BIN, {"--config", cfg.string()}, {},
                            root_ / "badcfg" / "log"));
  EXPECT_EQ(code, 2);
  EXPECT_NE(ReadAll(root_ / "badcfg" / "log")
                .find("benchmarks: expected a list, got 3"),
            std::string::npos);
}

}  // namespace
}  // namespace dcvlr::eval
