// The architecture of a Qwen2-VL or Qwen2.5-VL checkpoint, read from its
// Hugging Face config.json. Both layouts transformers reads are accepted:
// the Hub's flat one (text keys at the top, `rope_scaling.mrope_section`)
// and the nested one transformers 5 writes (`text_config`,
// `rope_parameters`). Torch-free.
#ifndef DCVLR_WORKER_TRAINER_QWEN_VL_CONFIG_H_
#define DCVLR_WORKER_TRAINER_QWEN_VL_CONFIG_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace dcvlr::trainer {

enum class QwenVlKind {
  kQwen2Vl,   // Qwen2VLForConditionalGeneration
  kQwen2_5Vl  // Qwen2_5_VLForConditionalGeneration
};

struct QwenVisionConfig {
  int64_t depth = 0;
  int64_t width = 0;       // embed_dim (2-VL) / hidden_size (2.5-VL)
  int64_t heads = 0;       // num_heads
  int64_t mlp_hidden = 0;  // embed_dim * mlp_ratio (2-VL) / intermediate_size
  int64_t out_width = 0;   // the decoder's width: hidden_size / out_hidden_size
  int64_t in_channels = 3;
  int64_t patch_size = 14;
  int64_t temporal_patch_size = 2;
  int64_t spatial_merge_size = 2;
  std::string act;  // quick_gelu (2-VL), silu (2.5-VL)
  double rope_theta = 10000.0;
  // Qwen2.5-VL's window attention: blocks not listed attend within windows
  // of window_size pixels (window_size / patch_size / spatial_merge_size
  // merged patches a side).
  int64_t window_size = 0;
  std::vector<int64_t> fullatt_blocks;
  int64_t tokens_per_second = 0;

  int64_t head_dim() const { return width / heads; }
  int64_t patch_dim() const {
    return in_channels * temporal_patch_size * patch_size * patch_size;
  }
  int64_t merge_unit() const { return spatial_merge_size * spatial_merge_size; }
};

struct QwenTextConfig {
  int64_t vocab_size = 0;
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;  // hidden / heads
  double rms_eps = 1e-6;
  double rope_theta = 10000.0;
  // Rotary frequencies given to the temporal, height and width positions;
  // they add up to head_dim / 2.
  std::array<int64_t, 3> mrope_section{};
  bool tie_embeddings = false;
  std::string act = "silu";
  int64_t max_positions = 0;
};

struct QwenVlConfig {
  QwenVlKind kind = QwenVlKind::kQwen2Vl;
  std::string architecture;  // as in config.json's "architectures"
  std::string model_type;    // qwen2_vl / qwen2_5_vl
  std::string dtype;         // torch_dtype / dtype, e.g. "bfloat16"
  QwenTextConfig text;
  QwenVisionConfig vision;
  int64_t image_token_id = 151655;
  int64_t video_token_id = 151656;
  int64_t vision_start_token_id = 151652;
  int64_t vision_end_token_id = 151653;
  int64_t bos_token_id = 151643;
  int64_t eos_token_id = 151645;
};

// Parses config.json's text; `source` names it in errors, which say where
// the problem is: "SOURCE:LINE:COL: ..." for malformed JSON, "SOURCE: key
// 'text_config.num_attention_heads': ..." for a missing or bad value.
bool ParseQwenVlConfig(const std::string& text, const std::string& source,
                       QwenVlConfig* out, std::string* error);

// Reads `path`: a config.json, or a checkpoint directory holding one.
bool LoadQwenVlConfig(const std::string& path, QwenVlConfig* out,
                      std::string* error);

// config.json as the Hub's Qwen checkpoints spell it (flat text keys,
// rope_scaling with mrope_section), which every transformers version reads.
std::string QwenVlConfigJson(const QwenVlConfig& config);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_QWEN_VL_CONFIG_H_
