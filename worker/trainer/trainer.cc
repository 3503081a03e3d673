// The training loop; see trainer.h.
//
// Data order is a pure function of (seed, step): optimizer step s reads the
// global batch at position s % steps_per_epoch of epoch s / steps_per_epoch's
// permutation, and rank r's micro-batch a of it is the slice
// (a * world + r) * batch. Resuming therefore needs only the step, which the
// checkpoint records with the data cursor it implies.
//
// One optimizer step:
//   1. for each micro-batch: forward, backward (the reducer all-reduces the
//      flat gradient buffer in buckets during the last backward);
//   2. clip, AdamW, zero the gradient buffer;
//   3. agree across ranks whether a stop was requested (SIGTERM reaches the
//      ranks at different moments, and all must checkpoint the same step);
//   4. log / evaluate / checkpoint when their step counts come round.
#include "worker/trainer/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <dlfcn.h>
#include <torch/version.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#ifdef DCVLR_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "worker/trainer/bpe_tokenizer.h"
#include "worker/trainer/checkpoint.h"
#include "worker/trainer/data_cache.h"
#include "worker/trainer/distributed.h"
#include "worker/trainer/hf_checkpoint.h"
#include "worker/trainer/hf_export.h"
#include "worker/trainer/model.h"
#include "worker/trainer/optimizer.h"
#include "worker/trainer/qwen_data.h"
#include "worker/trainer/qwen_image_processor.h"
#include "worker/trainer/qwen_vl_trainable.h"
#include "worker/trainer/tokenizer.h"

namespace dcvlr::trainer {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// Appends one JSON object per line; only rank 0 writes.
class MetricsWriter {
 public:
  MetricsWriter(const std::string& path, bool enabled) {
    if (!enabled || path.empty()) return;
    fs::path p(path);
    if (p.has_parent_path()) fs::create_directories(p.parent_path());
    out_.open(path, std::ios::app);
  }
  void Write(const nlohmann::json& line) {
    if (!out_.is_open()) return;
    out_ << line.dump() << '\n';
    out_.flush();
  }

 private:
  std::ofstream out_;
};

std::vector<int64_t> Permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  uint64_t state = seed * 0x9e3779b97f4a7c15ull +
                   uint64_t(epoch) * 0xd1b54a32d192ed03ull + 1;
  for (int64_t i = n - 1; i > 0; --i) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::swap(perm[i], perm[z % uint64_t(i + 1)]);
  }
  return perm;
}

// Builds a right-padded batch of dataset rows on `device`.
Batch Collate(const Dataset& data, const std::vector<int64_t>& rows, int pad_to,
              at::Device device) {
  int max_len = pad_to;
  if (max_len <= 0) {
    for (int64_t r : rows) {
      int64_t local;
      const Shard& s = data.Locate(r, &local);
      max_len = std::max(max_len, s.length(local));
    }
    max_len = (max_len + 7) / 8 * 8;  // fewer distinct shapes
  }
  const int64_t b = rows.size();
  int image_size = 0;
  auto tokens = at::full({b, max_len}, kPadId, at::kLong);
  std::vector<int64_t> loss_index, targets, loss_row;
  std::vector<const uint8_t*> images;
  int64_t real = 0;
  auto* tok = tokens.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    int64_t local;
    const Shard& s = data.Locate(rows[i], &local);
    image_size = s.image_size();
    const uint16_t* t = s.tokens(local);
    int len = std::min(s.length(local), max_len);
    for (int j = 0; j < len; ++j) tok[i * max_len + j] = t[j];
    real += len;
    // Position j predicts token j + 1; score the answer and its <|im_end|>.
    for (int j = std::max(0, s.answer_start(local) - 1); j + 1 < len; ++j) {
      loss_index.push_back(i * max_len + j);
      targets.push_back(t[j + 1]);
      loss_row.push_back(i);
    }
    images.push_back(s.image(local));
  }
  const int64_t image_bytes = int64_t(image_size) * image_size * 3;
  auto imgs = at::empty({b, image_size, image_size, 3}, at::kByte);
  for (int64_t i = 0; i < b; ++i)
    std::memcpy(imgs.data_ptr<uint8_t>() + i * image_bytes, images[i],
                image_bytes);
  auto vec = [](const std::vector<int64_t>& v) {
    return at::tensor(at::ArrayRef<int64_t>(v), at::kLong);
  };
  const bool cuda = device.is_cuda();
  auto move = [&](at::Tensor t) {
    return cuda ? t.pin_memory().to(device, true) : t;
  };
  Batch batch;
  batch.tokens = move(tokens);
  batch.images = move(imgs);
  batch.loss_index = move(vec(loss_index));
  batch.targets = move(vec(targets));
  batch.loss_row = move(vec(loss_row));
  batch.rows = b;
  batch.real_tokens = real;
  return batch;
}

