// The evaluation run; see evaluator.h.
//
// 1. Every rank reads the checkpoint and every benchmark (so bad input fails
//    on all ranks alike, before any collective), keeping decoded images for
//    its own batches only.
// 2. Ranks rendezvous; each decodes its batches. After every round of
//    batches the ranks sum a stop flag, so a signal stops all of them.
// 3. Generated token ids go into a [items, max_new_tokens] tensor (id + 1,
//    0 for none) that is summed across ranks: each item is written by one
//    rank only, so the sum is the merge.
// 4. Rank 0 scores and writes the outputs.
#include "worker/eval/evaluator.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#ifdef DCVLR_WITH_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "worker/eval/benchmark.h"
#include "worker/eval/generate.h"
#include "worker/eval/model_loader.h"
#include "worker/eval/results.h"
#include "worker/trainer/distributed.h"
#include "worker/trainer/model.h"
#include "worker/trainer/synthetic.h"
#include "worker/trainer/tokenizer.h"
#include "worker/trainer/trainer.h"

namespace dcvlr::eval {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string DecodeText(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids)
    if (id >= 0 && id < trainer::kNumByteTokens) s += static_cast<char>(id);
  return s;
}

struct Prepared {
  Benchmark benchmark;
  std::vector<std::vector<uint16_t>> prompts;
};

}  // namespace

