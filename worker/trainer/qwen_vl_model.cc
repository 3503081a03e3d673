// Qwen2-VL / Qwen2.5-VL forward pass; see qwen_vl_model.h.
#include "worker/trainer/qwen_vl_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>

namespace dcvlr::trainer {
namespace {

std::string ShapeText(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Attention of q [N, H, Lq, D] to k, v [N, H, Lk, D]; `allowed` (bool,
// broadcastable to [N, H, Lq, Lk]) says which keys a query sees, undefined
// means all. Softmax in fp32, as transformers' eager path does.
at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& allowed) {
#if TORCH_VERSION_MAJOR >= 2
  c10::optional<at::Tensor> mask;
  if (allowed.defined()) mask = allowed;
  return at::scaled_dot_product_attention(q, k, v, mask);
#else
  at::Tensor w = at::matmul(q, k.transpose(-2, -1)) *
                 (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  if (allowed.defined())
    w = w.masked_fill(allowed.logical_not(),
                      -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(w, -1, at::kFloat).to(q.scalar_type()), v);
#endif
}

// Attention of x's tokens [N, H, D] within consecutive segments of the
// given lengths (image frames, or Qwen2.5-VL's windows), none across.
// Segments of one length go through one batched call.
at::Tensor SegmentAttention(const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v,
                            const std::vector<int64_t>& segments) {
  const int64_t n = q.size(0);
  std::map<int64_t, std::vector<int64_t>> starts_by_length;
  int64_t start = 0;
  for (int64_t len : segments) {
    if (len > 0) starts_by_length[len].push_back(start);
    start += len;
  }
  auto run = [](const at::Tensor& qs, const at::Tensor& ks,
                const at::Tensor& vs) {
    // [S, L, H, D] -> [S, H, L, D] and back.
    return Attend(qs.transpose(1, 2), ks.transpose(1, 2), vs.transpose(1, 2),
                  {})
        .transpose(1, 2);
  };
  if (starts_by_length.size() == 1 &&
      starts_by_length.begin()->first *
              static_cast<int64_t>(starts_by_length.begin()->second.size()) ==
          n) {
    const int64_t len = starts_by_length.begin()->first;
    const int64_t s = n / len;
    return run(q.reshape({s, len, q.size(1), q.size(2)}),
               k.reshape({s, len, k.size(1), k.size(2)}),
               v.reshape({s, len, v.size(1), v.size(2)}))
        .reshape(q.sizes());
  }
  at::Tensor out = at::zeros_like(q);
  for (const auto& [len, starts] : starts_by_length) {
    std::vector<int64_t> idx;
    idx.reserve(starts.size() * len);
    for (int64_t s : starts)
      for (int64_t i = 0; i < len; ++i) idx.push_back(s + i);
    at::Tensor index =
        at::tensor(idx, at::TensorOptions().dtype(at::kLong)).to(q.device());
    const int64_t count = static_cast<int64_t>(starts.size());
    auto gather = [&](const at::Tensor& t) {
      return t.index_select(0, index).reshape(
          {count, len, t.size(1), t.size(2)});
    };
    at::Tensor o = run(gather(q), gather(k), gather(v));
    out = out.index_copy(0, index,
                         o.reshape({count * len, q.size(1), q.size(2)}));
  }
  return out;
}

at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// RMSNorm with fp32 statistics, cast back, then the weight (transformers'
// Qwen2RMSNorm).
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor f = x.to(at::kFloat);
  f = f * at::rsqrt(f.pow(2).mean(-1, true) + eps);
  return w * f.to(x.scalar_type());
}

at::Tensor Activation(const at::Tensor& x, const std::string& act) {
  if (act == "quick_gelu") return x * at::sigmoid(1.702 * x);
  if (act == "silu") return at::silu(x);
  return at::gelu(x);
}

// Per image frame: the (h, w) patch coordinates in the processor's patch
// order (merge groups of spatial_merge_size^2 patches, row-major).
std::vector<std::pair<int64_t, int64_t>> PatchCoordinates(
    const std::vector<std::array<int64_t, 3>>& grids, int64_t m) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (const auto& g : grids) {
    for (int64_t t = 0; t < g[0]; ++t)
      for (int64_t bh = 0; bh < g[1] / m; ++bh)
        for (int64_t bw = 0; bw < g[2] / m; ++bw)
          for (int64_t ih = 0; ih < m; ++ih)
            for (int64_t iw = 0; iw < m; ++iw)
              out.emplace_back(bh * m + ih, bw * m + iw);
  }
  return out;
}

std::vector<std::array<int64_t, 3>> Grids(const at::Tensor& grid_thw,
                                          int64_t merge) {
  std::vector<std::array<int64_t, 3>> grids;
  if (!grid_thw.defined()) return grids;
  if (grid_thw.dim() != 2 || grid_thw.size(1) != 3)
    throw std::invalid_argument("image_grid_thw must be [images, 3], not " +
                                ShapeText(grid_thw.sizes()));
  at::Tensor g = grid_thw.to(at::kCPU, at::kLong).contiguous();
  auto a = g.accessor<int64_t, 2>();
  for (int64_t i = 0; i < g.size(0); ++i) {
    if (a[i][0] < 1 || a[i][1] < 1 || a[i][2] < 1 || a[i][1] % merge ||
        a[i][2] % merge)
      throw std::invalid_argument(
          "image_grid_thw[" + std::to_string(i) +
          "]: t, h, w must be positive and h, w multiples of " +
          std::to_string(merge));
    grids.push_back({a[i][0], a[i][1], a[i][2]});
  }
  return grids;
}

}  // namespace

std::vector<ParameterShape> QwenVlModel::ParameterShapes(
    const QwenVlConfig& c) {
  const QwenVisionConfig& v = c.vision;
  const QwenTextConfig& t = c.text;
  const bool v25 = c.kind == QwenVlKind::kQwen2_5Vl;
  std::vector<ParameterShape> s;
  s.push_back({"visual.patch_embed.proj.weight",
               {v.width, v.in_channels, v.temporal_patch_size, v.patch_size,
                v.patch_size}});
  for (int64_t i = 0; i < v.depth; ++i) {
    const std::string b = "visual.blocks." + std::to_string(i) + ".";
    for (const char* norm : {"norm1", "norm2"}) {
      s.push_back({b + norm + ".weight", {v.width}});
      if (!v25) s.push_back({b + norm + ".bias", {v.width}});
    }
    s.push_back({b + "attn.qkv.weight", {3 * v.width, v.width}});
    s.push_back({b + "attn.qkv.bias", {3 * v.width}});
    s.push_back({b + "attn.proj.weight", {v.width, v.width}});
    s.push_back({b + "attn.proj.bias", {v.width}});
    if (v25) {
      for (const char* p : {"gate_proj", "up_proj"}) {
        s.push_back({b + "mlp." + p + ".weight", {v.mlp_hidden, v.width}});
        s.push_back({b + "mlp." + p + ".bias", {v.mlp_hidden}});
      }
      s.push_back({b + "mlp.down_proj.weight", {v.width, v.mlp_hidden}});
      s.push_back({b + "mlp.down_proj.bias", {v.width}});
    } else {
      s.push_back({b + "mlp.fc1.weight", {v.mlp_hidden, v.width}});
      s.push_back({b + "mlp.fc1.bias", {v.mlp_hidden}});
      s.push_back({b + "mlp.fc2.weight", {v.width, v.mlp_hidden}});
      s.push_back({b + "mlp.fc2.bias", {v.width}});
    }
  }
  const int64_t merged = v.width * v.merge_unit();
  s.push_back({"visual.merger.ln_q.weight", {v.width}});
  if (!v25) s.push_back({"visual.merger.ln_q.bias", {v.width}});
  s.push_back({"visual.merger.mlp.0.weight", {merged, merged}});
  s.push_back({"visual.merger.mlp.0.bias", {merged}});
  s.push_back({"visual.merger.mlp.2.weight", {v.out_width, merged}});
  s.push_back({"visual.merger.mlp.2.bias", {v.out_width}});

  const int64_t kv = t.kv_heads * t.head_dim;
  s.push_back({"model.embed_tokens.weight", {t.vocab_size, t.hidden}});
  for (int64_t i = 0; i < t.layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    s.push_back({l + "input_layernorm.weight", {t.hidden}});
    s.push_back({l + "self_attn.q_proj.weight", {t.hidden, t.hidden}});
    s.push_back({l + "self_attn.q_proj.bias", {t.hidden}});
    s.push_back({l + "self_attn.k_proj.weight", {kv, t.hidden}});
    s.push_back({l + "self_attn.k_proj.bias", {kv}});
    s.push_back({l + "self_attn.v_proj.weight", {kv, t.hidden}});
    s.push_back({l + "self_attn.v_proj.bias", {kv}});
    s.push_back({l + "self_attn.o_proj.weight", {t.hidden, t.hidden}});
    s.push_back({l + "post_attention_layernorm.weight", {t.hidden}});
    s.push_back({l + "mlp.gate_proj.weight", {t.intermediate, t.hidden}});
    s.push_back({l + "mlp.up_proj.weight", {t.intermediate, t.hidden}});
    s.push_back({l + "mlp.down_proj.weight", {t.hidden, t.intermediate}});
  }
  s.push_back({"model.norm.weight", {t.hidden}});
  if (!t.tie_embeddings)
    s.push_back({"lm_head.weight", {t.vocab_size, t.hidden}});
  return s;
}

bool QwenVlModel::CheckpointTensors(const QwenVlConfig& config,
                                    const HfCheckpoint& ckpt,
                                    std::map<std::string, at::Tensor>* out,
                                    std::string* error) {
  std::set<std::string> expected;
  for (const auto& [name, shape] : ParameterShapes(config)) {
    expected.insert(name);
    auto it = ckpt.tensors.find(name);
    if (it == ckpt.tensors.end()) {
      *error = ckpt.dir + ": missing tensor " + name + " " + ShapeText(shape) +
               " (the config says " + config.architecture + ")";
      return false;
    }
    const TensorView& t = *it->second;
    if (t.shape != shape) {
      *error = ckpt.source.at(name) + ": tensor " + name + " is " +
               ShapeText(t.shape) + ", the config needs " + ShapeText(shape);
      return false;
    }
    at::Tensor view = TensorFromView(t, /*copy=*/false);
    if (!view.defined() || !view.is_floating_point()) {
      *error = ckpt.source.at(name) + ": tensor " + name + ": dtype " +
               t.dtype + " (want F32, BF16 or F16)";
      return false;
    }
    (*out)[name] = view;
  }
  for (const auto& [name, view] : ckpt.tensors) {
    // transformers writes lm_head.weight for some tied models; it is the
    // embedding then and is not read.
    if (!expected.count(name) &&
        !(name == "lm_head.weight" && config.text.tie_embeddings)) {
      *error = ckpt.source.at(name) + ": unexpected tensor " + name +
               " (not part of " + config.architecture + " with this config)";
      return false;
    }
  }
  return true;
}

std::unique_ptr<QwenVlModel> QwenVlModel::Load(const QwenVlConfig& config,
                                               const HfCheckpoint& ckpt,
                                               at::Device device,
                                               at::ScalarType dtype,
                                               std::string* error) {
  std::map<std::string, at::Tensor> params;
  if (!CheckpointTensors(config, ckpt, &params, error)) return nullptr;
  for (auto& [name, t] : params)
    t = t.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
  return std::make_unique<QwenVlModel>(config, std::move(params));
}

QwenVlModel::QwenVlModel(QwenVlConfig config,
                         std::map<std::string, at::Tensor> params)
    : config_(std::move(config)), params_(std::move(params)) {
  for (const auto& [name, shape] : ParameterShapes(config_)) {
    auto it = params_.find(name);
    if (it == params_.end())
      throw std::invalid_argument("QwenVlModel: no parameter " + name);
    ordered_.emplace_back(name, it->second);
  }
  if (!ordered_.empty()) compute_ = ordered_.front().second.scalar_type();
}

at::Tensor QwenVlModel::P(const std::string& name) const {
  const at::Tensor& t = params_.at(name);
  return t.scalar_type() == compute_ ? t : t.to(compute_);
}

std::map<std::string, at::Tensor> QwenVlModel::RandomInit(
    const QwenVlConfig& config, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, shape] : ParameterShapes(config)) {
    const bool bias =
        name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const bool norm = name.find("norm") != std::string::npos ||
                      name.find("ln_q") != std::string::npos;
    at::Tensor t = at::empty(shape, at::kFloat);
    if (bias)
      t.zero_();
    else if (norm)
      t.fill_(1.0);
    else
      t.normal_(0.0, 0.02, gen);
    out[name] = t;
  }
  return out;
}

