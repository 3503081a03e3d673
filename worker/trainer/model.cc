// The Qwen2-VL-shaped model; see model.h.
//
// Departures from Hugging Face's Qwen2-VL, each to keep the model small and
// the code short: patches are embedded with a Linear (equal to its Conv3d at
// one temporal frame), images have a fixed size with a learned position
// table instead of 2D RoPE in the vision tower, and the decoder uses 1D RoPE
// over token positions instead of M-RoPE.
#include "worker/trainer/model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <optional>

#include "worker/trainer/ops.h"
#include "worker/trainer/tokenizer.h"

namespace dcvlr::trainer {

VlmModel::VlmModel(const ModelPreset& p, uint64_t seed, at::Device device,
                   at::ScalarType compute_dtype)
    : preset_(p),
      dtype_(compute_dtype),
      init_gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {
  const int64_t pd = int64_t(p.patch_size) * p.patch_size * 3,
                vw = p.vision_width;
  patch_w_ = NewParam("visual.patch_embed.proj.weight", {vw, pd}, 'f');
  patch_b_ = NewParam("visual.patch_embed.proj.bias", {vw}, 'z');
  pos_ = NewParam("visual.pos_embed", {p.num_patches(), vw}, 'f');
  for (int i = 0; i < p.vision_layers; ++i) {
    std::string b = "visual.blocks." + std::to_string(i) + ".";
    VisionBlock v;
    v.norm1 = NewParam(b + "norm1.weight", {vw}, '1');
    v.qkv_w = NewParam(b + "attn.qkv.weight", {3 * vw, vw}, 'f');
    v.qkv_b = NewParam(b + "attn.qkv.bias", {3 * vw}, 'z');
    v.proj_w = NewParam(b + "attn.proj.weight", {vw, vw}, 'o', p.vision_layers);
    v.proj_b = NewParam(b + "attn.proj.bias", {vw}, 'z');
    v.norm2 = NewParam(b + "norm2.weight", {vw}, '1');
    v.fc1_w = NewParam(b + "mlp.fc1.weight", {p.vision_mlp, vw}, 'f');
    v.fc1_b = NewParam(b + "mlp.fc1.bias", {p.vision_mlp}, 'z');
    v.fc2_w = NewParam(b + "mlp.fc2.weight", {vw, p.vision_mlp}, 'o',
                       p.vision_layers);
    v.fc2_b = NewParam(b + "mlp.fc2.bias", {vw}, 'z');
    vblocks_.push_back(v);
  }
  const int64_t mi = vw * p.merge_size * p.merge_size, h = p.hidden;
  merger_norm_ = NewParam("visual.merger.ln_q.weight", {vw}, '1');
  merger_fc1_w_ =
      NewParam("visual.merger.mlp.0.weight", {p.merger_hidden, mi}, 'f');
  merger_fc1_b_ = NewParam("visual.merger.mlp.0.bias", {p.merger_hidden}, 'z');
  merger_fc2_w_ =
      NewParam("visual.merger.mlp.2.weight", {h, p.merger_hidden}, 'f');
  merger_fc2_b_ = NewParam("visual.merger.mlp.2.bias", {h}, 'z');
  // Tied embeddings are the lm_head too, whose logits must start small.
  embed_ = NewParam("model.embed_tokens.weight", {p.vocab_size, h},
                    p.tie_embeddings ? 'f' : 'e');
  const int64_t kv = int64_t(p.kv_heads) * p.head_dim();
  for (int i = 0; i < p.layers; ++i) {
    std::string b = "model.layers." + std::to_string(i) + ".";
    DecoderLayer l;
    l.in_norm = NewParam(b + "input_layernorm.weight", {h}, '1');
    l.q_w = NewParam(b + "self_attn.q_proj.weight", {h, h}, 'f');
    l.q_b = NewParam(b + "self_attn.q_proj.bias", {h}, 'z');
    l.k_w = NewParam(b + "self_attn.k_proj.weight", {kv, h}, 'f');
    l.k_b = NewParam(b + "self_attn.k_proj.bias", {kv}, 'z');
    l.v_w = NewParam(b + "self_attn.v_proj.weight", {kv, h}, 'f');
    l.v_b = NewParam(b + "self_attn.v_proj.bias", {kv}, 'z');
    l.o_w = NewParam(b + "self_attn.o_proj.weight", {h, h}, 'o', p.layers);
    l.post_norm = NewParam(b + "post_attention_layernorm.weight", {h}, '1');
    l.gate = NewParam(b + "mlp.gate_proj.weight", {p.intermediate, h}, 'f');
    l.up = NewParam(b + "mlp.up_proj.weight", {p.intermediate, h}, 'f');
    l.down = NewParam(b + "mlp.down_proj.weight", {h, p.intermediate}, 'o',
                      p.layers);
    layers_.push_back(l);
  }
  final_norm_ = NewParam("model.norm.weight", {h}, '1');
  lm_head_ = p.tie_embeddings
                 ? embed_
                 : NewParam("lm_head.weight", {p.vocab_size, h}, 'f');
  FlatBuffers flat = FlattenParameters(&params_, device);
  flat_params_ = flat.params;
  flat_grads_ = flat.grads;
  decay_mask_ = flat.decay_mask;

  // RoPE tables, Qwen2's rotate-half layout: [cos(t*f), cos(t*f)] per row.
  const int64_t d = p.head_dim();
  auto inv_freq =
      at::pow(p.rope_theta, at::arange(0, d, 2, at::kDouble) / double(d))
          .reciprocal();
  auto t = at::arange(p.max_seq_len, at::kDouble);
  auto freqs = at::outer(t, inv_freq);
  auto emb = at::cat({freqs, freqs}, -1);
  rope_cos_ = emb.cos().to(device, dtype_);
  rope_sin_ = emb.sin().to(device, dtype_);
#if TORCH_VERSION_MAJOR < 2
  causal_bias_ = at::full({p.max_seq_len, p.max_seq_len},
                          -std::numeric_limits<float>::infinity(),
                          at::TensorOptions(device).dtype(dtype_))
                     .triu(1);
#endif
}

int VlmModel::NewParam(const std::string& name, std::vector<int64_t> shape,
                       char init, int depth) {
  // Created on CPU from one generator in a fixed order, so every rank and
  // every device starts from the same weights.
  auto& gen = init_gen_;
  at::Tensor t = at::empty(shape, at::kFloat);
  // Scaled to the fan-in, so that every layer's output starts at the scale
  // of its input and a signal crosses the whole vision -> merger -> decoder
  // path from the first step (a fixed N(0, 0.02) shrinks it by ~0.3 per
  // matmul at these widths, which left a long plateau before the model
  // started to read the image, escaped or not by chance):
  // 'f': standard deviation 1/sqrt(fan_in), fan_in = shape[1] (a position
  //      table's width);
  // 'o': an output projection into a residual stream, further scaled by
  //      1/sqrt(2 * depth) as in GPT-2 so the stream does not grow with
  //      the `depth` blocks that add to it;
  // 'e': N(0, 1), token embeddings: the decoder's text inputs start at the
  //      scale of the image tokens the merger makes; a small embedding
  //      would be divided by its own small norm in the first RMSNorm's
  //      backward, amplifying its gradient (the cause of loss spikes);
  // 'z': zeros (biases); '1': ones (norm weights).
  const double fan_in = shape.size() >= 2 ? double(shape[1]) : 1.0;
  if (init == 'z')
    t.zero_();
  else if (init == '1')
    t.fill_(1.0);
  else if (init == 'e')
    t.normal_(0.0, 1.0, gen);
  else if (init == 'o')
    t.normal_(0.0, 1.0 / std::sqrt(fan_in * 2.0 * std::max(1, depth)), gen);
  else
    t.normal_(0.0, 1.0 / std::sqrt(fan_in), gen);
  params_.push_back({name, t, 0, shape.size() >= 2 && init != '1'});
  return int(params_.size()) - 1;
}

FlatBuffers FlattenParameters(std::vector<Parameter>* params,
                              at::Device device) {
  int64_t total = 0;
  for (auto it = params->rbegin(); it != params->rend(); ++it) {
    it->offset = total;
    total += it->tensor.numel();
  }
  FlatBuffers flat;
  flat.params =
      at::empty({total}, at::TensorOptions().dtype(at::kFloat).device(device));
  at::Tensor mask = at::zeros({total}, at::kFloat);
  {
    // Tensor by tensor (converting dtype and device in the copy), so that
    // no second whole copy of a large model is made on the host.
    c10::NoGradGuard no_grad;
    for (const Parameter& p : *params) {
      const int64_t n = p.tensor.numel();
      flat.params.narrow(0, p.offset, n).copy_(p.tensor.detach().reshape(-1));
      if (p.decay) mask.narrow(0, p.offset, n).fill_(1.0);
    }
  }
  flat.grads = at::zeros({total}, flat.params.options());
  flat.decay_mask = mask.to(device);
  for (Parameter& p : *params) {
    auto shape = p.tensor.sizes().vec();
    int64_t n = p.tensor.numel();
    // A detached view is a leaf sharing the flat storage; the optimizer's
    // in-place updates of the flat buffer are what the model sees.
    p.tensor = flat.params.narrow(0, p.offset, n).view(shape).detach();
    p.tensor.set_requires_grad(true);
    p.tensor.mutable_grad() = flat.grads.narrow(0, p.offset, n).view(shape);
  }
  return flat;
}

at::Tensor VlmModel::W(int index) const {
  const at::Tensor& t = params_[index].tensor;
  if (dtype_ == at::kFloat) return t;
  if (const at::Tensor* kept = Kept({index})) return *kept;
  return Keep({index}, t.to(dtype_));
}

const at::Tensor* VlmModel::Kept(const std::vector<int>& indices) const {
  if (at::GradMode::is_enabled()) {
    kept_.clear();  // training: copies must stay in the autograd graph
    return nullptr;
  }
  auto it = kept_.find(indices);
  return it != kept_.end() && it->second.version == flat_params_._version()
             ? &it->second.tensor
             : nullptr;
}

at::Tensor VlmModel::Keep(const std::vector<int>& indices,
                          at::Tensor copy) const {
  if (!at::GradMode::is_enabled())
    kept_[indices] = {copy, flat_params_._version()};
  return copy;
}

at::Tensor VlmModel::Linear(const at::Tensor& x, int weight, int bias) const {
  return bias >= 0 ? at::linear(x, W(weight), W(bias))
                   : at::linear(x, W(weight));
}

at::Tensor VlmModel::RmsNorm(const at::Tensor& x, int weight) const {
  // Statistics in fp32 whatever the compute dtype, as Qwen2RMSNorm does;
  // libtorch >= 2.4 has a kernel for it on CUDA.
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  if (x.is_cuda())
    return at::rms_norm(x, {x.size(-1)}, W(weight), preset_.rms_eps);
#endif
  auto xf = x.to(at::kFloat);
  auto y = xf * at::rsqrt(xf.pow(2).mean(-1, true) + preset_.rms_eps);
  return y.to(dtype_) * W(weight);
}

namespace {

// GQA's keys or values [B, kv_heads, T, D] repeated for each of the query
// heads they serve: [B, heads, T, D].
at::Tensor ExpandKv(const at::Tensor& x, int64_t heads) {
  const int64_t b = x.size(0), kvh = x.size(1), t = x.size(2), d = x.size(3);
  if (kvh == heads) return x;
  return x.unsqueeze(2)
      .expand({b, kvh, heads / kvh, t, d})
      .reshape({b, heads, t, d});
}

// Attention where `allowed` [B, 1, Tq, Tk] says which keys each query sees.
at::Tensor MaskedAttention(const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, const at::Tensor& allowed) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, allowed);
#else
  auto scores =
      at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(q.size(3))));
  scores = scores.masked_fill(allowed.logical_not(),
                              -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(scores, -1), v);
