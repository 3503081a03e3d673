// Batched greedy decoding with the model's KV cache.
#ifndef DCVLR_WORKER_EVAL_GENERATE_H_
#define DCVLR_WORKER_EVAL_GENERATE_H_

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "worker/trainer/image.h"
#include "worker/trainer/model.h"

namespace dcvlr::eval {

// Left-pads `prompts` into one batch on `device`; `images` are already at
// the model's image size.
trainer::PromptBatch MakePromptBatch(
    const std::vector<std::vector<uint16_t>>& prompts,
    const std::vector<const trainer::Image*>& images, at::Device device);

// Greedy decoding for a batch: each row generates until <|im_end|> or
// <|endoftext|> (not included in its output), max_new_tokens, or the
// model's max_seq_len. Prompts must be shorter than max_seq_len. Returns
// false, leaving `out` partial, if `stop` became true in between steps.
bool GenerateGreedy(const trainer::VlmModel& model,
                    const std::vector<std::vector<uint16_t>>& prompts,
                    const std::vector<const trainer::Image*>& images,
                    int max_new_tokens, at::Device device,
                    const std::atomic<bool>* stop,
                    std::vector<std::vector<int64_t>>* out);

}  // namespace dcvlr::eval

#endif  // DCVLR_WORKER_EVAL_GENERATE_H_