at::Tensor QwenVlModel::VisionBlock(
    int64_t index, at::Tensor x, const at::Tensor& cos, const at::Tensor& sin,
    const std::vector<int64_t>& segments) const {
  const QwenVisionConfig& v = config_.vision;
  const bool v25 = config_.kind == QwenVlKind::kQwen2_5Vl;
  const std::string b = "visual.blocks." + std::to_string(index) + ".";
  auto norm = [&](const at::Tensor& h, const std::string& n) {
    return v25 ? RmsNorm(h, P(b + n + ".weight"), 1e-6)
               : at::layer_norm(h, {v.width}, P(b + n + ".weight"),
                                P(b + n + ".bias"), 1e-6);
  };
  const int64_t n = x.size(0);
  at::Tensor qkv = at::linear(norm(x, "norm1"), P(b + "attn.qkv.weight"),
                              P(b + "attn.qkv.bias"))
                       .reshape({n, 3, v.heads, v.head_dim()});
  at::Tensor q = qkv.select(1, 0), k = qkv.select(1, 1), val = qkv.select(1, 2);
  // 2D rotary in fp32 (apply_rotary_pos_emb_vision).
  const at::ScalarType dt = q.scalar_type();
  at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  at::Tensor qf = q.to(at::kFloat), kf = k.to(at::kFloat);
  q = (qf * c + RotateHalf(qf) * s).to(dt);
  k = (kf * c + RotateHalf(kf) * s).to(dt);
  at::Tensor attn = SegmentAttention(q, k, val, segments).reshape({n, v.width});
  x = x + at::linear(attn, P(b + "attn.proj.weight"), P(b + "attn.proj.bias"));
  at::Tensor h = norm(x, "norm2");
  if (v25) {
    at::Tensor g = Activation(at::linear(h, P(b + "mlp.gate_proj.weight"),
                                         P(b + "mlp.gate_proj.bias")),
                              v.act);
    at::Tensor u =
        at::linear(h, P(b + "mlp.up_proj.weight"), P(b + "mlp.up_proj.bias"));
    return x + at::linear(g * u, P(b + "mlp.down_proj.weight"),
                          P(b + "mlp.down_proj.bias"));
  }
  h = Activation(at::linear(h, P(b + "mlp.fc1.weight"), P(b + "mlp.fc1.bias")),
                 v.act);
  return x + at::linear(h, P(b + "mlp.fc2.weight"), P(b + "mlp.fc2.bias"));
}