#endif
}

}  // namespace

at::Tensor VlmModel::Joined(std::initializer_list<int> indices) const {
  const std::vector<int> key(indices);
  if (const at::Tensor* kept = Kept(key)) return *kept;
  std::vector<at::Tensor> parts;
  for (int i : indices) {
    const at::Tensor& t = params_[i].tensor;
    parts.push_back(dtype_ == at::kFloat ? t : t.to(dtype_));
  }
  return Keep(key, at::cat(parts));
}

std::array<at::Tensor, 3> VlmModel::Projections(const at::Tensor& n,
                                                const DecoderLayer& l) const {
  const ModelPreset& p = preset_;
  const int64_t b = n.size(0), t = n.size(1), hd = p.head_dim();
  const int64_t kv = int64_t(p.kv_heads) * hd;
  auto qkv = at::linear(n, Joined({l.q_w, l.k_w, l.v_w}),
                        Joined({l.q_b, l.k_b, l.v_b}))
                 .split_with_sizes({int64_t(p.hidden), kv, kv}, -1);
  return {qkv[0].view({b, t, p.heads, hd}).transpose(1, 2),
          qkv[1].view({b, t, p.kv_heads, hd}).transpose(1, 2),
          qkv[2].view({b, t, p.kv_heads, hd}).transpose(1, 2)};
}

