// What the model keeps between calls: under no-grad it reuses its
// compute-dtype weight copies, and they follow every change to the
// parameters.
#include "worker/trainer/model.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "worker/trainer/tokenizer.h"

namespace dcvlr::trainer {
namespace {

// One row: a question and its answer, every next token scored.
Batch OneRow(const ModelPreset& preset) {
  const ByteTokenizer tok(preset.image_tokens());
  EncodedExample ex = tok.EncodeExample("What colour is the circle?", "red",
                                        preset.max_seq_len);
  const int64_t t = ex.tokens.size();
  Batch batch;
  batch.tokens = at::empty({1, t}, at::kLong);
  for (int64_t j = 0; j < t; ++j) batch.tokens[0][j] = int64_t(ex.tokens[j]);
  batch.images =
      at::full({1, preset.image_size, preset.image_size, 3}, 90, at::kByte);
  batch.loss_index = at::arange(t - 1, at::kLong);
  batch.targets = batch.tokens.reshape({-1}).narrow(0, 1, t - 1).clone();
  batch.loss_row = at::zeros({t - 1}, at::kLong);
  batch.rows = 1;
  batch.real_tokens = t;
  return batch;
}

class KeptCopiesTest : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(KeptCopiesTest, FollowTheParameters) {
  ModelPreset preset;
  ASSERT_TRUE(FindPreset("tiny-vlm", &preset));
  VlmModel model(preset, 11, at::Device(at::kCPU), GetParam());
  const Batch batch = OneRow(preset);
  // With grad enabled nothing is kept: the reference for each weight state.
  auto fresh = [&] {
    at::AutoGradMode grad(true);
    return model.Evaluate(batch).loss_sum.item<double>();
  };
  auto kept = [&] {
    c10::NoGradGuard no_grad;
    return model.Evaluate(batch).loss_sum.item<double>();
  };
  const double before = fresh();
  EXPECT_EQ(kept(), before);
  EXPECT_EQ(kept(), before);  // from the kept copies

  {  // An optimizer-like in-place update of every parameter.
    c10::NoGradGuard no_grad;
    const_cast<at::Tensor&>(model.flat_params()).mul_(1.5);
  }
  const double after = kept();
  EXPECT_NE(after, before);
  EXPECT_EQ(after, fresh());

  {  // A checkpoint-like copy into the parameters.
    c10::NoGradGuard no_grad;
    const_cast<at::Tensor&>(model.flat_params())
        .copy_(model.flat_params() / 1.5);
  }
  EXPECT_EQ(kept(), fresh());
}

INSTANTIATE_TEST_SUITE_P(ComputeDtypes, KeptCopiesTest,
                         ::testing::Values(at::kFloat, at::kBFloat16));

}  // namespace
}  // namespace dcvlr::trainer