at::Tensor QwenVlModel::ImageEmbeddings(const at::Tensor& pixel_values,
                                        const at::Tensor& grid_thw) const {
  const QwenVisionConfig& v = config_.vision;
  const bool v25 = config_.kind == QwenVlKind::kQwen2_5Vl;
  const int64_t m = v.spatial_merge_size, unit = v.merge_unit();
  const auto grids = Grids(grid_thw, m);
  int64_t total = 0;
  for (const auto& g : grids) total += g[0] * g[1] * g[2];
  if (pixel_values.dim() != 2 || pixel_values.size(0) != total ||
      pixel_values.size(1) != v.patch_dim())
    throw std::invalid_argument(
        "pixel_values is " + ShapeText(pixel_values.sizes()) +
        ", image_grid_thw needs [" + std::to_string(total) + ", " +
        std::to_string(v.patch_dim()) + "]");
  const at::Tensor w = P("visual.patch_embed.proj.weight");
  at::Tensor x = at::linear(pixel_values.to(w.scalar_type()),
                            w.reshape({v.width, v.patch_dim()}));

  // Rotary angles: head_dim / 4 frequencies for the row, as many for the
  // column, each used twice (rotate_half over the whole head).
  const auto coords = PatchCoordinates(grids, m);
  std::vector<int64_t> hw;
  hw.reserve(coords.size() * 2);
  for (const auto& [h, c] : coords) {
    hw.push_back(h);
    hw.push_back(c);
  }
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor pos = at::tensor(hw, at::TensorOptions().dtype(at::kLong))
                       .reshape({total, 2})
                       .to(x.device(), at::kFloat);
  const int64_t quarter = v.head_dim() / 4;
  at::Tensor inv =
      1.0 / at::pow(v.rope_theta, at::arange(0, v.head_dim() / 2, 2, f32) /
                                      static_cast<double>(v.head_dim() / 2));
  inv = inv.to(x.device());
  at::Tensor freqs = (pos.unsqueeze(-1) * inv).reshape({total, 2 * quarter});
  freqs = at::cat({freqs, freqs}, -1);
  at::Tensor cos = freqs.cos(), sin = freqs.sin();

  // Full attention: each frame of each image by itself.
  std::vector<int64_t> frames;
  for (const auto& g : grids)
    for (int64_t t = 0; t < g[0]; ++t) frames.push_back(g[1] * g[2]);

  // Qwen2.5-VL's windows: merged patches grouped in squares of `side`
  // (the last row and column of squares may be partial), frame by frame.
  // The tokens are reordered so that each window is contiguous (what
  // transformers' get_window_index does) and put back after the merger.
  std::vector<int64_t> windows;
  at::Tensor order, inverse;
  if (v25) {
    const int64_t side = v.window_size / m / v.patch_size;
    std::vector<int64_t> perm;  // merged-patch index per new position
    int64_t base = 0;
    for (const auto& g : grids) {
      const int64_t gh = g[1] / m, gw = g[2] / m;
      for (int64_t t = 0; t < g[0]; ++t)
        for (int64_t wh = 0; wh < gh; wh += side)
          for (int64_t ww = 0; ww < gw; ww += side) {
            int64_t count = 0;
            for (int64_t i = wh; i < std::min(gh, wh + side); ++i)
              for (int64_t j = ww; j < std::min(gw, ww + side); ++j) {
                perm.push_back(base + (t * gh + i) * gw + j);
                ++count;
              }
            windows.push_back(count * unit);
          }
      base += g[0] * gh * gw;
    }
    order =
        at::tensor(perm, at::TensorOptions().dtype(at::kLong)).to(x.device());
    inverse = at::argsort(order);
    auto permute = [&](const at::Tensor& t) {
      return t.reshape({total / unit, unit, t.size(-1)})
          .index_select(0, order)
          .reshape({total, t.size(-1)});
    };
    x = permute(x);
    cos = permute(cos);
    sin = permute(sin);
  }
  for (int64_t i = 0; i < v.depth; ++i) {
    const bool full =
        !v25 || std::find(v.fullatt_blocks.begin(), v.fullatt_blocks.end(),
                          i) != v.fullatt_blocks.end();
    x = VisionBlock(i, x, cos, sin, full ? frames : windows);
  }
  at::Tensor n =
      v25 ? RmsNorm(x, P("visual.merger.ln_q.weight"), 1e-6)
          : at::layer_norm(x, {v.width}, P("visual.merger.ln_q.weight"),
                           P("visual.merger.ln_q.bias"), 1e-6);
  n = n.reshape({total / unit, v.width * unit});
  n = at::gelu(at::linear(n, P("visual.merger.mlp.0.weight"),
                          P("visual.merger.mlp.0.bias")));
  n = at::linear(n, P("visual.merger.mlp.2.weight"),
                 P("visual.merger.mlp.2.bias"));
  if (v25) n = n.index_select(0, inverse);
  return n;
}

