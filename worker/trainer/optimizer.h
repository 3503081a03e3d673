// AdamW over a model's flat parameter buffer, and the learning-rate schedule.
//
// The update is decoupled weight decay (Loshchilov & Hutter) with PyTorch's
// AdamW bias correction. It runs on whole flat buffers, so a step is a few
// large kernels whatever the parameter count. Its state (two moment buffers
// and the step count) is saved and restored exactly for bit-exact resume.
#ifndef DCVLR_WORKER_TRAINER_OPTIMIZER_H_
#define DCVLR_WORKER_TRAINER_OPTIMIZER_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "worker/trainer/config.h"

namespace dcvlr::trainer {

class FlatAdamW {
 public:
  // `params`, `grads` and `decay_mask` share one layout; the optimizer keeps
  // references to them.
  FlatAdamW(at::Tensor params, at::Tensor grads, at::Tensor decay_mask,
            const TrainingConfig& config);

  // One update with learning rate `lr`.
  void Step(double lr);

  int64_t step() const { return step_; }
  at::Tensor& exp_avg() { return exp_avg_; }
  at::Tensor& exp_avg_sq() { return exp_avg_sq_; }
  void set_step(int64_t step) { step_ = step; }

 private:
  at::Tensor params_, grads_, decay_mask_, exp_avg_, exp_avg_sq_;
  double beta1_, beta2_, eps_, weight_decay_;
  int64_t step_ = 0;
};

// Clips the gradient buffer to `max_norm` (if > 0) and returns the norm
// before clipping as a 0-dim tensor, without synchronizing with the device.
at::Tensor ClipGradNorm(at::Tensor& grads, double max_norm);

// Learning rate at optimizer step `step` (0-based) of `total`: linear warmup,
// then cosine or linear decay to min_lr_ratio, or constant.
double LearningRate(const TrainingConfig& config, int64_t step, int64_t total);

// The warmup length the config asks for, given the total step count.
int64_t WarmupSteps(const TrainingConfig& config, int64_t total);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_OPTIMIZER_H_
