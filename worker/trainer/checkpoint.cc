// Checkpoint save/load; see checkpoint.h.
#include "worker/trainer/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "worker/trainer/base64.h"
#include "worker/trainer/safetensors.h"

namespace dcvlr::trainer {
namespace {

namespace fs = std::filesystem;
constexpr char kCommit[] = "COMMIT";

bool WriteFileSynced(const std::string& path, const std::string& content,
                     std::string* error) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  bool ok =
      fd >= 0 &&
      ::write(fd, content.data(), content.size()) == ssize_t(content.size()) &&
      ::fsync(fd) == 0;
  if (fd >= 0) ok = (::close(fd) == 0) && ok;
  if (!ok) *error = path + ": write failed: " + std::strerror(errno);
  return ok;
}

void SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

bool ReadJson(const std::string& path, nlohmann::json* out,
              std::string* error) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  *out = nlohmann::json::parse(buf.str(), nullptr, false);
  if (!in || out->is_discarded()) {
    *error = path + ": missing or not JSON";
    return false;
  }
  return true;
}

int64_t StepOf(const fs::path& p) {
  std::string name = p.filename().string();
  if (name.rfind("step-", 0) != 0) return -1;
  char* end = nullptr;
  long long v = std::strtoll(name.c_str() + 5, &end, 10);
  return (*end == '\0' && v >= 0) ? v : -1;
}

}  // namespace

CheckpointManager::CheckpointManager(std::string dir, int keep_last,
                                     Communicator* comm)
    : dir_(std::move(dir)), keep_last_(keep_last), comm_(comm) {}

std::string CheckpointManager::StepDir(int64_t step) const {
  return (fs::path(dir_) / ("step-" + std::to_string(step))).string();
}

bool CheckpointManager::Save(int64_t step, const TrainableModel& model,
                             FlatAdamW& optimizer,
                             const nlohmann::json& trainer_state,
                             const nlohmann::json& rank_state,
                             std::string* error) {
  const std::string dir = StepDir(step);
  const bool leader = comm_->rank() == 0;
  bool ok = true;
  comm_->Barrier();
  if (leader) {
    std::error_code ec;
    fs::remove_all(dir, ec);  // an incomplete attempt at this step
    fs::create_directories(dir, ec);
    if (ec) {
      *error = dir + ": " + ec.message();
      ok = false;
    }
  }
  comm_->Barrier();
  if (ok && leader) {
    auto params = model.flat_params().to(at::kCPU).contiguous();
    std::vector<TensorView> views;
    for (const Parameter& p : model.parameters())
      views.push_back({p.name, "F32", p.tensor.sizes().vec(),
                       params.data_ptr<float>() + p.offset,
                       size_t(p.tensor.numel()) * 4});
    ok = WriteSafetensors(dir + "/model.safetensors", views,
                          {{"format", "pt"}, {"model", model.name()}}, error);
    auto m = optimizer.exp_avg().to(at::kCPU).contiguous();
    auto v = optimizer.exp_avg_sq().to(at::kCPU).contiguous();
    std::vector<TensorView> opt = {{"exp_avg",
                                    "F32",
                                    {m.numel()},
                                    m.data_ptr<float>(),
                                    size_t(m.numel()) * 4},
                                   {"exp_avg_sq",
                                    "F32",
                                    {v.numel()},
                                    v.data_ptr<float>(),
                                    size_t(v.numel()) * 4}};
    ok = ok &&
         WriteSafetensors(dir + "/optimizer.safetensors", opt,
                          {{"step", std::to_string(optimizer.step())}}, error);
    ok = ok && WriteFileSynced(dir + "/trainer_state.json",
                               trainer_state.dump(2) + "\n", error);
  }
  if (ok)
    ok = WriteFileSynced(
        dir + "/rank-" + std::to_string(comm_->rank()) + ".json",
        rank_state.dump() + "\n", error);
  // Every rank's files are durable before the marker exists.
  comm_->Barrier();
  if (leader && ok) {
    ok = WriteFileSynced(dir + "/" + kCommit + ".tmp",
                         std::to_string(step) + "\n", error);
    std::error_code ec;
    if (ok) fs::rename(dir + "/" + kCommit + ".tmp", dir + "/" + kCommit, ec);
    if (ec) {
      *error = dir + ": commit rename failed: " + ec.message();
      ok = false;
    }
    SyncDir(dir);
    SyncDir(dir_);
    if (ok) Prune();
  }
  comm_->Barrier();
  return ok;
}

