// A QwenVlModel as the training loop trains it: fp32 master weights laid
// out in one flat buffer (TrainableModel's layout, so that the gradient
// reducer, AdamW and checkpoints work on it as on any model), compute in
// bf16 or fp32, and the loss computed only at the scored positions.
#ifndef DCVLR_WORKER_TRAINER_QWEN_VL_TRAINABLE_H_
#define DCVLR_WORKER_TRAINER_QWEN_VL_TRAINABLE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "worker/trainer/model.h"
#include "worker/trainer/qwen_vl_model.h"

namespace dcvlr::trainer {

class QwenVlTrainable : public TrainableModel {
 public:
  // `params` (any dtype, any device) are copied into the flat fp32 buffer
  // on `device`.
  QwenVlTrainable(const QwenVlConfig& config,
                  const std::map<std::string, at::Tensor>& params,
                  at::Device device, at::ScalarType compute_dtype);

  at::Tensor Loss(const Batch& batch) const override;
  EvalCounts Evaluate(const Batch& batch) const override;
  const std::vector<Parameter>& parameters() const override { return params_; }
  const at::Tensor& flat_params() const override { return flat_params_; }
  const at::Tensor& flat_grads() const override { return flat_grads_; }
  const at::Tensor& decay_mask() const override { return decay_mask_; }
  std::string name() const override { return config_.architecture; }
  // 6 * (decoder weights outside the embedding) per token, plus the
  // lm_head for scored tokens; the vision tower and attention scores are
  // not counted, so MFU reads low.
  double TrainFlopsPerSample(int seq_len, int scored) const override;

  const QwenVlModel& model() const { return *model_; }

 private:
  at::Tensor States(const Batch& batch) const;  // scored positions' states

  QwenVlConfig config_;
  std::vector<Parameter> params_;
  at::Tensor flat_params_, flat_grads_, decay_mask_;
  std::unique_ptr<QwenVlModel> model_;  // reads views of flat_params_
};

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_QWEN_VL_TRAINABLE_H_