std::pair<at::Tensor, at::Tensor> QwenVlModel::RopeIndex(
    const QwenVlInputs& in) const {
  const int64_t m = config_.vision.spatial_merge_size;
  const auto grids = Grids(in.image_grid_thw, m);
  at::Tensor ids = in.input_ids.to(at::kCPU, at::kLong).contiguous();
  const int64_t rows = ids.size(0), len = ids.size(1);
  at::Tensor mask =
      in.attention_mask.defined()
          ? in.attention_mask.to(at::kCPU, at::kLong).contiguous()
          : at::ones({rows, len}, at::TensorOptions().dtype(at::kLong));
  at::Tensor pos =
      at::zeros({3, rows, len}, at::TensorOptions().dtype(at::kLong));
  at::Tensor deltas = at::zeros({rows}, at::TensorOptions().dtype(at::kLong));
  auto id = ids.accessor<int64_t, 2>();
  auto mk = mask.accessor<int64_t, 2>();
  auto p = pos.accessor<int64_t, 3>();
  size_t next_image = 0;
  for (int64_t b = 0; b < rows; ++b) {
    int64_t current = 0, highest = -1, real = 0;
    for (int64_t t = 0; t < len;) {
      if (!mk[b][t]) {
        ++t;
        continue;
      }
      if (id[b][t] != config_.image_token_id) {
        for (int a = 0; a < 3; ++a) p[a][b][t] = current;
        highest = std::max(highest, current);
        ++current;
        ++real;
        ++t;
        continue;
      }
      if (next_image >= grids.size())
        throw std::invalid_argument("row " + std::to_string(b) +
                                    " has more images than image_grid_thw (" +
                                    std::to_string(grids.size()) + ")");
      const auto& g = grids[next_image++];
      const int64_t gh = g[1] / m, gw = g[2] / m;
      for (int64_t ti = 0; ti < g[0]; ++ti)
        for (int64_t i = 0; i < gh; ++i)
          for (int64_t j = 0; j < gw; ++j) {
            if (t >= len || !mk[b][t] || id[b][t] != config_.image_token_id)
              throw std::invalid_argument(
                  "row " + std::to_string(b) + ": image " +
                  std::to_string(next_image - 1) + " needs " +
                  std::to_string(g[0] * gh * gw) + " consecutive image tokens");
            p[0][b][t] = current + ti;
            p[1][b][t] = current + i;
            p[2][b][t] = current + j;
            highest =
                std::max({highest, current + ti, current + i, current + j});
            ++real;
            ++t;
          }
      current += std::max(gh, gw);
    }
    deltas[b] = highest + 1 - real;
  }
  if (next_image != grids.size())
    throw std::invalid_argument(
        "image_grid_thw has " + std::to_string(grids.size()) +
        " images, the tokens " + std::to_string(next_image));
  return {pos.to(in.input_ids.device()), deltas.to(in.input_ids.device())};
}

