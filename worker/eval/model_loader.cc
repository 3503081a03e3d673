// Checkpoint loading for inference; see model_loader.h.
#include "worker/eval/model_loader.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "worker/trainer/safetensors.h"

namespace dcvlr::eval {
namespace {

namespace fs = std::filesystem;

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t StepOf(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.rfind("step-", 0) != 0 || name.size() == 5) return -1;
  char* end = nullptr;
  long long v = std::strtoll(name.c_str() + 5, &end, 10);
  return (*end == '\0' && v >= 0) ? v : -1;
}

}  // namespace

bool ResolveCheckpointDir(const std::string& path, std::string* step_dir,
                          std::string* error) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    *error = "checkpoint " + path + ": not a directory";
    return false;
  }
  if (fs::exists(fs::path(path) / "model.safetensors", ec)) {
    if (!fs::exists(fs::path(path) / "COMMIT", ec)) {
      *error = "checkpoint " + path +
               ": not committed (no COMMIT marker; the save may not have "
               "finished)";
      return false;
    }
    *step_dir = path;
    return true;
  }
  int64_t best = -1;
  fs::path best_path;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    int64_t s = StepOf(entry.path());
    if (s > best && fs::exists(entry.path() / "COMMIT")) {
      best = s;
      best_path = entry.path();
    }
  }
  if (best < 0) {
    *error = "checkpoint " + path +
             ": no committed step-N directory and no model.safetensors";
    return false;
  }
  *step_dir = best_path.string();
  return true;
}

bool ReadCheckpointPreset(const std::string& step_dir,
                          trainer::ModelPreset* preset, std::string* error) {
  const std::string file = step_dir + "/trainer_state.json";
  std::ifstream in(file);
  std::stringstream buf;
  buf << in.rdbuf();
  auto state = nlohmann::json::parse(buf.str(), nullptr, false);
  if (!in || state.is_discarded() || !state.is_object()) {
    *error = file + ": missing or not JSON";
    return false;
  }
  if (!state.contains("model") || !state["model"].is_object()) {
    *error = file + ": no \"model\" configuration";
    return false;
  }
  nlohmann::json fields = state["model"];
  if (fields.contains("hf_model_dir")) {
    *error = file + ": a checkpoint of a Hugging Face model (" +
             fields.value("architecture", std::string("?")) + " from " +
             fields["hf_model_dir"].dump() +
             "); dcvlr-eval evaluates the built-in presets only so far (the "
             "run's export for transformers is <output_dir>/hf_model)";
    return false;
  }
  const std::string name = fields.value("name", std::string());
  fields.erase("name");
  // A known preset fills any field an older checkpoint did not record.
  trainer::ModelPreset p;
  if (!name.empty()) trainer::FindPreset(name, &p);
  p.name = name.empty() ? "custom" : name;
  std::string why;
  if (!trainer::ApplyPresetOverrides(fields, &p, &why) ||
      !trainer::ValidatePreset(p, &why)) {
    *error = file + ": model: " + why;
    return false;
  }
  *preset = p;
  return true;
}

bool LoadModelWeights(const std::string& step_dir, trainer::VlmModel* model,
                      std::string* error) {
  const std::string file = step_dir + "/model.safetensors";
  trainer::SafetensorsFile weights;
  if (!trainer::ReadSafetensors(file, &weights, error)) return false;
  c10::NoGradGuard no_grad;
  auto flat = at::empty({model->num_params()}, at::kFloat);
  std::set<std::string> used;
  for (const trainer::Parameter& p : model->parameters()) {
    const auto expected = p.tensor.sizes().vec();
    auto it = weights.tensors.find(p.name);
    if (it == weights.tensors.end()) {
      *error = file + ": tensor " + p.name + " is missing (the model expects " +
               ShapeString(expected) + ")";
      return false;
    }
    const trainer::TensorView& t = it->second;
    if (t.shape != expected) {
      *error = file + ": tensor " + p.name + " has shape " +
               ShapeString(t.shape) + " in the checkpoint, the model expects " +
               ShapeString(expected);
      return false;
    }
    if (t.dtype != "F32" || t.nbytes != size_t(p.tensor.numel()) * 4) {
      *error = file + ": tensor " + p.name + " is " + t.dtype + " with " +
               std::to_string(t.nbytes) + " bytes, expected F32 with " +
               std::to_string(p.tensor.numel() * 4);
      return false;
    }
    std::memcpy(flat.data_ptr<float>() + p.offset, t.data, t.nbytes);
    used.insert(p.name);
  }
  for (const auto& [name, t] : weights.tensors)
    if (!used.count(name)) {
      *error = file + ": tensor " + name + " (shape " + ShapeString(t.shape) +
               ") is not part of the model";
      return false;
    }
  const_cast<at::Tensor&>(model->flat_params()).copy_(flat);
  return true;
}

}  // namespace dcvlr::eval
