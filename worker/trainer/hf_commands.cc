// dcvlr-train hf-export and hf-forward; see hf_commands.h.
#include "worker/trainer/hf_commands.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>

#include "worker/trainer/bpe_tokenizer.h"
#include "worker/trainer/hf_checkpoint.h"
#include "worker/trainer/hf_export.h"
#include "worker/trainer/qwen_vl_model.h"
#include "worker/trainer/safetensors.h"
#include "worker/trainer/trainer.h"

namespace dcvlr::trainer {
namespace {

// --key value pairs after the subcommand; false (with a message) on a
// flag that is not in `known` or has no value.
bool ParseFlags(int argc, char** argv, const char* command,
                std::initializer_list<const char*> known,
                std::initializer_list<const char*> switches,
                std::map<std::string, std::string>* out) {
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    bool is_switch = false;
    for (const char* s : switches) is_switch |= a == s;
    if (is_switch) {
      (*out)[a] = "1";
      continue;
    }
    bool ok = false;
    for (const char* k : known) ok |= a == k;
    if (!ok || i + 1 >= argc) {
      fprintf(stderr, "dcvlr-train %s: %s %s\n", command,
              ok ? "no value for" : "unknown flag", a.c_str());
      return false;
    }
    (*out)[a] = argv[++i];
  }
  return true;
}

bool ParseDtype(const std::string& s, at::ScalarType* out) {
  if (s == "bf16" || s == "bfloat16")
    *out = at::kBFloat16;
  else if (s == "f16" || s == "float16")
    *out = at::kHalf;
  else if (s == "f32" || s == "float32")
    *out = at::kFloat;
  else
    return false;
  return true;
}

bool ParseBytes(const std::string& s, int64_t* out) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  std::string unit = end ? end : "";
  double scale = unit.empty() || unit == "B"   ? 1
                 : unit == "K" || unit == "KB" ? 1e3
                 : unit == "M" || unit == "MB" ? 1e6
                 : unit == "G" || unit == "GB" ? 1e9
                 : unit == "KiB"               ? 1024.0
                 : unit == "MiB"               ? 1048576.0
                 : unit == "GiB"               ? 1073741824.0
                                               : -1;
  if (end == s.c_str() || scale < 0 || v <= 0) return false;
  *out = static_cast<int64_t>(v * scale);
  return true;
}

std::unique_ptr<QwenVlModel> LoadModel(const std::string& dir,
                                       at::Device device, at::ScalarType dtype,
                                       const char* command) {
  QwenVlConfig config;
  HfCheckpoint ckpt;
  std::string error;
  std::unique_ptr<QwenVlModel> model;
  if (LoadQwenVlConfig(dir, &config, &error) &&
      ReadHfCheckpoint(dir, &ckpt, &error))
    model = QwenVlModel::Load(config, ckpt, device, dtype, &error);
  if (!model) fprintf(stderr, "dcvlr-train %s: %s\n", command, error.c_str());
  return model;
}

}  // namespace

int HfExportMain(int argc, char** argv) {
  std::map<std::string, std::string> f;
  if (!ParseFlags(argc, argv, "hf-export",
                  {"--model", "--out", "--dtype", "--max-shard-size"}, {}, &f))
    return kExitBadConfig;
  HfExportOptions options;
  if (!f.count("--model") || !f.count("--out") ||
      (f.count("--dtype") && !ParseDtype(f["--dtype"], &options.dtype)) ||
      (f.count("--max-shard-size") &&
       !ParseBytes(f["--max-shard-size"], &options.max_shard_bytes))) {
    fprintf(stderr,
            "usage: dcvlr-train hf-export --model DIR --out DIR "
            "[--dtype bf16|f16|f32] [--max-shard-size BYTES[K|M|G]]\n");
    return kExitBadConfig;
  }
  options.assets_dir = f["--model"];
  try {
    auto model = LoadModel(f["--model"], at::kCPU, at::kFloat, "hf-export");
    if (!model) return kExitBadConfig;
    std::string error;
    if (!ExportHfCheckpoint(*model, f["--out"], options, &error)) {
      fprintf(stderr, "dcvlr-train hf-export: %s\n", error.c_str());
      return kExitError;
    }
  } catch (const std::exception& e) {
    fprintf(stderr, "dcvlr-train hf-export: %s\n", e.what());
    return kExitError;
  }
  printf("dcvlr-train hf-export: wrote %s\n", f["--out"].c_str());
  return kExitOk;
}