// A training or validation split as the loop sees it: rows it can batch.
class TrainData {
 public:
  virtual ~TrainData() = default;
  virtual int64_t size() const = 0;
  virtual Batch Collate(const std::vector<int64_t>& rows,
                        at::Device device) const = 0;
};

// The shard cache's rows, for the built-in presets.
class ShardData : public TrainData {
 public:
  explicit ShardData(int pad_to) : pad_to_(pad_to) {}
  Dataset& dataset() { return data_; }
  int64_t size() const override { return data_.size(); }
  Batch Collate(const std::vector<int64_t>& rows,
                at::Device device) const override {
    return dcvlr::trainer::Collate(data_, rows, pad_to_, device);
  }

 private:
  Dataset data_;
  int pad_to_;
};

// Rows for a Hugging Face Qwen-VL checkpoint: right-padded token ids with
// an attention mask, and each row's image normalised and cut into patches.
class QwenData : public TrainData {
 public:
  QwenData(QwenImageProcessorConfig processor, uint32_t pad_id)
      : processor_(processor), pad_id_(pad_id) {}
  QwenDataset& dataset() { return data_; }
  int64_t size() const override { return int64_t(data_.rows.size()); }
  Batch Collate(const std::vector<int64_t>& rows,
                at::Device device) const override {
    int64_t max_len = 0;
    for (int64_t r : rows)
      max_len = std::max<int64_t>(max_len, data_.rows[r].ids.size());
    max_len = (max_len + 7) / 8 * 8;
    const int64_t b = rows.size();
    auto tokens = at::full({b, max_len}, int64_t(pad_id_), at::kLong);
    auto mask = at::zeros({b, max_len}, at::kLong);
    std::vector<int64_t> loss_index, targets, loss_row, grids;
    std::vector<float> pixels;
    int64_t real = 0;
    for (int64_t i = 0; i < b; ++i) {
      const QwenExample& ex = data_.rows[rows[i]];
      const int64_t len = ex.ids.size();
      auto* tok = tokens.data_ptr<int64_t>() + i * max_len;
      auto* m = mask.data_ptr<int64_t>() + i * max_len;
      for (int64_t j = 0; j < len; ++j) {
        tok[j] = ex.ids[j];
        m[j] = 1;
      }
      real += len;
      // Position j predicts token j + 1.
      for (int64_t j = 0; j + 1 < len; ++j)
        if (ex.target[j + 1]) {
          loss_index.push_back(i * max_len + j);
          targets.push_back(ex.ids[j + 1]);
          loss_row.push_back(i);
        }
      for (const Image& image : ex.images) {
        ProcessedImage img;
        std::string error;
        if (!ProcessQwenImage(image, processor_, &img, &error))
          throw std::runtime_error("image of row " + std::to_string(rows[i]) +
                                   ": " + error);
        pixels.insert(pixels.end(), img.pixel_values.begin(),
                      img.pixel_values.end());
        grids.insert(grids.end(), img.grid_thw.begin(), img.grid_thw.end());
      }
    }
    auto vec = [](const std::vector<int64_t>& v) {
      return at::tensor(at::ArrayRef<int64_t>(v), at::kLong);
    };
    Batch batch;
    batch.tokens = tokens.to(device);
    batch.attention_mask = mask.to(device);
    batch.pixel_values = at::tensor(at::ArrayRef<float>(pixels), at::kFloat)
                             .reshape({-1, processor_.patch_dim()})
                             .to(device);
    batch.image_grid_thw = vec(grids).reshape({-1, 3}).to(device);
    batch.loss_index = vec(loss_index).to(device);
    batch.targets = vec(targets).to(device);
    batch.loss_row = vec(loss_row).to(device);
    batch.rows = b;
    batch.real_tokens = real;
    return batch;
  }

