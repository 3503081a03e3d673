// Greedy decoding; see generate.h.
#include "worker/eval/generate.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstring>

#include "worker/trainer/tokenizer.h"

namespace dcvlr::eval {

trainer::PromptBatch MakePromptBatch(
    const std::vector<std::vector<uint16_t>>& prompts,
    const std::vector<const trainer::Image*>& images, at::Device device) {
  const int64_t b = int64_t(prompts.size());
  int64_t t = 0;
  for (const auto& p : prompts) t = std::max<int64_t>(t, p.size());
  auto tokens = at::full({b, t}, trainer::kPadId, at::kLong);
  auto lengths = at::empty({b}, at::kLong);
  auto* tok = tokens.data_ptr<int64_t>();
  for (int64_t i = 0; i < b; ++i) {
    const auto& p = prompts[i];
    const int64_t pad = t - int64_t(p.size());
    for (size_t j = 0; j < p.size(); ++j) tok[i * t + pad + j] = p[j];
    lengths.data_ptr<int64_t>()[i] = int64_t(p.size());
  }
  const int64_t w = images.empty() ? 0 : images[0]->width,
                h = images.empty() ? 0 : images[0]->height;
  auto imgs = at::empty({b, h, w, 3}, at::kByte);
  for (int64_t i = 0; i < b; ++i)
    std::memcpy(imgs.data_ptr<uint8_t>() + i * h * w * 3, images[i]->rgb.data(),
                size_t(h) * w * 3);
  trainer::PromptBatch batch;
  batch.tokens = tokens.to(device);
  batch.lengths = lengths.to(device);
  batch.images = imgs.to(device);
  return batch;
}

bool GenerateGreedy(const trainer::VlmModel& model,
                    const std::vector<std::vector<uint16_t>>& prompts,
                    const std::vector<const trainer::Image*>& images,
                    int max_new_tokens, at::Device device,
                    const std::atomic<bool>* stop,
                    std::vector<std::vector<int64_t>>* out) {
  c10::NoGradGuard no_grad;
  const int64_t b = int64_t(prompts.size());
  const int max_len = model.preset().max_seq_len;
  out->assign(b, {});
  // Row i's k-th generated token sits at position len_i + k, which must stay
  // below max_seq_len (the RoPE table's length and the trained lengths).
  std::vector<int64_t> limit(b);
  std::vector<bool> done(b, false);
  for (int64_t i = 0; i < b; ++i) {
    limit[i] =
        std::min<int64_t>(max_new_tokens, max_len - int64_t(prompts[i].size()));
    if (limit[i] <= 0) done[i] = true;
  }
  trainer::KvCache cache;
  at::Tensor logits =
      model.Prefill(MakePromptBatch(prompts, images, device), &cache);
  while (true) {
    auto next = logits.argmax(-1).to(at::kCPU);
    const int64_t* ids = next.data_ptr<int64_t>();
    bool all_done = true;
    for (int64_t i = 0; i < b; ++i) {
      if (done[i]) continue;
      if (ids[i] == trainer::kImEndId || ids[i] == trainer::kEndOfTextId) {
        done[i] = true;
        continue;
      }
      (*out)[i].push_back(ids[i]);
      if (int64_t((*out)[i].size()) >= limit[i]) done[i] = true;
      all_done = all_done && done[i];
    }
    if (all_done) return true;
    if (stop && stop->load()) return false;
    // Finished rows are fed a pad; their outputs are ignored.
    auto feed = next.clone();
    for (int64_t i = 0; i < b; ++i)
      if (done[i]) feed.data_ptr<int64_t>()[i] = trainer::kPadId;
    logits = model.DecodeStep(feed.to(device), &cache);
  }
}

}  // namespace dcvlr::eval
