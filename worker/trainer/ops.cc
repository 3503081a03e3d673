// The decoder's element-wise functions; see ops.h.
#include "worker/trainer/ops.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

namespace dcvlr::trainer {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// out = [x1 * c - x2 * s, x2 * c + x1 * s] for x = [x1, x2] and the
// tables' first halves c, s: each pair (x1[i], x2[i]) rotated by its angle.
struct RopeFn : public torch::autograd::Function<RopeFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& cos, const at::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return Rotate(x, cos, sin, 1.0);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The transpose of a rotation is the rotation by minus the angle.
    auto saved = ctx->get_saved_variables();
    return {Rotate(grads[0], saved[0], saved[1], -1.0), at::Tensor(),
            at::Tensor()};
  }
  static at::Tensor Rotate(const at::Tensor& x, const at::Tensor& cos,
                           const at::Tensor& sin, double sign) {
    const int64_t half = x.size(-1) / 2;
    auto c = cos.narrow(-1, 0, half), s = sin.narrow(-1, 0, half);
    auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
    at::Tensor out = at::empty(x.sizes(), x.options());
    auto o1 = out.narrow(-1, 0, half), o2 = out.narrow(-1, half, half);
    at::mul_out(o1, x1, c).addcmul_(x2, s, -sign);
    at::mul_out(o2, x2, c).addcmul_(x1, s, sign);
    return out;
  }
};

struct SwiGluFn : public torch::autograd::Function<SwiGluFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate_up) {
    ctx->save_for_backward({gate_up});
    const int64_t i = gate_up.size(-1) / 2;
    return at::silu(gate_up.narrow(-1, 0, i)).mul_(gate_up.narrow(-1, i, i));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor gate_up = ctx->get_saved_variables()[0];
    const at::Tensor& grad = grads[0];
    const int64_t i = gate_up.size(-1) / 2;
    auto gate = gate_up.narrow(-1, 0, i), up = gate_up.narrow(-1, i, i);
    at::Tensor out = at::empty(gate_up.sizes(), gate_up.options());
    auto d_gate = out.narrow(-1, 0, i), d_up = out.narrow(-1, i, i);
    at::silu_backward_out(d_gate, grad * up, gate);
    at::silu_out(d_up, gate).mul_(grad);
    return {out};
  }
};

}  // namespace

at::Tensor Rope(const at::Tensor& x, const at::Tensor& cos,
                const at::Tensor& sin) {
  return RopeFn::apply(x, cos, sin);
}

at::Tensor SwiGlu(const at::Tensor& gate_up) {
  return SwiGluFn::apply(gate_up);
}

}  // namespace dcvlr::trainer
