// Flat-buffer training wrapper of QwenVlModel; see qwen_vl_trainable.h.
#include "worker/trainer/qwen_vl_trainable.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

namespace dcvlr::trainer {

QwenVlTrainable::QwenVlTrainable(
    const QwenVlConfig& config, const std::map<std::string, at::Tensor>& params,
    at::Device device, at::ScalarType compute_dtype)
    : config_(config) {
  const auto shapes = QwenVlModel::ParameterShapes(config);
  params_.resize(shapes.size());
  int64_t total = 0;
  for (size_t i = shapes.size(); i-- > 0;) {
    Parameter& p = params_[i];
    p.name = shapes[i].first;
    p.offset = total;
    p.decay = shapes[i].second.size() >= 2;
    int64_t n = 1;
    for (int64_t d : shapes[i].second) n *= d;
    total += n;
  }
  // Straight into the device buffer, one tensor at a time (converting its
  // dtype in the copy), so that no whole fp32 copy of a large model is
  // made on the host.
  flat_params_ =
      at::empty({total}, at::TensorOptions().dtype(at::kFloat).device(device));
  at::Tensor mask = at::zeros({total}, at::kFloat);
  {
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const at::Tensor& src = params.at(shapes[i].first);
      const int64_t n = src.numel();
      flat_params_.narrow(0, params_[i].offset, n)
          .copy_(src.detach().reshape(-1));
      if (params_[i].decay) mask.narrow(0, params_[i].offset, n).fill_(1.0);
    }
  }
  flat_grads_ = at::zeros({total}, flat_params_.options());
  decay_mask_ = mask.to(device);
  std::map<std::string, at::Tensor> views;
  for (size_t i = 0; i < shapes.size(); ++i) {
    Parameter& p = params_[i];
    const auto& shape = shapes[i].second;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    // A detached view is a leaf sharing the flat storage, its gradient a
    // view of the flat gradient buffer.
    p.tensor = flat_params_.narrow(0, p.offset, n).view(shape).detach();
    p.tensor.set_requires_grad(true);
    p.tensor.mutable_grad() = flat_grads_.narrow(0, p.offset, n).view(shape);
    views[p.name] = p.tensor;
  }
  model_ = std::make_unique<QwenVlModel>(config_, std::move(views));
  model_->set_compute_dtype(compute_dtype);
}

at::Tensor QwenVlTrainable::States(const Batch& batch) const {
  QwenVlInputs in;
  in.input_ids = batch.tokens;
  in.attention_mask = batch.attention_mask;
  in.pixel_values = batch.pixel_values;
  in.image_grid_thw = batch.image_grid_thw;
  at::Tensor h = model_->Hidden(in);
  return h.reshape({-1, h.size(-1)}).index_select(0, batch.loss_index);
}

at::Tensor QwenVlTrainable::Loss(const Batch& batch) const {
  return at::cross_entropy_loss(model_->Logits(States(batch)), batch.targets);
}

EvalCounts QwenVlTrainable::Evaluate(const Batch& batch) const {
  return CountEval(model_->Logits(States(batch)), batch);
}

double QwenVlTrainable::TrainFlopsPerSample(int seq_len, int scored) const {
  const QwenTextConfig& t = config_.text;
  const double kv = double(t.kv_heads) * t.head_dim;
  const double layer = 2.0 * t.hidden * t.hidden + 2.0 * t.hidden * kv +
                       3.0 * t.hidden * t.intermediate;
  return 6.0 * layer * t.layers * seq_len +
         6.0 * double(t.hidden) * t.vocab_size * scored;
}

}  // namespace dcvlr::trainer
