// resample2d, CUDA implementation (docs/resample2d.md; PyTorch reference in lib/ops/resample2d.py).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace davss {

// (N, C, H, W) input, (N, 2, H, W) flow (any floating dtype) -> (N, C, H, W) output in input's dtype.
at::Tensor resample2d_forward_cuda(const at::Tensor& input, const at::Tensor& flow);

// Gradients w.r.t. input (input's dtype) and flow (flow's dtype); an empty (0-element) tensor where not requested.
// deterministic: grad_flow without atomics (bitwise reproducible); grad_input must then not be requested.
std::tuple<at::Tensor, at::Tensor> resample2d_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                                            const at::Tensor& flow, bool need_input_grad,
                                                            bool need_flow_grad, bool deterministic);

}  // namespace davss
