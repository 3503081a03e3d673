// Built-in presets and their arithmetic; see presets.h.
#include "worker/trainer/presets.h"

#include "common/process_contract.h"

namespace dcvlr::trainer {
namespace {

ModelPreset TinyVlm() {
  // The demo and benchmark model (docs/architecture.md "The native trainer
  // and evaluator"); the defaults in presets.h are it.
  ModelPreset p;
  p.name = "tiny-vlm";
  return p;
}

// Qwen2-0.5B's decoder (tied embeddings, its full vocabulary so the lm_head
// costs what it costs in the real model; the byte tokenizer uses the first
// 320 rows) behind a ViT-B-sized vision tower on 224px images.
ModelPreset Qwen2VlHalfB() {
  ModelPreset p;
  p.name = "qwen2-vl-0.5b";
  p.image_size = 224;
  p.patch_size = 14;
  p.vision_width = 768;
  p.vision_layers = 12;
  p.vision_heads = 12;
  p.vision_mlp = 3072;
  p.merger_hidden = 3072;
  p.vocab_size = 151936;
  p.hidden = 896;
  p.layers = 24;
  p.heads = 14;
  p.kv_heads = 2;
  p.intermediate = 4864;
  p.rope_theta = 1000000.0;
  p.tie_embeddings = true;
  p.max_seq_len = 1024;
  return p;
}

// Qwen2-VL-2B's shapes: a 32-block, 1280-wide vision tower and Qwen2-1.5B's
// decoder, at a fixed 224px resolution.
ModelPreset Qwen2Vl2B() {
  ModelPreset p;
  p.name = "qwen2-vl-2b";
  p.image_size = 224;
  p.patch_size = 14;
  p.vision_width = 1280;
  p.vision_layers = 32;
  p.vision_heads = 16;
  p.vision_mlp = 5120;
  p.merger_hidden = 5120;
  p.vocab_size = 151936;
  p.hidden = 1536;
  p.layers = 28;
  p.heads = 12;
  p.kv_heads = 2;
  p.intermediate = 8960;
  p.rope_theta = 1000000.0;
  p.tie_embeddings = true;
  p.max_seq_len = 2048;
  return p;
}

template <typename T>
bool Set(const nlohmann::json& v, const std::string& key, T* field,
         std::string* error) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) {
      *error =
          "model.model_config." + key + ": expected a boolean, got " + v.dump();
      return false;
    }
    *field = v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) {
      *error = "model.model_config." + key + ": expected an integer, got " +
               v.dump();
      return false;
    }
    *field = v.get<T>();
  } else {
    if (!v.is_number()) {
      *error =
          "model.model_config." + key + ": expected a number, got " + v.dump();
      return false;
    }
    *field = v.get<T>();
  }
  return true;
}

}  // namespace

