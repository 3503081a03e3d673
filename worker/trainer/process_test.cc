// Multi-process tests of the real dcvlr-train binary: ranks are separate
// processes with torchrun's environment, rendezvousing over a TCPStore on
// loopback and reducing gradients over Gloo.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "worker/trainer/safetensors_spec_parser.h"
#include "worker/trainer/test_util.h"

namespace dcvlr::trainer {
namespace {

namespace fs = std::filesystem;
using ::dcvlr::trainer::testing::FreePort;
using ::dcvlr::trainer::testing::ReadAll;
using nlohmann::json;

// Starts dcvlr-train with `env` added to ours; stderr goes to `log`.
pid_t Spawn(const std::vector<std::string>& args,
            const std::map<std::string, std::string>& env,
            const fs::path& log) {
  pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    FILE* f = std::fopen(log.c_str(), "w");
    ::dup2(fileno(f), 2);
    ::dup2(fileno(f), 1);
    std::vector<char*> argv;
    std::string bin = DCVLR_TRAIN_BIN;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

class TrainerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("dcvlr_trainer_test." + std::to_string(::getpid()) + "." +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(root_);
  }

  // A small, fast run: 2 micro-batches of 4 per step exercise accumulation.
  fs::path WriteConfig(int max_steps, int save_steps,
                       const std::string& model = "tiny-vlm") {
    json c = {
        {"model", {{"model_name", model}}},
        {"data",
         {{"train",
           {{"datasets",
             {{{"dataset_name", "synthetic_shapes"},
               {"dataset_kwargs",
                {{"split", "train"}, {"num_samples", 256}, {"seed", 3}}}}}}}},
          {"validation",
           {{"datasets",
             {{{"dataset_name", "synthetic_shapes"},
               {"dataset_kwargs",
                {{"split", "test"}, {"num_samples", 32}, {"seed", 3}}}}}}}}}},
        {"training",
         {{"learning_rate", "1e-3"},
          {"max_steps", max_steps},
          {"warmup_steps", 2},
          {"per_device_train_batch_size", 4},
          {"gradient_accumulation_steps", 2},
          {"weight_decay", 0.01},
          {"logging_steps", 1},
          {"save_steps", save_steps},
          {"save_total_limit", 2},
          {"seed", 11},
          {"output_dir", "out"}}}};
    fs::path p = root_ / "config.json";
    std::ofstream(p) << c.dump(2);
    return p;
  }

  // Starts `world` ranks of one run whose files go under root_/name.
  std::vector<pid_t> StartRanks(const std::string& name, int world,
                                const fs::path& config) {
    fs::path dir = root_ / name;
    fs::create_directories(dir);
    std::string port = std::to_string(FreePort());
    std::vector<pid_t> pids;
    for (int r = 0; r < world; ++r) {
      std::map<std::string, std::string> env = {
          {"RANK", std::to_string(r)},
          {"LOCAL_RANK", std::to_string(r)},
          {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_WORLD_SIZE", std::to_string(world)},
          {"NODE_RANK", "0"},
          {"GROUP_RANK", "0"},
          {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", port},
          {"DCVLR_OUTPUT_DIR", (dir / "out").string()},
          {"DCVLR_CHECKPOINT_DIR", (dir / "ckpt").string()},
          {"DCVLR_METRICS_FILE", (dir / "metrics.jsonl").string()},
          {"DCVLR_CACHE_DIR", (root_ / "cache").string()}};
      pids.push_back(
          Spawn({"--config", config.string()}, env, LogPath(name, r)));
    }
    return pids;
  }

  fs::path LogPath(const std::string& name, int rank) {
    return root_ / name / ("rank" + std::to_string(rank) + ".log");
  }

  std::vector<int> WaitAll(const std::vector<pid_t>& pids) {
    std::vector<int> codes;
    for (pid_t p : pids) codes.push_back(WaitExit(p));
    return codes;
  }

  std::string Checksum(const std::string& name, int rank) {
    std::smatch m;
    std::string log = ReadAll(LogPath(name, rank));
    if (!std::regex_search(log, m, std::regex("params_fnv64=([0-9a-f]{16})")))
      return "none";
    return m[1];
  }

  fs::path root_;
};

TEST_F(TrainerProcessTest, TwoRanksKeepIdenticalParameters) {
  fs::path config = WriteConfig(/*max_steps=*/6, /*save_steps=*/0);
  auto codes = WaitAll(StartRanks("run", 2, config));
  ASSERT_EQ(codes, (std::vector<int>{0, 0}))
      << ReadAll(LogPath("run", 0)) << ReadAll(LogPath("run", 1));
  std::string c0 = Checksum("run", 0), c1 = Checksum("run", 1);
  EXPECT_NE(c0, "none");
  EXPECT_EQ(c0, c1) << "ranks diverged after 6 steps";
  std::string log0 = ReadAll(LogPath("run", 0));
  EXPECT_NE(log0.find("params=3593472"), std::string::npos);
  // The last line reports the end.
  EXPECT_TRUE(std::regex_search(
      log0, std::regex("done step=6 loss=[0-9.]+ eval_accuracy=[0-9.]+")))
      << log0;
  // Every metrics line is an object of numbers with the contract's keys.
  std::ifstream metrics(root_ / "run" / "metrics.jsonl");
  int steps = 0, checkpoints = 0;
  for (std::string line; std::getline(metrics, line);) {
    json m = json::parse(line);
    for (const auto& [k, v] : m.items()) EXPECT_TRUE(v.is_number()) << line;
    if (m.contains("loss")) {
      ++steps;
      for (const char* k : {"step", "epoch", "lr", "grad_norm", "tokens_per_s",
                            "samples_per_s", "step_time_s"})
        EXPECT_TRUE(m.contains(k)) << k << " missing in " << line;
    }
    checkpoints += m.contains("checkpoint_step");
  }
  EXPECT_EQ(steps, 6);
  EXPECT_EQ(checkpoints, 1);  // the final one
}

TEST_F(TrainerProcessTest, SigtermCheckpointsAndResumeIsBitExact) {
  const int kSteps = 30;
  fs::path config = WriteConfig(kSteps, /*save_steps=*/4);
  // Reference: never interrupted.
  ASSERT_EQ(WaitAll(StartRanks("straight", 2, config)),
            (std::vector<int>{0, 0}))
      << ReadAll(LogPath("straight", 0));

  // Interrupted: SIGTERM both ranks once step 5 has been logged.
  auto pids = StartRanks("stopped", 2, config);
  fs::path metrics = root_ / "stopped" / "metrics.jsonl";
  bool reached = false;
  for (int i = 0; i < 6000 && !reached; ++i) {
    std::ifstream in(metrics);
    for (std::string line; std::getline(in, line);) {
      json m = json::parse(line, nullptr, false);
      if (m.is_object() && m.contains("loss") && m["step"].get<int>() >= 5)
        reached = true;
    }
    if (!reached) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(reached) << ReadAll(LogPath("stopped", 0));
  for (pid_t p : pids) ::kill(p, SIGTERM);
  ASSERT_EQ(WaitAll(pids), (std::vector<int>{75, 75}))
      << ReadAll(LogPath("stopped", 0));
  // The stop committed a checkpoint before the end.
  int64_t latest = -1;
  for (const auto& e : fs::directory_iterator(root_ / "stopped" / "ckpt"))
    if (fs::exists(e.path() / "COMMIT"))
      latest = std::max<int64_t>(
          latest, std::stoll(e.path().filename().string().substr(5)));
  ASSERT_GE(latest, 5);
  ASSERT_LT(latest, kSteps);

  // Resume (a new attempt: same directories, new processes).
  ASSERT_EQ(WaitAll(StartRanks("stopped", 2, config)), (std::vector<int>{0, 0}))
      << ReadAll(LogPath("stopped", 0));
  EXPECT_NE(ReadAll(LogPath("stopped", 0)).find("resumed from"),
            std::string::npos);

  const std::string final_dir = "step-" + std::to_string(kSteps);
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    std::string a = ReadAll(root_ / "straight" / "ckpt" / final_dir / file);
    std::string b = ReadAll(root_ / "stopped" / "ckpt" / final_dir / file);
    ASSERT_FALSE(a.empty()) << file;
    EXPECT_TRUE(a == b) << file
                        << " differs between the straight and the resumed run";
  }
  // keep-last-K: save_total_limit is 2.
  int kept = 0;
  for (const auto& e : fs::directory_iterator(root_ / "straight" / "ckpt"))
    kept += fs::is_directory(e);
  EXPECT_EQ(kept, 2);

  // The weights file is plain safetensors, by a reader written from the spec.
  testing::SpecFile f;
  ASSERT_EQ(testing::ParseSafetensorsBySpec(
                (root_ / "straight" / "ckpt" / final_dir / "model.safetensors")
                    .string(),
                &f),
            "");
  ASSERT_TRUE(f.tensors.count("model.embed_tokens.weight"));
  EXPECT_EQ(f.tensors["model.embed_tokens.weight"].shape,
            (std::vector<int64_t>{320, 256}));
  EXPECT_EQ(f.tensors["model.embed_tokens.weight"].dtype, "F32");
  EXPECT_EQ(f.metadata["format"], "pt");
  int64_t total = 0;
  for (const auto& [name, t] : f.tensors) total += t.bytes.size() / 4;
  EXPECT_EQ(total, 3593472);
}

TEST_F(TrainerProcessTest, BadConfigExitsTwoNamingTheKey) {
  fs::path config = root_ / "bad.json";
  std::ofstream(config)
      << R"({"data": {"train": {"datasets": [{"dataset_name": "synthetic_shapes"}]}},
                              "training": {"max_steps": "abc"}})";
  fs::create_directories(root_ / "bad");
  pid_t pid =
      Spawn({"--config", config.string()}, {}, root_ / "bad" / "rank0.log");
  EXPECT_EQ(WaitExit(pid), 2);
  EXPECT_NE(ReadAll(root_ / "bad" / "rank0.log")
                .find(R"(training.max_steps: expected an integer, got "abc")"),
            std::string::npos);
}

// `dcvlr-train tokenize`: one line of ids per input line, as the golden
// file has them.
TEST_F(TrainerProcessTest, TokenizePrintsIdsPerLine) {
  const std::string dir = std::string(DCVLR_TESTDATA) + "/qwen_tokenizer";
  fs::path in = root_ / "lines.txt";
  std::ofstream(in)
      << "Hello world\n\n<|vision_start|><|image_pad|><|vision_end|>"
         "你好\n";
  std::string cmd = std::string(DCVLR_TRAIN_BIN) + " tokenize --tokenizer " +
                    dir + " < " + in.string();
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;)
    out.append(buf, n);
  EXPECT_EQ(::pclose(p), 0);
  EXPECT_EQ(out, "9707 1879\n\n151652 151655 151653 108386\n");