at::Tensor VlmModel::Mlp(const at::Tensor& n, const DecoderLayer& l) const {
  return Linear(SwiGlu(at::linear(n, Joined({l.gate, l.up}))), l.down);
}

at::Tensor VlmModel::Attention(const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, bool causal) const {
  // q: [B, heads, T, D]; k, v: [B, kv_heads, T, D], kv_heads dividing heads.
#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  // The flash kernel (CUDA, bf16/fp16, sm80+) reads shared K/V heads
  // itself, sparing two copies per layer. The other kernels do not take
  // enable_gqa (SDPA would fall back to its math path), so where flash
  // would not be chosen, K/V are expanded as below.
  constexpr int64_t kFlash = 1;  // sdp::SDPBackend::flash_attention
  if (q.is_cuda() && k.size(1) != q.size(1) &&
      at::_fused_sdp_choice(q, k, v, {}, 0.0, causal, std::nullopt,
                            /*enable_gqa=*/true) == kFlash)
    return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal,
                                            std::nullopt, /*enable_gqa=*/true);
#endif
  const int64_t heads = q.size(1);
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, ExpandKv(k, heads),
                                          ExpandKv(v, heads), {}, 0.0, causal);
#else
  // The scale and the causal mask go into the score matmul: one batched
  // GEMM adds scale * q k^T to the mask's 0 / -inf bias.
  const int64_t b = q.size(0), t = q.size(2), d = q.size(3);
  auto q3 = q.reshape({b * heads, t, d});
  auto k3 = ExpandKv(k, heads).reshape({b * heads, t, d});
  auto bias = causal ? causal_bias_.narrow(0, 0, t).narrow(1, 0, t)
                     : at::zeros({1, 1, 1}, q.options());
  auto scores = at::baddbmm(bias, q3, k3.transpose(1, 2), causal ? 1.0 : 0.0,
                            1.0 / std::sqrt(double(d)));
  auto a = at::bmm(at::softmax(scores, -1),
                   ExpandKv(v, heads).reshape({b * heads, t, d}));
  return a.view({b, heads, t, d});