int RunEvaluation(const EvalConfig& given, const std::atomic<bool>& stop) {
  EvalConfig config = given;  // synthetic benchmarks get their paths below
  const trainer::DistEnv env = trainer::DistEnv::FromEnvironment();
  const bool leader = env.rank == 0;
  std::string tag = "dcvlr-eval";
  if (const std::string job = contract::GetEnv(contract::kJobId); !job.empty())
    tag += " job=" + job;
  tag += " rank=" + std::to_string(env.rank);
  auto log = [&](const std::string& msg) {
    fprintf(stderr, "%s %s\n", tag.c_str(), msg.c_str());
    fflush(stderr);
  };
  auto fail = [&](const std::string& msg) {
    log("error: " + msg);
    return kExitError;
  };
  auto stopped_by_signal = [&] {
    log("stopped by signal, exiting 75");
    return kExitRequeue;
  };
  const auto start = Clock::now();

  at::Device device(at::kCPU);
#ifdef DCVLR_WITH_CUDA
  if (at::hasCUDA() && at::cuda::device_count() > 0) {
    device = at::Device(at::kCUDA, env.local_rank % at::cuda::device_count());
    c10::cuda::set_device(device.index());
  }
#endif
  at::set_num_threads(config.num_threads > 0 ? config.num_threads
                                             : (device.is_cuda() ? 4 : 1));
  trainer::SetBlasThreads(at::get_num_threads());
  const bool bf16 =
      config.dtype == "bf16" || (config.dtype == "auto" && device.is_cuda());

  std::string output_dir = config.output_dir;
  if (output_dir.empty()) output_dir = contract::GetEnv(contract::kOutputDir);
  if (output_dir.empty()) output_dir = fs::current_path().string();

  // Step 1: checkpoint and benchmarks.
  std::string step_dir, error;
  trainer::ModelPreset preset;
  if (!ResolveCheckpointDir(config.checkpoint, &step_dir, &error) ||
      !ReadCheckpointPreset(step_dir, &preset, &error))
    return fail(error);
  trainer::VlmModel model(preset, uint64_t(config.seed), device,
                          bf16 ? at::kBFloat16 : at::kFloat);
  if (!LoadModelWeights(step_dir, &model, &error)) return fail(error);
  if (stop.load()) return stopped_by_signal();
  if (leader)
    log("checkpoint " + step_dir + " model=" + preset.name +
        " params=" + std::to_string(model.num_params()) +
        " device=" + device.str() + " dtype=" + (bf16 ? "bf16" : "fp32") +
        " world=" + std::to_string(env.world_size) + " torch=" TORCH_VERSION);

  // Synthetic benchmarks are written as VLMEvalKit TSVs first. Every rank
  // writes the same bytes (the generator is deterministic) to a file of its
  // own and renames it into place, so no rank reads a half-written file.
  for (BenchmarkSpec& spec : config.benchmarks) {
    if (!spec.synthetic) continue;
    spec.path =
        (fs::path(output_dir) / (spec.name + "_benchmark.tsv")).string();
    const std::string mine =
        spec.path + ".rank-" + std::to_string(env.rank) + ".tmp";
    std::error_code ec;
    fs::create_directories(output_dir, ec);
    if (!trainer::WriteSyntheticTsv(mine, spec.source.split,
                                    uint64_t(spec.source.seed),
                                    spec.source.num_samples, &error))
      return fail(error);
    fs::rename(mine, spec.path, ec);
    if (ec) return fail("cannot write " + spec.path + ": " + ec.message());
    if (leader)
      log("benchmark " + spec.name + ": wrote " +
          std::to_string(spec.source.num_samples) + " synthetic " +
          spec.source.split + " rows (seed " +
          std::to_string(spec.source.seed) + ") to " + spec.path);
  }

  const trainer::ByteTokenizer tokenizer(preset.image_tokens());
  const int64_t bs = config.batch_size, world = env.world_size;
  std::vector<Prepared> work(config.benchmarks.size());
  for (size_t bi = 0; bi < config.benchmarks.size(); ++bi) {
    const BenchmarkSpec& spec = config.benchmarks[bi];
    auto mine = [&](int64_t row) { return (row / bs) % world == env.rank; };
    if (!LoadBenchmark(spec, preset.image_size, config.max_samples, mine,
                       &work[bi].benchmark, &error))
      return fail(error);
    for (const BenchmarkItem& item : work[bi].benchmark.items) {
      // The user turn up to "<|im_start|>assistant\n": EncodeExample with an
      // empty answer, less the closing <|im_end|>. The question is cut only
      // where the prompt would leave no room for one answer token.
      auto ex = tokenizer.EncodeExample(BuildPrompt(item, spec.prompt), "",
                                        preset.max_seq_len);
      ex.tokens.pop_back();
      work[bi].prompts.push_back(std::move(ex.tokens));
    }
    if (leader)
      log("benchmark " + spec.name + " rows=" +
          std::to_string(work[bi].benchmark.items.size()) + " prompt=" +
          (spec.prompt == PromptStyle::kInline ? "inline" : "vlmevalkit") +
          " path=" + spec.path);
    if (stop.load()) return stopped_by_signal();
  }

  // Step 2: rendezvous, then decode.
  auto comm = trainer::Communicator::Create(env, device, &error);
  if (!comm) return fail(error);
  const auto fopts = at::TensorOptions(at::kFloat).device(device);
  std::vector<BenchmarkScore> scores;
  for (Prepared& w : work) {
    const Benchmark& bench = w.benchmark;
    const int64_t n = int64_t(bench.items.size());
    const int64_t width = config.max_new_tokens;
    auto merged = at::zeros({std::max<int64_t>(n, 1), width}, at::kFloat);
    const int64_t batches = (n + bs - 1) / bs;
    const int64_t rounds = (batches + world - 1) / world;
    for (int64_t round = 0; round < rounds; ++round) {
      const int64_t k = round * world + env.rank;
      bool stopped = false;
      if (k < batches) {
        std::vector<std::vector<uint16_t>> prompts;
        std::vector<const trainer::Image*> images;
        const int64_t first = k * bs, last = std::min(n, first + bs);
        for (int64_t i = first; i < last; ++i) {
          prompts.push_back(w.prompts[i]);
          images.push_back(&bench.items[i].image);
        }
        std::vector<std::vector<int64_t>> out;
        try {
          stopped = !GenerateGreedy(model, prompts, images, int(width), device,
                                    &stop, &out);
        } catch (const std::exception& e) {
          return fail(bench.spec.name + ": generation failed: " + e.what());
        }
        float* m = merged.data_ptr<float>();
        for (int64_t i = first; i < last; ++i) {
          const auto& ids = out[i - first];
          for (size_t j = 0; j < ids.size() && int64_t(j) < width; ++j)
            m[i * width + j] = float(ids[j] + 1);
        }
      }
      stopped = stopped || stop.load();
      if (world > 1) {
        auto flag = at::full({1}, stopped ? 1.0 : 0.0, fopts);
        comm->AllReduceSum(flag);
        stopped = flag.cpu().item<float>() > 0;
      }
      if (stopped) return stopped_by_signal();
      if (leader && (round + 1) % 10 == 0)
        log("benchmark " + bench.spec.name + " batches=" +
            std::to_string(std::min(batches, (round + 1) * world)) + "/" +
            std::to_string(batches));
    }
    // Step 3: merge.
    if (world > 1) {
      auto t = merged.to(device);
      comm->AllReduceSum(t);
      merged = t.cpu();
    }
    if (!leader) continue;
    // Step 4: score.
    std::vector<PredictionRow> rows(n);
    const float* m = merged.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      const BenchmarkItem& item = bench.items[i];
      std::vector<int64_t> ids;
      for (int64_t j = 0; j < width && m[i * width + j] > 0; ++j)
        ids.push_back(int64_t(m[i * width + j]) - 1);
      rows[i].index = item.index;
      rows[i].question = item.question;
      rows[i].options = item.options;
      rows[i].answer = item.answer;
      rows[i].category = item.category;
      rows[i].prediction = DecodeText(ids);
    }
    scores.push_back(
        ScoreRows(bench.spec.name, bench.spec.path, bench.has_category, &rows));
    if (!WritePredictions(output_dir, bench.spec.name, bench.option_columns,
                          bench.has_category, rows, &error))
      return fail(error);
  }
  if (!leader) return kExitOk;

  nlohmann::json summary = SummaryJson(scores);
  summary["checkpoint"] = step_dir;
  if (!WriteFileAtomically(
          (fs::path(output_dir) / "dcvlr_scoring_summary.json").string(),
          DumpJson(summary, 2) + "\n", &error))
    return fail(error);
  if (const std::string metrics = contract::GetEnv(contract::kMetricsFile);
      !metrics.empty())
    if (!AppendMetrics(metrics, scores, &error)) return fail(error);
  const Tally all = Overall(scores);
  char buf[160];
  snprintf(buf, sizeof(buf), "outputs in %s wall_s=%.1f", output_dir.c_str(),
           std::chrono::duration<double>(Clock::now() - start).count());
  log(buf);
  for (const BenchmarkScore& s : scores)
    fputs(BenchmarkReport(s).c_str(), stderr);
  snprintf(buf, sizeof(buf), "done benchmarks=%zu samples=%lld accuracy=%.4f",
           scores.size(), (long long)all.total, all.accuracy());
  fprintf(stderr, "%s\n", buf);
  fflush(stderr);
  return kExitOk;
}

}  // namespace dcvlr::eval
