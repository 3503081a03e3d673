// The Qwen2-VL-shaped model: a patch-embedding vision encoder, a 2x2 patch
// merger into the decoder's width, and a Qwen2 decoder (RMSNorm, RoPE, GQA,
// SwiGLU, q/k/v bias). Built from a ModelPreset.
//
// Parameters are views into one flat fp32 buffer, and their gradients views
// into a second, laid out in reverse registration order: roughly the order
// backward produces them, so the gradient reducer's buckets are contiguous
// slices that fill one after another, and the optimizer updates the whole
// model in a few large element-wise kernels.
//
// Not thread-safe; one model per process.
#ifndef DCVLR_WORKER_TRAINER_MODEL_H_
#define DCVLR_WORKER_TRAINER_MODEL_H_

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "worker/trainer/presets.h"

namespace dcvlr::trainer {

struct Parameter {
  std::string
      name;  // Hugging Face style, e.g. model.layers.0.mlp.up_proj.weight
  at::Tensor tensor;
  int64_t offset = 0;  // in the flat buffers
  bool decay = false;  // weight decay applies (matrices, not biases or norms)
};

// One batch, already on the model's device.
struct Batch {
  at::Tensor tokens;  // int64 [B, T], right-padded (kPadId for VlmModel)
  at::Tensor images;  // uint8 [B, S, S, 3]
  at::Tensor
      loss_index;  // int64 [L]: flat b*T+t positions whose next token is scored
  at::Tensor targets;   // int64 [L]: those next tokens
  at::Tensor loss_row;  // int64 [L]: the batch row of each scored position
  int64_t rows = 0;
  int64_t real_tokens = 0;  // non-pad tokens
  // Hugging Face Qwen-VL models (QwenVlTrainable) read these instead of
  // `images`: 1 on real tokens, and the image processor's output.
  at::Tensor attention_mask;  // int64 [B, T]
  at::Tensor pixel_values;    // float [patches, patch_dim]
  at::Tensor image_grid_thw;  // int64 [images, 3]
};

// Inference: a prompt batch for generation, left-padded so that every row's
// last prompt token sits in the last column and generated tokens append in
// one column for all rows. RoPE positions count real tokens only, so a row's
// positions are the same whatever padding its batch needs.
struct PromptBatch {
  at::Tensor tokens;   // int64 [B, T], left-padded with kPadId
  at::Tensor lengths;  // int64 [B]: real (unpadded) tokens per row
  at::Tensor images;   // uint8 [B, S, S, 3]
};

// Per-layer keys and values of everything fed so far (prompt, then one
// token per DecodeStep), with which columns are real tokens.
struct KvCache {
  std::vector<at::Tensor> k, v;  // per decoder layer: [B, kv_heads, T, D]
  at::Tensor key_valid;          // bool [B, T]: false on left padding
  at::Tensor next_position;      // int64 [B]: RoPE position of the next token
};

struct EvalCounts {
  at::Tensor loss_sum;  // float scalar: summed token loss
  at::Tensor tokens;    // scored tokens
  at::Tensor correct;   // rows whose every scored token is the argmax
};

// What the training loop, the gradient reducer and checkpoints need of a
// model: a loss and evaluation counts on a batch, and parameters that are
// views into one flat fp32 buffer (offsets in reverse registration order,
// roughly the order backward produces gradients) with gradients in a
// second.
class TrainableModel {
 public:
  virtual ~TrainableModel() = default;
  // Mean cross-entropy over the batch's scored tokens.
  virtual at::Tensor Loss(const Batch& batch) const = 0;
  // Loss sum, token count and exact-match rows; call under no-grad.
  virtual EvalCounts Evaluate(const Batch& batch) const = 0;
  virtual const std::vector<Parameter>& parameters() const = 0;
  virtual const at::Tensor& flat_params() const = 0;
  virtual const at::Tensor& flat_grads() const = 0;
  // 1 where weight decay applies, 0 elsewhere; same layout as flat_params.
  virtual const at::Tensor& decay_mask() const = 0;
  // Names the model in logs and checkpoint metadata.
  virtual std::string name() const = 0;
  // Training FLOPs of one sample (for MFU); see each model.
  virtual double TrainFlopsPerSample(int seq_len, int scored) const = 0;
  int64_t num_params() const { return flat_params().numel(); }
};

// The flat layout TrainableModel describes. `params` hold their initial
// values (any dtype, any device) and decay flags; each is copied, one at a
// time, into one fp32 buffer on `device` (offsets in reverse order, which
// this sets) and replaced by a leaf view of it whose gradient views a
// second, zeroed buffer.
struct FlatBuffers {
  at::Tensor params, grads, decay_mask;
};
FlatBuffers FlattenParameters(std::vector<Parameter>* params,
                              at::Device device);

// Evaluation counts from the logits at a batch's scored positions
// ([scored, vocab], in batch.targets' order): summed loss, scored tokens,
// and rows whose every scored token is the argmax.
EvalCounts CountEval(const at::Tensor& logits, const Batch& batch);

class VlmModel : public TrainableModel {
 public:
  // Initializes weights from `seed` (identically on every rank) on `device`.
  // `compute_dtype` is the matmul dtype (kFloat or kBFloat16); weights stay
  // fp32 and are cast per use, so their gradients and the optimizer are fp32.
  VlmModel(const ModelPreset& preset, uint64_t seed, at::Device device,
           at::ScalarType compute_dtype);