#endif
}

at::Tensor VlmModel::Vision(const at::Tensor& images) const {
  const ModelPreset& p = preset_;
  const int64_t b = images.size(0), side = p.patches_per_side(),
                ps = p.patch_size;
  const int64_t n = p.num_patches(), vw = p.vision_width,
                heads = p.vision_heads;
  // uint8 HWC -> [-1, 1], then (row, col) patches of ps*ps*3 values.
  auto x = images.to(dtype_).mul(2.0 / 255.0).sub(1.0);
  x = x.view({b, side, ps, side, ps, 3})
          .permute({0, 1, 3, 2, 4, 5})
          .reshape({b, n, ps * ps * 3});
  auto h = Linear(x, patch_w_, patch_b_) + W(pos_);
  for (const VisionBlock& blk : vblocks_) {
    auto qkv = Linear(RmsNorm(h, blk.norm1), blk.qkv_w, blk.qkv_b)
                   .view({b, n, 3, heads, vw / heads})
                   .permute({2, 0, 3, 1, 4});
    auto a = Attention(qkv[0], qkv[1], qkv[2], /*causal=*/false);
    h = h +
        Linear(a.transpose(1, 2).reshape({b, n, vw}), blk.proj_w, blk.proj_b);
    h = h +
        Linear(at::gelu(Linear(RmsNorm(h, blk.norm2), blk.fc1_w, blk.fc1_b)),
               blk.fc2_w, blk.fc2_b);
  }
  // Merge each 2x2 group of neighbouring patches into one decoder token.
  const int64_t m = p.merge_size, ms = side / m;
  h = RmsNorm(h, merger_norm_)
          .view({b, ms, m, ms, m, vw})
          .permute({0, 1, 3, 2, 4, 5})
          .reshape({b, ms * ms, m * m * vw});
  return Linear(at::gelu(Linear(h, merger_fc1_w_, merger_fc1_b_)),
                merger_fc2_w_, merger_fc2_b_);
}

