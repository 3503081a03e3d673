// Flat-buffer training wrapper of QwenVlModel; see qwen_vl_trainable.h.
#include "worker/trainer/qwen_vl_trainable.h"

#include <ATen/ATen.h>

namespace dcvlr::trainer {

QwenVlTrainable::QwenVlTrainable(
    const QwenVlConfig& config, const std::map<std::string, at::Tensor>& params,
    at::Device device, at::ScalarType compute_dtype)
    : config_(config) {
  for (const auto& [name, shape] : QwenVlModel::ParameterShapes(config)) {
    Parameter p;
    p.name = name;
    p.tensor = params.at(name);
    p.decay = shape.size() >= 2;
    params_.push_back(std::move(p));
  }
  FlatBuffers flat = FlattenParameters(&params_, device);
  flat_params_ = flat.params;
  flat_grads_ = flat.grads;
  decay_mask_ = flat.decay_mask;
  std::map<std::string, at::Tensor> views;
  for (const Parameter& p : params_) views[p.name] = p.tensor;
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
