// AdamW over a model's flat parameter buffer, and the learning-rate schedule.
//
// The update is decoupled weight decay (Loshchilov & Hutter) with PyTorch's
// AdamW bias correction. It runs on whole flat buffers, so a step is a few
// large kernels whatever the parameter count. Its state (two moment buffers
// and the step count) is saved and restored exactly for bit-exact resume.
#ifndef DCVLR_WORKER_TRAINER_OPTIMIZER_H_
#define DCVLR_WORKER_TRAINER_OPTIMIZER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "worker/trainer/config.h"

namespace dcvlr::trainer {

class FlatAdamW {
 public:
  // `params`, `grads` and `decay_mask` share one layout; the optimizer keeps
  // references to them.
  FlatAdamW(at::Tensor params, at::Tensor grads, at::Tensor decay_mask,
            const TrainingConfig& config);

  // On CUDA with libtorch >= 2.1, switches to PyTorch's fused AdamW kernel
  // over per-parameter views of the flat buffers: one pass over memory
  // instead of about ten. `segments` are (offset, numel, decay) triples.
  void UseFusedKernel(
      const std::vector<std::tuple<int64_t, int64_t, bool>>& segments);

  // One update with learning rate `lr`.
  void Step(double lr);

  int64_t step() const { return step_; }
  at::Tensor& exp_avg() { return exp_avg_; }
  at::Tensor& exp_avg_sq() { return exp_avg_sq_; }
  void set_step(int64_t step);

 private:
  at::Tensor params_, grads_, decay_mask_, exp_avg_, exp_avg_sq_;
  double beta1_, beta2_, eps_, weight_decay_;
  int64_t step_ = 0;
  // Fused path: views per parameter, split by whether weight decay applies.
  struct Group {
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  };
  bool fused_ = false;
  Group decay_, no_decay_;
  at::Tensor steps_;  // the fused kernel's per-parameter step counters
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