int64_t CheckpointManager::LatestComplete() const {
  int64_t best = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    int64_t s = StepOf(entry.path());
    if (s > best && fs::exists(entry.path() / kCommit)) best = s;
  }
  return best;
}

void CheckpointManager::Prune() const {
  if (keep_last_ <= 0) return;
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    int64_t s = StepOf(entry.path());
    if (s >= 0 && fs::exists(entry.path() / kCommit)) steps.push_back(s);
  }
  std::sort(steps.rbegin(), steps.rend());
  for (size_t i = keep_last_; i < steps.size(); ++i) {
    // Un-commit first, so a crash mid-delete never leaves a half checkpoint
    // that looks complete.
    fs::remove(fs::path(StepDir(steps[i])) / kCommit, ec);
    fs::remove_all(StepDir(steps[i]), ec);
  }
}

bool CheckpointManager::Load(int64_t step, TrainableModel* model,
                             FlatAdamW* optimizer,
                             nlohmann::json* trainer_state,
                             nlohmann::json* rank_state,
                             std::string* error) const {
  const std::string dir = StepDir(step);
  if (!ReadJson(dir + "/trainer_state.json", trainer_state, error))
    return false;
  if (trainer_state->value("world_size", 0) != comm_->world_size()) {
    *error = dir + ": saved with world_size " +
             std::to_string(trainer_state->value("world_size", 0)) +
             ", running with " + std::to_string(comm_->world_size()) +
             " (bit-exact resume needs the same world size)";
    return false;
  }
  if (!ReadJson(dir + "/rank-" + std::to_string(comm_->rank()) + ".json",
                rank_state, error))
    return false;
  SafetensorsFile weights, opt;
  if (!ReadSafetensors(dir + "/model.safetensors", &weights, error) ||
      !ReadSafetensors(dir + "/optimizer.safetensors", &opt, error))
    return false;
  c10::NoGradGuard no_grad;
  auto flat = at::empty({model->num_params()}, at::kFloat);
  for (const Parameter& p : model->parameters()) {
    auto it = weights.tensors.find(p.name);
    if (it == weights.tensors.end() || it->second.dtype != "F32" ||
        it->second.nbytes != size_t(p.tensor.numel()) * 4) {
      *error = dir + "/model.safetensors: missing or mismatched " + p.name;
      return false;
    }
    std::memcpy(flat.data_ptr<float>() + p.offset, it->second.data,
                it->second.nbytes);
  }
  const_cast<at::Tensor&>(model->flat_params()).copy_(flat);
  for (auto [name, dst] :
       {std::pair<const char*, at::Tensor*>{"exp_avg", &optimizer->exp_avg()},
        {"exp_avg_sq", &optimizer->exp_avg_sq()}}) {
    auto it = opt.tensors.find(name);
    if (it == opt.tensors.end() ||
        it->second.nbytes != size_t(dst->numel()) * 4) {
      *error = dir + "/optimizer.safetensors: missing or mismatched " + name;
      return false;
    }
    std::memcpy(flat.data_ptr<float>(), it->second.data, it->second.nbytes);
    dst->copy_(flat);
  }
  optimizer->set_step(std::stoll(opt.metadata["step"]));
  return true;
}

std::string SaveCpuRngState() {
  auto state = at::detail::getDefaultCPUGenerator().get_state().contiguous();
  const uint8_t* p = state.data_ptr<uint8_t>();
  return Base64Encode(std::vector<uint8_t>(p, p + state.numel()));
}

bool RestoreCpuRngState(const std::string& encoded) {
  auto bytes = Base64Decode(encoded);
  if (!bytes || bytes->empty()) return false;
  auto t = at::empty({int64_t(bytes->size())}, at::kByte);
  std::memcpy(t.data_ptr<uint8_t>(), bytes->data(), bytes->size());
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(t);
  return true;
}

}  // namespace dcvlr::trainer