at::Tensor VlmModel::Hidden(const Batch& batch) const {
  const ModelPreset& p = preset_;
  const int64_t b = batch.tokens.size(0), t = batch.tokens.size(1);
  const int64_t h = p.hidden;
  auto x = at::embedding(W(embed_), batch.tokens);
  // Image features replace the <|image_pad|> embeddings, row by row in order.
  auto vis = Vision(batch.images);
  auto image_mask = batch.tokens.eq(kImagePadId).unsqueeze(-1);
  x = x.masked_scatter(image_mask, vis);
  auto cos = rope_cos_.narrow(0, 0, t), sin = rope_sin_.narrow(0, 0, t);
  for (const DecoderLayer& l : layers_) {
    auto [q, k, v] = Projections(RmsNorm(x, l.in_norm), l);
    auto a = Attention(Rope(q, cos, sin), Rope(k, cos, sin), v,
                       /*causal=*/true)
                 .transpose(1, 2)
                 .reshape({b, t, h});
    x = x + Linear(a, l.o_w);
    x = x + Mlp(RmsNorm(x, l.post_norm), l);
  }
  // Only scored positions go through the final norm and the lm_head.
  auto picked = x.reshape({b * t, h}).index_select(0, batch.loss_index);
  return RmsNorm(picked, final_norm_);
}

at::Tensor VlmModel::Prefill(const PromptBatch& prompt, KvCache* cache) const {
  const at::Tensor& tokens = prompt.tokens;
  const int64_t t = tokens.size(1);
  auto x = at::embedding(W(embed_), tokens);
  auto vis = Vision(prompt.images);
  x = x.masked_scatter(tokens.eq(kImagePadId).unsqueeze(-1), vis);
  // Row r's real tokens fill columns [t - len_r, t); its positions count
  // from 0 there. Padding columns get position 0 and are never attended to.
  auto col = at::arange(t, tokens.options()).unsqueeze(0);
  auto pad = (t - prompt.lengths.to(tokens.options())).unsqueeze(1);
  auto valid = col.ge(pad);
  auto positions = (col - pad).clamp_min(0);
  cache->k.assign(layers_.size(), at::Tensor());
  cache->v.assign(layers_.size(), at::Tensor());
  cache->key_valid = at::Tensor();
  cache->next_position = prompt.lengths.to(tokens.options()).clone();
  return Logits(DecodeCached(x, positions, valid, cache));
}

