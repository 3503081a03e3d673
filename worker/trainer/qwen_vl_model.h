// Qwen2-VL and Qwen2.5-VL as transformers computes them, built from a
// QwenVlConfig and loaded from a Hugging Face checkpoint by the Hub's
// tensor names:
//
//   vision tower  Conv3d patch embedding (bias-free, [temporal_patch_size,
//                 patch_size, patch_size]) over flattened patches, 2D rotary
//                 positions (height, width), blocks of LayerNorm + quick_gelu
//                 MLP (2-VL) or RMSNorm + gated SiLU MLP with window
//                 attention outside fullatt_block_indexes (2.5-VL), each
//                 image frame attended separately; the 2x2 patch merger.
//   decoder       Qwen2: RMSNorm, q/k/v with bias, GQA, SwiGLU, M-RoPE
//                 positions from get_rope_index (temporal, height and width
//                 rotary sections), tied or untied lm_head.
//
// Images reach it as transformers' processor emits them: pixel_values
// [patches, channels * temporal_patch_size * patch_size^2], patches ordered
// frame by frame, then by 2x2 merge group, row-major; image_grid_thw
// [images, 3]. Each image's (t*h*w)/4 merged patches replace that many
// image_token_id tokens, in order. Videos are not supported yet.
//
// Compute runs in the parameters' dtype with transformers' fp32 islands
// (norm statistics, rotary angles, softmax). Not thread-safe.
#ifndef DCVLR_WORKER_TRAINER_QWEN_VL_MODEL_H_
#define DCVLR_WORKER_TRAINER_QWEN_VL_MODEL_H_

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "worker/trainer/hf_checkpoint.h"
#include "worker/trainer/qwen_vl_config.h"

namespace dcvlr::trainer {

struct QwenVlInputs {
  at::Tensor input_ids;       // int64 [B, L]
  at::Tensor attention_mask;  // int64 or bool [B, L], 1 on real tokens;
                              // undefined means every token is real
  at::Tensor pixel_values;    // float [patches, patch_dim]; may be undefined
  at::Tensor image_grid_thw;  // int64 [images, 3]
};

using ParameterShape = std::pair<std::string, std::vector<int64_t>>;

class QwenVlModel {
 public:
  // The Hub name and shape of every parameter `config` has, in a fixed
  // order (lm_head.weight only when embeddings are untied).
  static std::vector<ParameterShape> ParameterShapes(
      const QwenVlConfig& config);

  // The checkpoint's weights, checked against the config (a missing,
  // unexpected or mis-shaped tensor, or a dtype other than F32/BF16/F16, is
  // an error naming it and its file), as CPU tensors in the file's dtype
  // that view the checkpoint's mapping: no copy; they are valid while
  // `checkpoint` lives.
  static bool CheckpointTensors(const QwenVlConfig& config,
                                const HfCheckpoint& checkpoint,
                                std::map<std::string, at::Tensor>* out,
                                std::string* error);

  // The checkpoint's weights as `dtype` tensors on `device`.
  static std::unique_ptr<QwenVlModel> Load(const QwenVlConfig& config,
                                           const HfCheckpoint& checkpoint,
                                           at::Device device,
                                           at::ScalarType dtype,
                                           std::string* error);

  // Fresh weights as transformers initialises them (normal(0,
  // initializer_range 0.02) matrices and embeddings, zero biases, unit
  // norms), fp32 on the CPU, the same for a seed on every machine.
  static std::map<std::string, at::Tensor> RandomInit(
      const QwenVlConfig& config, uint64_t seed);

  // `params` hold every tensor ParameterShapes names. Compute runs in their
  // dtype unless set_compute_dtype says otherwise.
  QwenVlModel(QwenVlConfig config, std::map<std::string, at::Tensor> params);

  // Matmul dtype: parameters are cast to it per use (autograd flows back
  // to the originals), e.g. bf16 compute over fp32 master weights.
  void set_compute_dtype(at::ScalarType dtype) { compute_ = dtype; }

  // The vision tower with the merger: [patches / merge_unit, hidden].
  at::Tensor ImageEmbeddings(const at::Tensor& pixel_values,
                             const at::Tensor& grid_thw) const;

  // M-RoPE positions as transformers' get_rope_index gives them: int64
  // [3, B, L] (temporal, height, width; 0 on padding) and each row's
  // delta (highest position + 1 - real tokens) [B]. Throws
  // std::invalid_argument when the image tokens do not match the grids.
  std::pair<at::Tensor, at::Tensor> RopeIndex(const QwenVlInputs& in) const;

  // Logits [B, L, vocab] in fp32. With `hidden`, also transformers'
  // hidden_states: the embeddings, each decoder layer's output, and the
  // last one after the final norm (layers + 1 tensors).
  at::Tensor Forward(const QwenVlInputs& in,
                     std::vector<at::Tensor>* hidden = nullptr) const;
  // Forward in two halves: the final-norm states [B, L, hidden] and the
  // fp32 logits of any states [..., hidden], so that training computes the
  // (vocabulary-sized) logits only where the loss needs them.
  at::Tensor Hidden(const QwenVlInputs& in,
                    std::vector<at::Tensor>* hidden = nullptr) const;
  at::Tensor Logits(const at::Tensor& states) const;

  const QwenVlConfig& config() const { return config_; }
  // In ParameterShapes order.
  const std::vector<std::pair<std::string, at::Tensor>>& parameters() const {
    return ordered_;
  }

 private:
  // Parameter `name` in the compute dtype.
  at::Tensor P(const std::string& name) const;
  at::Tensor VisionBlock(int64_t index, at::Tensor x, const at::Tensor& cos,
                         const at::Tensor& sin,
                         const std::vector<int64_t>& segments) const;
  at::Tensor DecoderLayer(int64_t index, at::Tensor x, const at::Tensor& cos,
                          const at::Tensor& sin, const at::Tensor& mask) const;

  QwenVlConfig config_;
  std::map<std::string, at::Tensor> params_;
  std::vector<std::pair<std::string, at::Tensor>> ordered_;
  at::ScalarType compute_ = at::kFloat;
};

// A safetensors tensor (F32, BF16, F16, I64, I32 or U8) as an at::Tensor
// of its dtype on the CPU: a copy, or with copy false a view of the file's
// memory; undefined for other dtypes.
at::Tensor TensorFromView(const TensorView& view, bool copy = true);

// Mean next-token cross-entropy: logits [B, L, V] at position t score
// labels[t + 1]; labels of -100 are not scored (transformers' causal LM
// loss).
at::Tensor CausalLmLoss(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_QWEN_VL_MODEL_H_