at::Tensor QwenVlModel::DecoderLayer(int64_t index, at::Tensor x,
                                     const at::Tensor& cos,
                                     const at::Tensor& sin,
                                     const at::Tensor& mask) const {
  const QwenTextConfig& t = config_.text;
  const std::string l = "model.layers." + std::to_string(index) + ".";
  const int64_t b = x.size(0), len = x.size(1), d = t.head_dim;
  at::Tensor h = RmsNorm(x, P(l + "input_layernorm.weight"), t.rms_eps);
  auto proj = [&](const char* name, int64_t heads) {
    return at::linear(h, P(l + "self_attn." + name + ".weight"),
                      P(l + "self_attn." + name + ".bias"))
        .reshape({b, len, heads, d})
        .transpose(1, 2);
  };
  at::Tensor q = proj("q_proj", t.heads), k = proj("k_proj", t.kv_heads),
             v = proj("v_proj", t.kv_heads);
  q = q * cos + RotateHalf(q) * sin;
  k = k * cos + RotateHalf(k) * sin;
  const int64_t rep = t.heads / t.kv_heads;
  if (rep > 1) {
    k = k.unsqueeze(2)
            .expand({b, t.kv_heads, rep, len, d})
            .reshape({b, t.heads, len, d});
    v = v.unsqueeze(2)
            .expand({b, t.kv_heads, rep, len, d})
            .reshape({b, t.heads, len, d});
  }
  at::Tensor a =
      Attend(q, k, v, mask).transpose(1, 2).reshape({b, len, t.hidden});
  x = x + at::linear(a, P(l + "self_attn.o_proj.weight"));
  h = RmsNorm(x, P(l + "post_attention_layernorm.weight"), t.rms_eps);
  at::Tensor g = at::silu(at::linear(h, P(l + "mlp.gate_proj.weight")));
  at::Tensor u = at::linear(h, P(l + "mlp.up_proj.weight"));
  return x + at::linear(g * u, P(l + "mlp.down_proj.weight"));
}

