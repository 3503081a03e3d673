// AdamW and schedule; see optimizer.h.
#include "worker/trainer/optimizer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/version.h>

#include <cmath>

namespace dcvlr::trainer {

FlatAdamW::FlatAdamW(at::Tensor params, at::Tensor grads, at::Tensor decay_mask,
                     const TrainingConfig& c)
    : params_(std::move(params)),
      grads_(std::move(grads)),
      decay_mask_(std::move(decay_mask)),
      exp_avg_(at::zeros_like(params_)),
      exp_avg_sq_(at::zeros_like(params_)),
      beta1_(c.adam_beta1),
      beta2_(c.adam_beta2),
      eps_(c.adam_epsilon),
      weight_decay_(c.weight_decay) {}

#if TORCH_VERSION_MAJOR > 2 || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define DCVLR_HAVE_FUSED_ADAMW 1
#endif

void FlatAdamW::UseFusedKernel(
    const std::vector<std::tuple<int64_t, int64_t, bool>>& segments) {
#ifdef DCVLR_HAVE_FUSED_ADAMW
  if (!params_.is_cuda()) return;
  steps_ =
      at::full({int64_t(segments.size())}, double(step_), params_.options());
  for (size_t i = 0; i < segments.size(); ++i) {
    auto [offset, numel, decay] = segments[i];
    Group& g = decay ? decay_ : no_decay_;
    g.params.push_back(params_.narrow(0, offset, numel));
    g.grads.push_back(grads_.narrow(0, offset, numel));
    g.exp_avgs.push_back(exp_avg_.narrow(0, offset, numel));
    g.exp_avg_sqs.push_back(exp_avg_sq_.narrow(0, offset, numel));
    g.steps.push_back(steps_.select(0, int64_t(i)));
  }
  fused_ = true;
#else
  (void)segments;
#endif
}

void FlatAdamW::set_step(int64_t step) {
  step_ = step;
  if (steps_.defined()) steps_.fill_(double(step));
}

void FlatAdamW::Step(double lr) {
  c10::NoGradGuard no_grad;
  ++step_;
#ifdef DCVLR_HAVE_FUSED_ADAMW
  if (fused_) {
    // The kernel reads the step counters but, as in torch.optim.AdamW, the
    // caller advances them.
    steps_.add_(1.0);
    for (Group* g : {&decay_, &no_decay_}) {
      if (g->params.empty()) continue;
      at::_fused_adamw_(g->params, g->grads, g->exp_avgs, g->exp_avg_sqs, {},
                        g->steps, lr, beta1_, beta2_,
                        g == &decay_ ? weight_decay_ : 0.0, eps_,
                        /*amsgrad=*/false, /*maximize=*/false);
    }
    return;
  }
#endif
  const double bc1 = 1.0 - std::pow(beta1_, double(step_));
  const double bc2 = 1.0 - std::pow(beta2_, double(step_));
  if (weight_decay_ > 0)
    params_.addcmul_(params_, decay_mask_, -lr * weight_decay_);
  exp_avg_.mul_(beta1_).add_(grads_, 1.0 - beta1_);
  exp_avg_sq_.mul_(beta2_).addcmul_(grads_, grads_, 1.0 - beta2_);
  auto denom = exp_avg_sq_.sqrt().div_(std::sqrt(bc2)).add_(eps_);
  params_.addcdiv_(exp_avg_, denom, -lr / bc1);
}

at::Tensor ClipGradNorm(at::Tensor& grads, double max_norm) {
  c10::NoGradGuard no_grad;
  auto norm = grads.norm();
  if (max_norm > 0) grads.mul_(at::clamp_max(max_norm / (norm + 1e-6), 1.0));
  return norm;
}

int64_t WarmupSteps(const TrainingConfig& c, int64_t total) {
  if (c.warmup_steps >= 0) return c.warmup_steps;
  return static_cast<int64_t>(std::ceil(c.warmup_ratio * double(total)));
}

double LearningRate(const TrainingConfig& c, int64_t step, int64_t total) {
  const int64_t warmup = WarmupSteps(c, total);
  if (step < warmup) return c.learning_rate * double(step + 1) / double(warmup);
  if (c.lr_scheduler_type == "constant" ||
      c.lr_scheduler_type == "constant_with_warmup")
    return c.learning_rate;
  double progress =
      total > warmup ? double(step - warmup) / double(total - warmup) : 1.0;
  progress = std::min(1.0, std::max(0.0, progress));
  double decay = c.lr_scheduler_type == "linear"
                     ? 1.0 - progress
                     : 0.5 * (1.0 + std::cos(M_PI * progress));
  return c.learning_rate * (c.min_lr_ratio + (1.0 - c.min_lr_ratio) * decay);
}

}  // namespace dcvlr::trainer