at::Tensor VlmModel::DecodeStep(const at::Tensor& tokens,
                                KvCache* cache) const {
  auto x = at::embedding(W(embed_), tokens.unsqueeze(1));
  auto valid = at::ones({tokens.size(0), 1}, tokens.options().dtype(at::kBool));
  // A row past the end of the RoPE table (one the caller has finished and
  // only feeds padding) reuses the last position; its output is unused.
  auto positions =
      cache->next_position.clamp_max(preset_.max_seq_len - 1).unsqueeze(1);
  auto logits = Logits(DecodeCached(x, positions, valid, cache));
  cache->next_position = cache->next_position + 1;
  return logits;
}

at::Tensor VlmModel::DecodeCached(at::Tensor x, const at::Tensor& positions,
                                  const at::Tensor& new_valid,
                                  KvCache* cache) const {
  const ModelPreset& p = preset_;
  const int64_t b = x.size(0), t = x.size(1);
  const int64_t h = p.hidden, hd = p.head_dim(), heads = p.heads;
  auto flat = positions.reshape({-1});
  auto cos = rope_cos_.index_select(0, flat).view({b, 1, t, hd});
  auto sin = rope_sin_.index_select(0, flat).view({b, 1, t, hd});
  const int64_t past =
      cache->key_valid.defined() ? cache->key_valid.size(1) : 0;
  cache->key_valid =
      past > 0 ? at::cat({cache->key_valid, new_valid}, 1) : new_valid;
  const int64_t tk = past + t;
  // Query i (column past + i) sees real keys up to itself, and always
  // itself, so a padding query attends to something and stays finite.
  auto opts = positions.options();
  auto qcol = (at::arange(t, opts) + past).unsqueeze(1);
  auto kcol = at::arange(tk, opts).unsqueeze(0);
  auto allowed = (kcol.le(qcol).unsqueeze(0) & cache->key_valid.unsqueeze(1)) |
                 kcol.eq(qcol).unsqueeze(0);
  allowed = allowed.unsqueeze(1);  // [B, 1, t, tk]
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayer& l = layers_[i];
    auto [q, k, v] = Projections(RmsNorm(x, l.in_norm), l);
    q = Rope(q, cos, sin);
    k = Rope(k, cos, sin);
    if (past > 0) {
      k = at::cat({cache->k[i], k}, 2);
      v = at::cat({cache->v[i], v}, 2);
    }
    // v is a view into the joined projection's output; the cache keeps a
    // compact copy rather than that whole output.
    cache->k[i] = k;
    cache->v[i] = past > 0 ? v : v.contiguous();
    auto a = MaskedAttention(q, ExpandKv(k, heads), ExpandKv(v, heads), allowed)
                 .transpose(1, 2)
                 .reshape({b, t, h});
    x = x + Linear(a, l.o_w);
    x = x + Mlp(RmsNorm(x, l.post_norm), l);
  }
  return RmsNorm(x.select(1, t - 1), final_norm_);
}

at::Tensor VlmModel::Logits(const at::Tensor& hidden) const {
  return Linear(hidden, lm_head_).to(at::kFloat);
}

at::Tensor VlmModel::Loss(const Batch& batch) const {
  return at::cross_entropy_loss(Logits(Hidden(batch)), batch.targets);
}

EvalCounts VlmModel::Evaluate(const Batch& batch) const {
  return CountEval(Logits(Hidden(batch)), batch);
}

EvalCounts CountEval(const at::Tensor& logits, const Batch& batch) {
  auto token_loss =
      at::cross_entropy_loss(logits, batch.targets, {}, at::Reduction::Sum);
  auto wrong = logits.argmax(-1).ne(batch.targets).to(at::kFloat);
  auto wrong_rows = at::zeros({batch.rows}, wrong.options())
                        .index_add_(0, batch.loss_row, wrong);
  EvalCounts c;
  c.loss_sum = token_loss;
  c.tokens = at::scalar_tensor(double(batch.targets.numel()), wrong.options());
  c.correct = wrong_rows.eq(0).sum().to(at::kFloat);
  return c;
}

}  // namespace dcvlr::trainer