  at::Tensor Loss(const Batch& batch) const override;
  EvalCounts Evaluate(const Batch& batch) const override;

  // Greedy-decoding path; call under no-grad. Prefill runs a prompt batch
  // through the model, fills `cache` and returns the fp32 logits [B, vocab]
  // of each row's last prompt token. DecodeStep feeds one token per row
  // (int64 [B]) at the row's next position, appends to `cache` and returns
  // the logits that follow it. Positions must stay below max_seq_len for
  // the rows the caller reads (later ones reuse the last position). Training
  // (Loss, Evaluate) does not use this path.
  at::Tensor Prefill(const PromptBatch& prompt, KvCache* cache) const;
  at::Tensor DecodeStep(const at::Tensor& tokens, KvCache* cache) const;

  const std::vector<Parameter>& parameters() const override { return params_; }
  const at::Tensor& flat_params() const override { return flat_params_; }
  const at::Tensor& flat_grads() const override { return flat_grads_; }
  const at::Tensor& decay_mask() const override { return decay_mask_; }
  std::string name() const override { return preset_.name; }
  double TrainFlopsPerSample(int seq_len, int scored) const override {
    return preset_.TrainFlopsPerSample(seq_len, scored);
  }
  const ModelPreset& preset() const { return preset_; }

 private:
  // A parameter initialised as `init` says (see model.cc); `depth` is the
  // number of blocks adding to the residual stream an 'o' projection feeds.
  int NewParam(const std::string& name, std::vector<int64_t> shape, char init,
               int depth = 1);

  at::Tensor W(int index) const;  // parameter `index` in the compute dtype
  // Parameters concatenated along their first dimension, in the compute
  // dtype: the weights of projections that read the same input, so that
  // one matmul does their work. They stay separate parameters (and
  // checkpoint tensors, as in Hugging Face's files).
  at::Tensor Joined(std::initializer_list<int> indices) const;
  // Under no-grad (evaluation, generation), the copies W() and Joined()
  // make are kept until the parameters next change, so that decoding one
  // token at a time does not copy the weights for every token. Kept()
  // returns the copy of `indices` if it is still current; Keep() keeps
  // `copy` (under no-grad) and returns it. With grad enabled nothing is
  // kept and the kept copies are dropped. "Change" is a move of
  // flat_params_'s version counter, which ATen's in-place ops and copy_
  // make; a c10d collective writing the buffer does not, which is why the
  // trainer's start-up broadcast comes before any forward pass.
  const at::Tensor* Kept(const std::vector<int>& indices) const;
  at::Tensor Keep(const std::vector<int>& indices, at::Tensor copy) const;
  at::Tensor Linear(const at::Tensor& x, int weight, int bias = -1) const;
  at::Tensor RmsNorm(const at::Tensor& x, int weight) const;
  at::Tensor Attention(const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, bool causal) const;
  at::Tensor Vision(const at::Tensor& images) const;
  at::Tensor Hidden(const Batch& batch)
      const;  // final-norm decoder states at scored positions
  at::Tensor Logits(const at::Tensor& hidden) const;
  // Decoder layers over new tokens `x` [B, T, H] at `positions` [B, T],
  // attending to the cache and themselves; appends to the cache and returns
  // the final-norm states of the last column [B, H].
  at::Tensor DecodeCached(at::Tensor x, const at::Tensor& positions,
                          const at::Tensor& new_valid, KvCache* cache) const;

  struct VisionBlock {
    int norm1, qkv_w, qkv_b, proj_w, proj_b, norm2, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  struct DecoderLayer {
    int in_norm, q_w, q_b, k_w, k_b, v_w, v_b, o_w, post_norm, gate, up, down;
  };
  // A decoder layer's q, k and v of normed input `n` [B, T, H], from one
  // matmul: [B, heads, T, D], [B, kv_heads, T, D] twice, before RoPE.
  std::array<at::Tensor, 3> Projections(const at::Tensor& n,
                                        const DecoderLayer& l) const;
  // A decoder layer's SwiGLU MLP of normed input `n`; gate and up in one
  // matmul.
  at::Tensor Mlp(const at::Tensor& n, const DecoderLayer& l) const;

  ModelPreset preset_;
  at::ScalarType dtype_;
  std::vector<Parameter> params_;
  at::Tensor flat_params_, flat_grads_, decay_mask_;
  at::Tensor rope_cos_, rope_sin_;  // [max_seq_len, head_dim], compute dtype
  // Libtorch without fused attention (< 2.0): [max_seq_len, max_seq_len],
  // 0 where a query may see a key and -inf above the diagonal.
  at::Tensor causal_bias_;
  struct KeptCopy {
    at::Tensor tensor;
    int64_t version;  // flat_params_'s version counter when copied
  };
  mutable std::map<std::vector<int>, KeptCopy> kept_;
  at::Generator init_gen_;  // weight init, used only while constructing

  int patch_w_, patch_b_, pos_;
  std::vector<VisionBlock> vblocks_;
  int merger_norm_, merger_fc1_w_, merger_fc1_b_, merger_fc2_w_, merger_fc2_b_;
  int embed_;
  std::vector<DecoderLayer> layers_;
  int final_norm_, lm_head_;
};

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_MODEL_H_
