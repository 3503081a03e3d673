// Model presets: Qwen2-VL-shaped architectures as plain data, so a larger
// model is a config change (`model.model_name` picks a preset and
// `model.model_config` overrides any field).
#ifndef DCVLR_WORKER_TRAINER_PRESETS_H_
#define DCVLR_WORKER_TRAINER_PRESETS_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dcvlr::trainer {

struct ModelPreset {
  std::string name;
  // Vision tower: square RGB images cut into patch x patch tiles, a learned
  // position table, pre-norm transformer blocks with a GELU MLP.
  int image_size = 32;
  int patch_size = 4;
  int vision_width = 128;
  int vision_layers = 2;
  int vision_heads = 4;
  int vision_mlp = 512;
  // Merger: each merge x merge group of patches -> one LM token.
  int merge_size = 2;
  int merger_hidden = 256;
  // Qwen2 decoder.
  int vocab_size = 320;
  int hidden = 256;
  int layers = 4;
  int heads = 8;
  int kv_heads = 2;
  int intermediate = 704;
  double rms_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_embeddings = false;
  int max_seq_len = 96;

  int patches_per_side() const { return image_size / patch_size; }
  int num_patches() const { return patches_per_side() * patches_per_side(); }
  int image_tokens() const { return num_patches() / (merge_size * merge_size); }
  int head_dim() const { return hidden / heads; }

  // Parameter count of the model built from this preset (matches the model).
  int64_t ParamCount() const;
  // Training FLOPs (forward + backward) of one sample with `seq_len` decoder
  // tokens of which `scored` go through the lm_head (the model computes
  // logits only where the loss needs them), vision tower included; see
  // presets.cc for the formula.
  double TrainFlopsPerSample(int seq_len, int scored) const;
};

// Names of the built-in presets.
std::vector<std::string> PresetNames();

// Finds a built-in preset; false if there is none of that name.
bool FindPreset(const std::string& name, ModelPreset* out);

// Applies overrides (keys are the field names above); false with a message
// naming the key on an unknown key or a wrong type.
bool ApplyPresetOverrides(const nlohmann::json& overrides, ModelPreset* preset,
                          std::string* error);

// Checks divisibility constraints; false with a message if violated.
bool ValidatePreset(const ModelPreset& preset, std::string* error);

nlohmann::json PresetToJson(const ModelPreset& preset);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_PRESETS_H_