int HfForwardMain(int argc, char** argv) {
  std::map<std::string, std::string> f;
  if (!ParseFlags(argc, argv, "hf-forward",
                  {"--model", "--inputs", "--out", "--device", "--dtype"},
                  {"--adamw-step"}, &f))
    return kExitBadConfig;
  at::ScalarType dtype = at::kFloat;
  if (!f.count("--model") || !f.count("--inputs") || !f.count("--out") ||
      (f.count("--dtype") && !ParseDtype(f["--dtype"], &dtype))) {
    fprintf(stderr,
            "usage: dcvlr-train hf-forward --model DIR --inputs FILE "
            "--out FILE [--device cpu|cuda] [--dtype f32|bf16] "
            "[--adamw-step]\n");
    return kExitBadConfig;
  }
  try {
    at::Device device(f.count("--device") ? f["--device"] : "cpu");
    auto model = LoadModel(f["--model"], device, dtype, "hf-forward");
    if (!model) return kExitBadConfig;
    SafetensorsFile file;
    std::string error;
    if (!ReadSafetensors(f["--inputs"], &file, &error)) {
      fprintf(stderr, "dcvlr-train hf-forward: %s\n", error.c_str());
      return kExitBadConfig;
    }
    std::map<std::string, at::Tensor> in;
    for (const auto& [name, t] : file.tensors) {
      at::Tensor host = TensorFromView(t);
      if (!host.defined()) {
        fprintf(stderr, "dcvlr-train hf-forward: %s: tensor %s: dtype %s\n",
                f["--inputs"].c_str(), name.c_str(), t.dtype.c_str());
        return kExitBadConfig;
      }
      in[name] = host.to(device);
    }
    QwenVlInputs inputs;
    inputs.input_ids = in.at("input_ids");
    if (in.count("attention_mask"))
      inputs.attention_mask = in["attention_mask"];
    if (in.count("pixel_values")) inputs.pixel_values = in["pixel_values"];
    if (in.count("image_grid_thw"))
      inputs.image_grid_thw = in["image_grid_thw"];

    std::map<std::string, at::Tensor> out;
    {
      c10::NoGradGuard no_grad;
      out["logits"] = model->Forward(inputs);
      if (inputs.pixel_values.defined())
        out["image_embeds"] =
            model->ImageEmbeddings(inputs.pixel_values, inputs.image_grid_thw)
                .to(at::kFloat);
      auto [pos, deltas] = model->RopeIndex(inputs);
      out["position_ids"] = pos;
      out["rope_deltas"] = deltas;
      if (in.count("labels"))
        out["loss"] = CausalLmLoss(out["logits"], in["labels"]).reshape({1});
    }
    if (f.count("--adamw-step") && in.count("labels")) {
      std::vector<at::Tensor> params;
      for (const auto& [name, p] : model->parameters()) {
        p.requires_grad_(true);
        params.push_back(p);
      }
      at::Tensor loss = CausalLmLoss(model->Forward(inputs), in["labels"]);
      loss.backward();
      c10::NoGradGuard no_grad;
      at::Tensor sq = at::zeros({}, at::TensorOptions().device(device));
      for (const at::Tensor& p : params)
        sq = sq + p.grad().to(at::kFloat).pow(2).sum();
      out["grad_norm"] = sq.sqrt().reshape({1});
      // torch.optim.AdamW's first step: decay, then lr * g / (|g| + eps).
      for (at::Tensor& p : params) {
        at::Tensor g = p.grad().to(at::kFloat);
        at::Tensor w =
            p.to(at::kFloat) * (1 - 1e-3 * 0.1) - 1e-3 * g / (g.abs() + 1e-8);
        p.copy_(w);
      }
      out["loss_after_step"] =
          CausalLmLoss(model->Forward(inputs), in["labels"]).reshape({1});
    }
    std::vector<at::Tensor> keep;
    std::vector<TensorView> views;
    for (auto& [name, t] : out) {
      at::Tensor host = t.to(at::kCPU).contiguous();
      keep.push_back(host);
      TensorView v;
      v.name = name;
      v.dtype = host.scalar_type() == at::kLong ? "I64" : "F32";
      if (v.dtype == "F32") host = keep.back() = host.to(at::kFloat);
      v.shape.assign(host.sizes().begin(), host.sizes().end());
      v.data = host.data_ptr();
      v.nbytes = host.numel() * host.element_size();
      views.push_back(std::move(v));
    }
    if (!WriteSafetensors(f["--out"], views, {}, &error)) {
      fprintf(stderr, "dcvlr-train hf-forward: %s\n", error.c_str());
      return kExitError;
    }
  } catch (const std::exception& e) {
    fprintf(stderr, "dcvlr-train hf-forward: %s\n", e.what());
    return kExitError;
  }
  return kExitOk;
}

int TokenizeMain(int argc, char** argv) {
  std::map<std::string, std::string> f;
  if (!ParseFlags(argc, argv, "tokenize", {"--tokenizer"}, {}, &f) ||
      !f.count("--tokenizer")) {
    fprintf(stderr, "usage: dcvlr-train tokenize --tokenizer PATH < lines\n");
    return kExitBadConfig;
  }
  std::string error;
  auto tokenizer = BpeTokenizer::Load(f["--tokenizer"], &error);
  if (!tokenizer) {
    fprintf(stderr, "dcvlr-train tokenize: %s\n", error.c_str());
    return kExitBadConfig;
  }
  std::string line, out;
  while (std::getline(std::cin, line)) {
    out.clear();
    for (uint32_t id : tokenizer->Encode(line)) {
      if (!out.empty()) out += ' ';
      out += std::to_string(id);
    }
    out += '\n';
    fwrite(out.data(), 1, out.size(), stdout);
  }
  return fflush(stdout) == 0 ? kExitOk : kExitError;
}

}  // namespace dcvlr::trainer