at::Tensor QwenVlModel::Forward(const QwenVlInputs& in,
                                std::vector<at::Tensor>* hidden) const {
  return Logits(Hidden(in, hidden));
}

at::Tensor QwenVlModel::Logits(const at::Tensor& states) const {
  return at::linear(states,
                    P(config_.text.tie_embeddings ? "model.embed_tokens.weight"
                                                  : "lm_head.weight"))
      .to(at::kFloat);
}

at::Tensor QwenVlModel::Hidden(const QwenVlInputs& in,
                               std::vector<at::Tensor>* hidden) const {
  const QwenTextConfig& t = config_.text;
  const at::Tensor embed = P("model.embed_tokens.weight");
  if (in.input_ids.dim() != 2)
    throw std::invalid_argument("input_ids must be [batch, length], not " +
                                ShapeText(in.input_ids.sizes()));
  const int64_t b = in.input_ids.size(0), len = in.input_ids.size(1);
  at::Tensor ids = in.input_ids.to(embed.device(), at::kLong);
  if (ids.numel() && (ids.min().item<int64_t>() < 0 ||
                      ids.max().item<int64_t>() >= t.vocab_size))
    throw std::invalid_argument("input_ids outside the vocabulary [0, " +
                                std::to_string(t.vocab_size) + ")");
  at::Tensor x = at::embedding(embed, ids);
  at::Tensor image_slots = ids == config_.image_token_id;
  const int64_t slots = image_slots.sum().item<int64_t>();
  if (in.pixel_values.defined() && in.pixel_values.numel()) {
    at::Tensor img =
        ImageEmbeddings(in.pixel_values.to(embed.device()), in.image_grid_thw);
    if (img.size(0) != slots)
      throw std::invalid_argument("the images give " +
                                  std::to_string(img.size(0)) +
                                  " embeddings, the text has " +
                                  std::to_string(slots) + " image tokens");
    x = x.masked_scatter(image_slots.unsqueeze(-1), img.to(x.scalar_type()));
  } else if (slots) {
    throw std::invalid_argument(std::to_string(slots) +
                                " image tokens but no pixel_values");
  }

  // M-RoPE: the rotary frequencies of head_dim / 2 are split into
  // mrope_section parts that take their angle from the temporal, height
  // and width position in turn; computed in fp32.
  at::Tensor pos = RopeIndex(in).first.to(x.device(), at::kFloat);  // [3,B,L]
  const at::TensorOptions f32 =
      at::TensorOptions().dtype(at::kFloat).device(x.device());
  at::Tensor inv =
      1.0 / at::pow(t.rope_theta, at::arange(0, t.head_dim, 2, f32) /
                                      static_cast<double>(t.head_dim));
  at::Tensor freqs = pos.unsqueeze(-1) * inv;  // [3, B, L, D/2]
  std::vector<at::Tensor> parts;
  int64_t offset = 0;
  for (int i = 0; i < 3; ++i) {
    parts.push_back(freqs.select(0, i).narrow(-1, offset, t.mrope_section[i]));
    offset += t.mrope_section[i];
  }
  at::Tensor f = at::cat(parts, -1);
  f = at::cat({f, f}, -1).unsqueeze(1);  // [B, 1, L, D]
  const at::ScalarType dt = x.scalar_type();
  at::Tensor cos = f.cos().to(dt), sin = f.sin().to(dt);

  // Causal attention to real keys; a query always sees itself, so that
  // padding rows stay finite.
  at::Tensor causal =
      at::ones({len, len},
               at::TensorOptions().dtype(at::kBool).device(x.device()))
          .tril();
  at::Tensor mask = causal.unsqueeze(0).expand({b, len, len});
  if (in.attention_mask.defined()) {
    at::Tensor valid = in.attention_mask.to(x.device()).to(at::kBool);
    mask =
        mask.logical_and(valid.unsqueeze(1))
            .logical_or(at::eye(
                len, at::TensorOptions().dtype(at::kBool).device(x.device())));
  }
  mask = mask.unsqueeze(1);  // [B, 1, L, L]

  if (hidden) hidden->assign(1, x);
  for (int64_t i = 0; i < t.layers; ++i) {
    x = DecoderLayer(i, x, cos, sin, mask);
    if (hidden && i + 1 < t.layers) hidden->push_back(x);
  }
  x = RmsNorm(x, P("model.norm.weight"), t.rms_eps);
  if (hidden) hidden->push_back(x);
  return x;
}

at::Tensor TensorFromView(const TensorView& view, bool copy) {
  at::ScalarType type;
  if (view.dtype == "F32")
    type = at::kFloat;
  else if (view.dtype == "BF16")
    type = at::kBFloat16;
  else if (view.dtype == "F16")
    type = at::kHalf;
  else if (view.dtype == "I64")
    type = at::kLong;
  else if (view.dtype == "I32")
    type = at::kInt;
  else if (view.dtype == "U8")
    type = at::kByte;
  else
    return {};
  at::Tensor t = at::from_blob(const_cast<void*>(view.data), view.shape,
                               at::TensorOptions().dtype(type));
  return copy ? t.clone() : t;
}

at::Tensor CausalLmLoss(const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t len = logits.size(1);
  at::Tensor l = logits.narrow(1, 0, len - 1).reshape({-1, logits.size(2)});
  at::Tensor y =
      labels.to(logits.device(), at::kLong).narrow(1, 1, len - 1).reshape({-1});
  return at::cross_entropy_loss(l.to(at::kFloat), y, {}, at::Reduction::Mean,
                                -100);
}

}  // namespace dcvlr::trainer