 private:
  QwenDataset data_;
  QwenImageProcessorConfig processor_;
  uint32_t pad_id_;
};

// Everything a Hugging Face checkpoint directory gives a run: the model
// (its weights, or fresh ones from the seed when it has none), the
// tokenizer and the image processor's settings.
struct HfModel {
  QwenVlConfig config;
  HfCheckpoint checkpoint;  // mapped files the weights view, if any
  std::map<std::string, at::Tensor> weights;
  std::unique_ptr<BpeTokenizer> tokenizer;
  QwenImageProcessorConfig processor;
  bool pretrained = false;
};

bool LoadHfModel(const std::string& dir, uint64_t seed, HfModel* out,
                 std::string* error) {
  if (!LoadQwenVlConfig(dir, &out->config, error)) return false;
  out->tokenizer = BpeTokenizer::Load(dir, error);
  if (!out->tokenizer) return false;
  if (fs::exists(dir + "/preprocessor_config.json") &&
      !LoadQwenImageProcessorConfig(dir, &out->processor, error))
    return false;
  out->processor.patch_size = out->config.vision.patch_size;
  out->processor.merge_size = out->config.vision.spatial_merge_size;
  out->processor.temporal_patch_size = out->config.vision.temporal_patch_size;
  if (fs::exists(dir + "/model.safetensors") ||
      fs::exists(dir + "/model.safetensors.index.json")) {
    // Views of the mapped files: the copy into the flat buffer is the
    // only one.
    if (!ReadHfCheckpoint(dir, &out->checkpoint, error) ||
        !QwenVlModel::CheckpointTensors(out->config, out->checkpoint,
                                        &out->weights, error))
      return false;
    out->pretrained = true;
  } else {
    out->weights = QwenVlModel::RandomInit(out->config, seed);
  }
  return true;
}

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t samples = 0;
};

// Each rank scores a strided share of the validation split; counts are summed.
EvalResult Evaluate(const TrainableModel& model, const TrainData& data,
                    Communicator* comm, const TrainingConfig& t,
                    at::Device device) {
  c10::NoGradGuard no_grad;
  int64_t n = data.size();
  if (t.eval_max_samples > 0) n = std::min(n, t.eval_max_samples);
  auto totals = at::zeros({3}, at::TensorOptions(at::kFloat).device(device));
  std::vector<int64_t> rows;
  for (int64_t i = comm->rank(); i < n; i += comm->world_size()) {
    rows.push_back(i);
    if (int(rows.size()) == t.per_device_eval_batch_size ||
        i + comm->world_size() >= n) {
      EvalCounts c = model.Evaluate(data.Collate(rows, device));
      totals[0] += c.loss_sum;
      totals[1] += c.tokens;
      totals[2] += c.correct;
      rows.clear();
    }
  }
  comm->AllReduceSum(totals);
  auto cpu = totals.cpu();
  const float* v = cpu.data_ptr<float>();
  EvalResult r;
  r.samples = n;
  r.loss = v[1] > 0 ? v[0] / v[1] : 0;
  r.accuracy = n > 0 ? v[2] / double(n) : 0;
  return r;
}

double PeakFlops(at::Device device, std::string* name) {
  if (const char* v = std::getenv("DCVLR_PEAK_FLOPS")) return std::atof(v);
#ifdef DCVLR_WITH_CUDA
  if (device.is_cuda()) {
    *name = at::cuda::getDeviceProperties(device.index())->name;
    // Dense bf16 peaks (SXM parts).
    if (name->find("H100") != std::string::npos ||
        name->find("H200") != std::string::npos ||
        name->find("H800") != std::string::npos ||
        name->find("GH200") != std::string::npos)
      return 989e12;
    if (name->find("B200") != std::string::npos) return 2250e12;
    if (name->find("A100") != std::string::npos ||
        name->find("A800") != std::string::npos)
      return 312e12;
    if (name->find("L40S") != std::string::npos) return 362e12;
    if (name->find("A10") != std::string::npos) return 125e12;
  }
#endif
  (void)device;
  return 0;
}

}  // namespace

