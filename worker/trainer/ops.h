// The decoder's element-wise functions, each an autograd function of its
// own: forward and backward write straight into the halves of one tensor,
// where the composite ops would allocate temporaries and, going backward,
// concatenate the halves' gradients. Any dtype and device.
#ifndef DCVLR_WORKER_TRAINER_OPS_H_
#define DCVLR_WORKER_TRAINER_OPS_H_

#include <ATen/core/Tensor.h>

namespace dcvlr::trainer {

// Qwen2's rotary embedding in the rotate-half layout, of q or k
// [B, heads, T, D] with the tables' rows for its positions ([T, D] or
// [B, 1, T, D]; each row holds its angles twice, [cos, cos] and [sin, sin]):
//   x * cos + [-x2, x1] * sin   for x = [x1, x2] along the last dimension.
// Differentiable in x only.
at::Tensor Rope(const at::Tensor& x, const at::Tensor& cos,
                const at::Tensor& sin);

// SwiGLU of the gate and up projections side by side, gate_up [.., 2 * I]:
// silu(gate) * up, [.., I]. Backward recomputes silu from the saved input
// instead of keeping it.
at::Tensor SwiGlu(const at::Tensor& gate_up);

}  // namespace dcvlr::trainer

#endif  // DCVLR_WORKER_TRAINER_OPS_H_
