// The decoder's element-wise functions against the composite ops they
// replace: same values and same input gradients, in double precision, for
// the layouts the model feeds them (strided views, both table shapes).
#include "worker/trainer/ops.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <functional>
#include <utility>

namespace dcvlr::trainer {
namespace {

at::Tensor Random(at::IntArrayRef shape, int64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::TensorOptions(at::kDouble));
}

// Value and gradient with respect to `input` of f(input) . upstream.
std::pair<at::Tensor, at::Tensor> ValueAndGrad(
    const at::Tensor& input, const at::Tensor& upstream,
    const std::function<at::Tensor(const at::Tensor&)>& f) {
  at::Tensor leaf = input.detach().clone().requires_grad_(true);
  at::Tensor out = f(leaf);
  (out * upstream).sum().backward();
  return {out.detach(), leaf.grad()};
}

void ExpectClose(const at::Tensor& a, const at::Tensor& b) {
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-12);
}

TEST(OpsTest, RopeMatchesTheRotateHalfFormula) {
  const int64_t b = 2, heads = 3, t = 5, d = 8;
  // Angles as the model's tables hold them: each one twice per row.
  auto angles = Random({t, d / 2}, 1);
  auto table = at::cat({angles, angles}, -1);
  auto reference = [](const at::Tensor& cos, const at::Tensor& sin) {
    return [cos, sin](const at::Tensor& x) {
      auto halves = x.chunk(2, -1);
      return x * cos + at::cat({-halves[1], halves[0]}, -1) * sin;
    };
  };
  // q as the model slices it: heads moved out of a wider projection output.
  auto wide = Random({b, t, heads * d + 4}, 2);
  auto x = wide.narrow(-1, 0, heads * d).view({b, t, heads, d}).transpose(1, 2);
  auto upstream = Random({b, heads, t, d}, 3);
  for (bool per_row : {false, true}) {
    SCOPED_TRACE(per_row ? "tables per row [B, 1, T, D]" : "tables [T, D]");
    at::Tensor cos = table.cos(), sin = table.sin();
    if (per_row) {
      cos = cos.unsqueeze(0).unsqueeze(0).expand({b, 1, t, d}).contiguous();
      sin = sin.unsqueeze(0).unsqueeze(0).expand({b, 1, t, d}).contiguous();
    }
    auto [want, want_grad] = ValueAndGrad(x, upstream, reference(cos, sin));
    auto [got, got_grad] = ValueAndGrad(
        x, upstream, [&](const at::Tensor& v) { return Rope(v, cos, sin); });
    ExpectClose(got, want);
    ExpectClose(got_grad, want_grad);
  }
}

TEST(OpsTest, SwiGluMatchesSiluOfGateTimesUp) {
  const int64_t i = 6;
  auto gate_up = Random({2, 4, 2 * i}, 4);
  auto upstream = Random({2, 4, i}, 5);
  auto [want, want_grad] =
      ValueAndGrad(gate_up, upstream, [](const at::Tensor& x) {
        auto halves = x.chunk(2, -1);
        return at::silu(halves[0]) * halves[1];
      });
  auto [got, got_grad] = ValueAndGrad(gate_up, upstream, SwiGlu);
  ExpectClose(got, want);
  ExpectClose(got_grad, want_grad);
  // Gradients reach both halves (neither is left unwritten).
  EXPECT_GT(got_grad.narrow(-1, 0, i).abs().sum().item<double>(), 0);
  EXPECT_GT(got_grad.narrow(-1, i, i).abs().sum().item<double>(), 0);
}

}  // namespace
}  // namespace dcvlr::trainer