RunPaths RunPaths::FromEnvironment(const TrainerConfig& config) {
  RunPaths p;
  p.output_dir = contract::GetEnv(contract::kOutputDir);
  if (p.output_dir.empty()) p.output_dir = config.training.output_dir;
  p.checkpoint_dir = contract::GetEnv(contract::kCheckpointDir);
  if (p.checkpoint_dir.empty())
    p.checkpoint_dir = p.output_dir + "/checkpoints";
  p.metrics_file = contract::GetEnv(contract::kMetricsFile);
  if (p.metrics_file.empty()) p.metrics_file = p.output_dir + "/metrics.jsonl";
  p.cache_dir = contract::GetEnv(contract::kCacheDir);
  if (p.cache_dir.empty()) p.cache_dir = p.output_dir + "/cache";
  p.job_id = contract::GetEnv(contract::kJobId);
  return p;
}

int RunTraining(const TrainerConfig& config, const RunPaths& paths,
                const std::atomic<bool>& stop) {
  const TrainingConfig& t = config.training;
  const ModelPreset& preset = config.model;
  const DistEnv env = DistEnv::FromEnvironment();
  const bool leader = env.rank == 0;
  std::string tag = "dcvlr-train";
  if (!paths.job_id.empty()) tag += " job=" + paths.job_id;
  tag += " rank=" + std::to_string(env.rank);
  auto log = [&](const std::string& msg) {
    fprintf(stderr, "%s %s\n", tag.c_str(), msg.c_str());
    fflush(stderr);
  };
  auto fail = [&](const std::string& msg) {
    log("error: " + msg);
    return kExitError;
  };

  // Device, threads, precision.
  at::Device device(at::kCPU);
#ifdef DCVLR_WITH_CUDA
  if (at::hasCUDA() && at::cuda::device_count() > 0) {
    device = at::Device(at::kCUDA, env.local_rank % at::cuda::device_count());
    c10::cuda::set_device(device.index());
  }
#endif
  // One intra-op thread per rank on CPU: ranks already fill the cores, and
  // oversubscription costs more than it gives.
  at::set_num_threads(t.num_threads > 0 ? t.num_threads
                                        : (device.is_cuda() ? 4 : 1));
  SetBlasThreads(at::get_num_threads());
  const bool bf16 = device.is_cuda() ? t.mixed_precision_dtype != "none"
                                     : t.mixed_precision_dtype == "bf16";
  const at::ScalarType dtype = bf16 ? at::kBFloat16 : at::kFloat;

  std::error_code ec;
  fs::create_directories(paths.output_dir, ec);
  fs::create_directories(paths.checkpoint_dir, ec);

  std::string error;
  auto comm = Communicator::Create(env, device, &error);
  if (!comm) return fail(error);

  // Data: one process per machine converts, the others wait for its files.
  // A Hugging Face checkpoint brings its own tokenizer and image processor.
  CacheOptions cache{paths.cache_dir, env.local_rank == 0};
  const bool hf = !config.hf_model_dir.empty();
  HfModel hf_model;
  std::unique_ptr<TrainData> train_data, validation_data;
  if (hf) {
    if (!LoadHfModel(config.hf_model_dir, t.seed, &hf_model, &error))
      return fail(error);
    const uint32_t pad =
        hf_model.config.bos_token_id < hf_model.config.text.vocab_size
            ? uint32_t(hf_model.config.bos_token_id)
            : 0;
    auto tr = std::make_unique<QwenData>(hf_model.processor, pad);
    auto va = std::make_unique<QwenData>(hf_model.processor, pad);
    for (auto [specs, data] : {std::pair{&config.train, tr.get()},
                               std::pair{&config.validation, va.get()}}) {
      if (!LoadQwenDataset(*specs, cache, *hf_model.tokenizer,
                           hf_model.processor, preset.max_seq_len,
                           &data->dataset(), &error))
        return fail(error);
      if (data->dataset().too_long > 0 && leader)
        log(std::to_string(data->dataset().too_long) +
            " rows left out: longer than model_max_length=" +
            std::to_string(preset.max_seq_len) + " tokens");
    }
    train_data = std::move(tr);
    validation_data = std::move(va);
  } else {
    const int pad_to = t.pad_to_max_length ? preset.max_seq_len : 0;
    auto tr = std::make_unique<ShardData>(pad_to);
    auto va = std::make_unique<ShardData>(pad_to);
    if (!LoadDataset(config.train, preset, cache, &tr->dataset(), &error) ||
        !LoadDataset(config.validation, preset, cache, &va->dataset(), &error))
      return fail(error);
    train_data = std::move(tr);
    validation_data = std::move(va);
  }
  const TrainData& train = *train_data;
  const TrainData& validation = *validation_data;
  const int64_t world = comm->world_size(),
                micro = t.per_device_train_batch_size,
                accum = t.gradient_accumulation_steps;
  const int64_t global_batch = world * micro * accum;
  const int64_t steps_per_epoch = train.size() / global_batch;
  if (steps_per_epoch < 1)
    return fail("training set has " + std::to_string(train.size()) +
                " rows, fewer than one global batch of " +
                std::to_string(global_batch));
  const int64_t total_steps =
      t.max_steps > 0
          ? t.max_steps
          : std::max<int64_t>(
                1, std::llround(t.num_train_epochs * steps_per_epoch));
  std::unique_ptr<TrainableModel> model_holder;
  if (hf) {
    model_holder = std::make_unique<QwenVlTrainable>(
        hf_model.config, hf_model.weights, device, dtype);
    hf_model.weights.clear();
    hf_model.checkpoint = HfCheckpoint();
    if (leader)
      log(hf_model.pretrained
              ? "weights from " + config.hf_model_dir
              : "no weights in " + config.hf_model_dir +
                    ": fresh weights of its config.json from seed " +
                    std::to_string(t.seed));
  } else {
    model_holder = std::make_unique<VlmModel>(preset, t.seed, device, dtype);
  }
  TrainableModel& model = *model_holder;
  FlatAdamW optimizer(model.flat_params(), model.flat_grads(),
                      model.decay_mask(), t);
  {
    std::vector<std::tuple<int64_t, int64_t, bool>> segments;
    for (const Parameter& p : model.parameters())
      segments.emplace_back(p.offset, p.tensor.numel(), p.decay);
    optimizer.UseFusedKernel(segments);
  }
  const double bucket_mb = t.ddp_bucket_cap_mb > 0 ? t.ddp_bucket_cap_mb
                           : device.is_cuda()      ? 25
                                                   : 1;
  GradReducer reducer(model, comm.get(),
                      static_cast<int64_t>(bucket_mb * (1 << 20)));
  CheckpointManager checkpoints(paths.checkpoint_dir, t.save_total_limit,
                                comm.get());
  MetricsWriter metrics(paths.metrics_file, leader);

  int64_t step = 0;
  const int64_t resume = checkpoints.LatestComplete();
  // Ranks could disagree if a checkpoint landed between their directory
  // scans; rank 0's view decides.
  auto resume_t = at::full({1}, leader ? double(resume) : 0.0,
                           at::TensorOptions(at::kFloat).device(device));
  comm->Broadcast(resume_t, 0);
  const int64_t resume_step = std::llround(resume_t.cpu().item<float>());
  if (resume_step >= 0) {
    nlohmann::json state, rank_state;
    if (!checkpoints.Load(resume_step, &model, &optimizer, &state, &rank_state,
                          &error))
      return fail(error);
    step = state.value("step", int64_t{0});
    RestoreCpuRngState(rank_state.value("cpu_rng", ""));
    if (leader) log("resumed from " + checkpoints.StepDir(resume_step));
  } else {
    // Every rank builds the same weights from the seed; the broadcast makes
    // that a guarantee rather than an assumption.
    c10::NoGradGuard no_grad;
    at::Tensor flat = model.flat_params();
    comm->Broadcast(flat, 0);
  }

  std::string gpu_name;
  const double peak = PeakFlops(device, &gpu_name);
  if (leader) {
    char buf[512];
    snprintf(
        buf, sizeof(buf),
        "model=%s params=%lld device=%s%s dtype=%s world=%lld train_rows=%lld "
        "val_rows=%lld global_batch=%lld steps=%lld threads=%d torch=%s",
        model.name().c_str(), (long long)model.num_params(),
        device.str().c_str(),
        gpu_name.empty() ? "" : (" (" + gpu_name + ")").c_str(),
        bf16 ? "bf16" : "fp32", (long long)world, (long long)train.size(),
        (long long)validation.size(), (long long)global_batch,
        (long long)total_steps, at::get_num_threads(), TORCH_VERSION);
    log(buf);
  }

  auto save = [&](int64_t at_step) -> bool {
    nlohmann::json state = {
        {"step", at_step},
        {"epoch", at_step / steps_per_epoch},
        {"batch_in_epoch", at_step % steps_per_epoch},
        {"world_size", world},
        {"global_batch", global_batch},
        {"total_steps", total_steps},
        {"lr", LearningRate(t, std::max<int64_t>(0, at_step - 1), total_steps)},
        {"model", hf ? nlohmann::json{{"hf_model_dir", config.hf_model_dir},
                                      {"architecture", model.name()}}
                     : PresetToJson(preset)}};
    nlohmann::json rank_state = {
        {"rank", env.rank},
        {"epoch", at_step / steps_per_epoch},
        {"next_sample", (at_step % steps_per_epoch) * global_batch},
        {"cpu_rng", SaveCpuRngState()}};
    if (!checkpoints.Save(at_step, model, optimizer, state, rank_state,
                          &error)) {
      log("error: checkpoint: " + error);
      return false;
    }
    metrics.Write({{"step", at_step}, {"checkpoint_step", at_step}});
    if (leader) log("checkpoint step=" + std::to_string(at_step));
    return true;
  };
  auto evaluate = [&](int64_t at_step) -> EvalResult {
    EvalResult r;
    if (validation.size() == 0) return r;
    r = Evaluate(model, validation, comm.get(), t, device);
    metrics.Write({{"step", at_step},
                   {"eval_loss", r.loss},
                   {"eval_accuracy", r.accuracy}});
    if (leader) {
      char buf[160];
      snprintf(buf, sizeof(buf),
               "eval step=%lld eval_loss=%.4f eval_accuracy=%.4f samples=%lld",
               (long long)at_step, r.loss, r.accuracy, (long long)r.samples);
      log(buf);
    }
    return r;
  };

  const auto opts = at::TensorOptions(at::kFloat).device(device);
  at::Tensor window_loss = at::zeros({}, opts);  // summed micro-step losses
  at::Tensor grad_norm;
  int64_t window_steps = 0, window_tokens = 0, window_samples = 0;
  double window_flops = 0, last_loss = NAN;
  int64_t last_saved = resume_step;
  std::vector<int64_t> perm;
  int64_t perm_epoch = -1;
  auto window_start = Clock::now();
  const auto run_start = Clock::now();

  while (step < total_steps) {
    const int64_t epoch = step / steps_per_epoch, pos = step % steps_per_epoch;
    if (epoch != perm_epoch) {
      perm = Permutation(train.size(), t.seed, epoch);
      perm_epoch = epoch;
    }
    for (int64_t a = 0; a < accum; ++a) {
      std::vector<int64_t> rows(micro);
      const int64_t base = pos * global_batch + (a * world + env.rank) * micro;
      for (int64_t i = 0; i < micro; ++i) rows[i] = perm[base + i];
      Batch batch = train.Collate(rows, device);
      reducer.Prepare(a == accum - 1);
      at::Tensor loss = model.Loss(batch) / double(accum);
      loss.backward();
      window_loss.add_(loss.detach());
      window_tokens += batch.real_tokens;
      window_samples += micro;
      window_flops +=
          micro * model.TrainFlopsPerSample(int(batch.tokens.size(1)),
                                            int(batch.targets.numel() / micro));
    }
    reducer.Finish();
    at::Tensor grads = model.flat_grads();
    grad_norm = ClipGradNorm(grads, t.max_grad_norm);
    const double lr = LearningRate(t, step, total_steps);
    optimizer.Step(lr);
    {
      c10::NoGradGuard no_grad;
      grads.zero_();
    }
    ++step;
    ++window_steps;

    // Step 3: a stop on any rank stops all ranks after this same step.
    bool stopping = stop.load();
    if (world > 1) {
      auto flag = at::full({1}, stopping ? 1.0 : 0.0, opts);
      comm->AllReduceSum(flag);
      stopping = flag.cpu().item<float>() > 0;
    }

    if (step % t.logging_steps == 0 || step == total_steps || stopping) {
      auto stats = at::stack(
          {window_loss / double(window_steps), grad_norm.to(at::kFloat)});
      comm->AllReduceSum(stats);
      auto cpu = stats.cpu();  // the step's only host sync
      const double elapsed = Seconds(Clock::now() - window_start);
      last_loss = cpu.data_ptr<float>()[0] / world;
      const double gnorm = cpu.data_ptr<float>()[1] / world;
      nlohmann::json line = {
          {"step", step},
          {"epoch", double(step) / double(steps_per_epoch)},
          {"loss", last_loss},
          {"lr", lr},
          {"grad_norm", gnorm},
          {"tokens_per_s", window_tokens * world / elapsed},
          {"samples_per_s", window_samples * world / elapsed},
          {"step_time_s", elapsed / window_steps}};
      if (peak > 0)
        line["mfu"] = window_flops * world / elapsed / (peak * world);
      metrics.Write(line);
      if (leader) {
        char buf[256];
        snprintf(buf, sizeof(buf),
                 "step=%lld/%lld loss=%.4f lr=%.3g grad_norm=%.3f "
                 "samples_per_s=%.1f "
                 "tokens_per_s=%.0f step_time_s=%.3f%s",
                 (long long)step, (long long)total_steps, last_loss, lr, gnorm,
                 window_samples * world / elapsed,
                 window_tokens * world / elapsed, elapsed / window_steps,
                 peak > 0
                     ? (" mfu=" + std::to_string(window_flops / elapsed / peak))
                           .c_str()
                     : "");
        log(buf);
      }
      window_loss.zero_();
      window_steps = window_tokens = window_samples = 0;
      window_flops = 0;
      window_start = Clock::now();
    }
    if (t.eval_steps > 0 && step % t.eval_steps == 0 && step < total_steps)
      evaluate(step);
    if (t.save_steps > 0 && step % t.save_steps == 0 && step < total_steps) {
      if (!save(step)) return kExitError;
      last_saved = step;
    }
    if (stopping && step < total_steps) {
      if (last_saved != step && !save(step)) return kExitError;
      if (leader)
        log("stopped by signal at step=" + std::to_string(step) +
            ", exiting 75");
      return kExitRequeue;
    }
  }

  if (t.save_final_model && last_saved != step && !save(step))
    return kExitError;
  if (hf && t.save_final_model && leader) {
    // What participants upload: a directory transformers loads, next to
    // the checkpoints. A previous export (a rerun) is replaced whole.
    const std::string out = paths.output_dir + "/hf_model";
    HfExportOptions options;
    options.assets_dir = config.hf_model_dir;
    fs::remove_all(out + ".new", ec);
    if (!ExportHfCheckpoint(static_cast<const QwenVlTrainable&>(model).model(),
                            out + ".new", options, &error))
      return fail("export: " + error);
    fs::remove_all(out + ".old", ec);
    if (fs::exists(out)) fs::rename(out, out + ".old", ec);
    fs::rename(out + ".new", out, ec);
    if (ec) return fail("export: " + out + ": " + ec.message());
    fs::remove_all(out + ".old", ec);
    log("exported " + out);
  }
  EvalResult final_eval = evaluate(step);
  {
    // Every rank reports a checksum of its weights: ranks that stayed in
    // lockstep print the same value.
    auto cpu = model.flat_params().to(at::kCPU).contiguous();
    const uint8_t* p = reinterpret_cast<const uint8_t*>(cpu.data_ptr<float>());
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t i = 0; i < cpu.numel() * 4; ++i)
      h = (h ^ p[i]) * 0x100000001b3ull;
    char buf[64];
    snprintf(buf, sizeof(buf), "params_fnv64=%016llx", (unsigned long long)h);
    log(buf);
  }
  if (leader) {
    char buf[200];
    snprintf(buf, sizeof(buf),
             "done step=%lld loss=%.4f eval_accuracy=%.4f wall_s=%.1f",
             (long long)step, last_loss, final_eval.accuracy,
             Seconds(Clock::now() - run_start));
    log(buf);
  }
  return kExitOk;
}

// ATen's thread setting does not reach OpenBLAS, whose pool (one thread per
// core by default) would then fight the other ranks for the cores. The
// symbol is looked up at run time so other BLAS builds link unchanged.
void SetBlasThreads(int n) {
  for (const char* name :
       {"openblas_set_num_threads", "goto_set_num_threads"}) {
    if (auto fn =
            reinterpret_cast<void (*)(int)>(::dlsym(RTLD_DEFAULT, name))) {
      fn(n);
      return;
    }
  }
}

}  // namespace dcvlr::trainer