int64_t ModelPreset::ParamCount() const {
  int64_t pd = int64_t(patch_size) * patch_size * 3;
  int64_t vw = vision_width;
  int64_t vision = pd * vw + vw + int64_t(num_patches()) * vw;
  int64_t vblock = 2 * vw + (vw * 3 * vw + 3 * vw) + (vw * vw + vw) +
                   (vw * vision_mlp + vision_mlp) +
                   (int64_t(vision_mlp) * vw + vw);
  vision += vision_layers * vblock;
  int64_t mi = vw * merge_size * merge_size;
  int64_t merger = vw + mi * merger_hidden + merger_hidden +
                   int64_t(merger_hidden) * hidden + hidden;
  int64_t h = hidden, kv = int64_t(kv_heads) * head_dim();
  int64_t layer =
      2 * h + (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * intermediate;
  int64_t decoder = int64_t(vocab_size) * h + layers * layer + h;
  if (!tie_embeddings) decoder += int64_t(vocab_size) * h;
  return vision + merger + decoder;
}

// 6 FLOPs per parameter per token for the matmuls (2 forward, 4 backward)
// plus attention's score and value products, 12 * layers * width * seq_len
// per token (PaLM's accounting, causal masking not discounted). The embedding
// lookup and the position table do no matmul work and are left out.
double ModelPreset::TrainFlopsPerSample(int seq_len, int scored) const {
  double vw = vision_width, pd = double(patch_size) * patch_size * 3;
  double vmat = pd * vw + vision_layers * (4 * vw * vw + 2 * vw * vision_mlp);
  double n = num_patches();
  double vision = n * (6 * vmat + 12 * vision_layers * vw * n);
  double mi = vw * merge_size * merge_size;
  double merger = image_tokens() * 6 *
                  (mi * merger_hidden + double(merger_hidden) * hidden);
  double h = hidden, kv = double(kv_heads) * head_dim();
  double dmat = layers * (2 * h * h + 2 * h * kv + 3 * h * intermediate);
  double decoder = seq_len * (6 * dmat + 12 * layers * h * seq_len) +
                   scored * 6.0 * double(vocab_size) * h;
  return vision + merger + decoder;
}

std::vector<std::string> PresetNames() {
  return {contract::kNativeModels.begin(), contract::kNativeModels.end()};
}

bool FindPreset(const std::string& name, ModelPreset* out) {
  if (name == "tiny-vlm")
    *out = TinyVlm();
  else if (name == "qwen2-vl-0.5b")
    *out = Qwen2VlHalfB();
  else if (name == "qwen2-vl-2b")
    *out = Qwen2Vl2B();
  else
    return false;
  return true;
}

bool ApplyPresetOverrides(const nlohmann::json& overrides, ModelPreset* p,
                          std::string* error) {
  if (!overrides.is_object()) {
    *error = "model.model_config: expected a mapping, got " + overrides.dump();
    return false;
  }
  for (const auto& [key, v] : overrides.items()) {
    bool ok;
    if (key == "image_size")
      ok = Set(v, key, &p->image_size, error);
    else if (key == "patch_size")
      ok = Set(v, key, &p->patch_size, error);
    else if (key == "vision_width")
      ok = Set(v, key, &p->vision_width, error);
    else if (key == "vision_layers")
      ok = Set(v, key, &p->vision_layers, error);
    else if (key == "vision_heads")
      ok = Set(v, key, &p->vision_heads, error);
    else if (key == "vision_mlp")
      ok = Set(v, key, &p->vision_mlp, error);
    else if (key == "merge_size")
      ok = Set(v, key, &p->merge_size, error);
    else if (key == "merger_hidden")
      ok = Set(v, key, &p->merger_hidden, error);
    else if (key == "vocab_size")
      ok = Set(v, key, &p->vocab_size, error);
    else if (key == "hidden")
      ok = Set(v, key, &p->hidden, error);
    else if (key == "layers")
      ok = Set(v, key, &p->layers, error);
    else if (key == "heads")
      ok = Set(v, key, &p->heads, error);
    else if (key == "kv_heads")
      ok = Set(v, key, &p->kv_heads, error);
    else if (key == "intermediate")
      ok = Set(v, key, &p->intermediate, error);
    else if (key == "rms_eps")
      ok = Set(v, key, &p->rms_eps, error);
    else if (key == "rope_theta")
      ok = Set(v, key, &p->rope_theta, error);
    else if (key == "tie_embeddings")
      ok = Set(v, key, &p->tie_embeddings, error);
    else if (key == "max_seq_len")
      ok = Set(v, key, &p->max_seq_len, error);
    else {
      *error = "model.model_config." + key + ": unknown model field";
      return false;
    }
    if (!ok) return false;
  }
  return true;
}

bool ValidatePreset(const ModelPreset& p, std::string* error) {
  auto fail = [&](const std::string& m) {
    *error = "model " + p.name + ": " + m;
    return false;
  };
  if (p.image_size % p.patch_size != 0)
    return fail("image_size must be a multiple of patch_size");
  if (p.patches_per_side() % p.merge_size != 0)
    return fail("patches per side must be a multiple of merge_size");
  if (p.vision_width % p.vision_heads != 0)
    return fail("vision_width must divide by vision_heads");
  if (p.hidden % p.heads != 0) return fail("hidden must divide by heads");
  if (p.heads % p.kv_heads != 0) return fail("heads must divide by kv_heads");
  if (p.head_dim() % 2 != 0) return fail("head dim must be even for RoPE");
  if (p.vocab_size < 320)
    return fail("vocab_size must be at least 320 (bytes + specials)");
  if (p.max_seq_len < p.image_tokens() + 16)
    return fail("max_seq_len too short for the image");
  return true;
}

nlohmann::json PresetToJson(const ModelPreset& p) {
  return {{"name", p.name},
          {"image_size", p.image_size},
          {"patch_size", p.patch_size},
          {"vision_width", p.vision_width},
          {"vision_layers", p.vision_layers},
          {"vision_heads", p.vision_heads},
          {"vision_mlp", p.vision_mlp},
          {"merge_size", p.merge_size},
          {"merger_hidden", p.merger_hidden},
          {"vocab_size", p.vocab_size},
          {"hidden", p.hidden},
          {"layers", p.layers},
          {"heads", p.heads},
          {"kv_heads", p.kv_heads},
          {"intermediate", p.intermediate},
          {"rms_eps", p.rms_eps},
          {"rope_theta", p.rope_theta},
          {"tie_embeddings", p.tie_embeddings},
          {"max_seq_len", p.max_seq_len}};
}

}  // namespace dcvlr::trainer