  std::string bad = std::string(DCVLR_TRAIN_BIN) +
                    " tokenize --tokenizer /nonexistent 2>&1 < /dev/null";
  p = ::popen(bad.c_str(), "r");
  out.clear();
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;)
    out.append(buf, n);
  EXPECT_EQ(WEXITSTATUS(::pclose(p)), 2);
  EXPECT_NE(out.find("/nonexistent: cannot open"), std::string::npos) << out;
}

// bf16 of an fp32 value, rounded to nearest even (as torch converts).
uint16_t ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

// A Hugging Face checkpoint directory (config.json, tokenizer.json, no
// weights) trains from fresh weights on two ranks in lockstep, resumes from
// a checkpoint bit for bit, and is exported for transformers with the
// final weights.
TEST_F(TrainerProcessTest, HfCheckpointDirectoryTrainsResumesAndExports) {
  const std::string model =
      std::string(DCVLR_CONFIGS) + "/models/qwen2_5-vl-tiny";
  fs::path config = WriteConfig(/*max_steps=*/6, /*save_steps=*/2, model);
  ASSERT_EQ(WaitAll(StartRanks("straight", 2, config)),
            (std::vector<int>{0, 0}))
      << ReadAll(LogPath("straight", 0));
  const std::string log = ReadAll(LogPath("straight", 0));
  EXPECT_NE(log.find("model=Qwen2_5_VLForConditionalGeneration"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("fresh weights of its config.json from seed 11"),
            std::string::npos);
  EXPECT_EQ(Checksum("straight", 0), Checksum("straight", 1));
  EXPECT_NE(Checksum("straight", 0), "none");

  // Resume: the run's checkpoints without the last one, then the same job.
  fs::create_directories(root_ / "resumed");
  fs::copy(root_ / "straight" / "ckpt", root_ / "resumed" / "ckpt",
           fs::copy_options::recursive);
  fs::remove_all(root_ / "resumed" / "ckpt" / "step-6");
  ASSERT_TRUE(fs::exists(root_ / "resumed" / "ckpt" / "step-4" / "COMMIT"));
  ASSERT_EQ(WaitAll(StartRanks("resumed", 2, config)), (std::vector<int>{0, 0}))
      << ReadAll(LogPath("resumed", 0));
  EXPECT_NE(ReadAll(LogPath("resumed", 0)).find("resumed from"),
            std::string::npos);
  const fs::path final_ckpt = root_ / "straight" / "ckpt" / "step-6";
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    std::string a = ReadAll(final_ckpt / file);
    ASSERT_FALSE(a.empty()) << file;
    EXPECT_TRUE(a == ReadAll(root_ / "resumed" / "ckpt" / "step-6" / file))
        << file << " differs between the straight and the resumed run";
  }

  // The export: Hub-layout config, the tokenizer and processor files, and
  // the final checkpoint's weights in BF16 under the Hub's names.
  const fs::path out = root_ / "straight" / "out" / "hf_model";
  for (const char* f : {"config.json", "tokenizer.json",
                        "tokenizer_config.json", "preprocessor_config.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  EXPECT_EQ(ReadAll(out / "tokenizer.json"),
            ReadAll(fs::path(model) / "tokenizer.json"));
  testing::SpecFile exported, ckpt;
  ASSERT_EQ(testing::ParseSafetensorsBySpec(
                (out / "model.safetensors").string(), &exported),
            "");
  ASSERT_EQ(testing::ParseSafetensorsBySpec(
                (final_ckpt / "model.safetensors").string(), &ckpt),
            "");
  ASSERT_EQ(exported.tensors.size(), ckpt.tensors.size());
  int64_t compared = 0;
  for (const auto& [name, t] : ckpt.tensors) {
    ASSERT_TRUE(exported.tensors.count(name)) << name;
    const auto& e = exported.tensors.at(name);
    EXPECT_EQ(e.dtype, "BF16") << name;
    ASSERT_EQ(e.bytes.size() * 2, t.bytes.size()) << name;
    for (size_t i = 0; i < t.bytes.size() / 4; ++i) {
      float f;
      uint16_t b;
      std::memcpy(&f, t.bytes.data() + 4 * i, 4);
      std::memcpy(&b, e.bytes.data() + 2 * i, 2);
      ASSERT_EQ(b, ToBf16(f)) << name << "[" << i << "]";
      ++compared;
    }
  }
  EXPECT_GT(compared, 500000);

  // The export is a model directory too: training starts from its weights,
  // so its first loss is below the fresh run's.
  fs::path again = WriteConfig(/*max_steps=*/1, /*save_steps=*/0, out.string());
  ASSERT_EQ(WaitAll(StartRanks("continued", 1, again)), (std::vector<int>{0}))
      << ReadAll(LogPath("continued", 0));
  const std::string cont = ReadAll(LogPath("continued", 0));
  EXPECT_NE(cont.find("weights from " + out.string()), std::string::npos)
      << cont;
  auto first_loss = [](const std::string& text) {
    std::smatch m;
    EXPECT_TRUE(
        std::regex_search(text, m, std::regex("step=1/[0-9]+ loss=([0-9.]+)")));
    return std::stod(m[1]);
  };
  EXPECT_LT(first_loss(cont), first_loss(log));
}

}  // namespace
}  // namespace dcvlr::trainer
