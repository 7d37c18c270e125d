"""resample2d: bilinear backward warping of a feature map by a dense flow field.

``out[b, c, y, x]`` is the bilinear sample of ``input[b, c]`` at ``(x + flow[b, 0, y, x], y + flow[b, 1, y, x])``;
sample positions outside the map read the nearest border pixel (the original CUDA kernel clamps each corner
to the border, which gives the same values as clamping the position).

Two implementations with the same semantics (docs/resample2d.md):
- ``resample2d_reference``: PyTorch ``grid_sample``; any device, any floating dtype.
- the CUDA extension ``lib.ops._resample2d_cuda`` (built by setup.py where a CUDA toolkit exists), registered as
  ``torch.ops.davss.resample2d_forward`` / ``resample2d_backward``; one memory-bound pass per direction.
``resample2d`` picks one: the ``impl`` argument, else the ``DAVSS_RESAMPLE2D`` environment variable
(``auto`` | ``cuda`` | ``torch``), else ``auto`` (the extension for CUDA tensors when it is built).
"""
import os

import torch
import torch.nn.functional as F

ENV_VAR = 'DAVSS_RESAMPLE2D'
IMPLEMENTATIONS = ('auto', 'cuda', 'torch')


def _load_extension():
    """Import the compiled extension (which registers torch.ops.davss.*); return (loaded, why_not)."""
    try:
        from . import _resample2d_cuda  # noqa: F401  (imported for its operator registrations)
    except ImportError as error:  # not built (CPU-only torch, no nvcc) or built against another torch
        return False, f'{type(error).__name__}: {error}'
    return True, None


_EXTENSION_LOADED, _EXTENSION_ERROR = _load_extension()


def cuda_extension_available():
    """True when the CUDA extension is built and importable (whether or not a GPU is present)."""
    return _EXTENSION_LOADED


def resample2d_reference(input, flow):
    """Pure PyTorch implementation (``grid_sample``, border padding, ``align_corners=True``).

    Args:
        input: (N, C, H, W) features to sample from.
        flow: (N, 2, H, W) displacement in pixels, channels (dx, dy).
    Returns:
        (N, C, H, W) warped features, same dtype as ``input``.
    """
    n, _, h, w = input.shape
    # Sample in float32 (float64 for double maps) whatever the storage dtype, as the CUDA kernel does: a half or
    # bfloat16 grid puts positions up to 0.25 px off at width 512 (bfloat16), and grid_sample on half CPU maps
    # returns garbage for large maps. For float32 and float64 maps the casts below are no-ops.
    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    position = torch.promote_types(compute, flow.dtype)
    ys = torch.arange(h, device=flow.device, dtype=position).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=position).view(1, 1, w)
    x = xs + flow[:, 0].to(position)  # (N, H, W)
    y = ys + flow[:, 1].to(position)
    # align_corners=True maps pixel centres 0 and W-1 to -1 and 1; guard 1-pixel maps against division by zero.
    grid = torch.stack((2.0 * x / max(w - 1, 1) - 1.0, 2.0 * y / max(h - 1, 1) - 1.0), dim=-1)  # (N, H, W, 2)
    out = F.grid_sample(input.to(compute), grid.to(compute), mode='bilinear', padding_mode='border',
                        align_corners=True)
    return out.to(input.dtype)

class _Resample2dCUDA(torch.autograd.Function):
    """Autograd wrapper of the extension's operators (first-order gradients w.r.t. input and flow)."""

    @staticmethod
    def forward(ctx, input, flow):
        ctx.save_for_backward(input, flow)
        return torch.ops.davss.resample2d_forward(input, flow)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        input, flow = ctx.saved_tensors
        need_input, need_flow = ctx.needs_input_grad
        grad_input, grad_flow = torch.ops.davss.resample2d_backward(grad_output, input, flow, need_input, need_flow,
                                                                    False)
        return (grad_input if need_input else None), (grad_flow if need_flow else None)


if _EXTENSION_LOADED and hasattr(torch.library, 'register_fake'):  # register_fake: torch >= 2.4
    # Shape-only versions of the operators, so torch.compile / FakeTensor tracing can run through them.
    @torch.library.register_fake('davss::resample2d_forward')
    def _resample2d_forward_fake(input, flow):
        return torch.empty_like(input, memory_format=torch.contiguous_format)

    @torch.library.register_fake('davss::resample2d_backward')
    def _resample2d_backward_fake(grad_output, input, flow, need_input_grad, need_flow_grad, deterministic=False):
        grad_input = torch.empty_like(input, memory_format=torch.contiguous_format) if need_input_grad \
            else input.new_empty(0)
        grad_flow = torch.empty_like(flow, memory_format=torch.contiguous_format) if need_flow_grad \
            else flow.new_empty(0)
        return grad_input, grad_flow


def _check_shapes(input, flow):
    if input.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f'resample2d: expected input (N, C, H, W) and flow (N, 2, H, W), '
                         f'got {tuple(input.shape)} and {tuple(flow.shape)}')
    if input.shape[0] != flow.shape[0] or input.shape[2:] != flow.shape[2:]:
        raise ValueError(f'resample2d: input {tuple(input.shape)} and flow {tuple(flow.shape)} differ in batch or size')
    if not (input.is_floating_point() and flow.is_floating_point()):
        raise TypeError(f'resample2d: expected floating point input and flow, got {input.dtype} and {flow.dtype}')
    if input.device != flow.device:
        raise ValueError(f'resample2d: input is on {input.device} but flow on {flow.device}')


def requested_implementation(impl=None):
    """The implementation asked for: ``impl`` if given, else ``$DAVSS_RESAMPLE2D``, else ``'auto'``."""
    source = 'impl' if impl is not None else ENV_VAR
    choice = impl if impl is not None else os.environ.get(ENV_VAR, 'auto')
    choice = choice.strip().lower()
    if choice not in IMPLEMENTATIONS:
        raise ValueError(f'resample2d: {source} must be one of {", ".join(IMPLEMENTATIONS)}, got {choice!r}')
    return choice


def _use_cuda_extension(input, impl):
    choice = requested_implementation(impl)
    if choice == 'torch':
        return False
    if choice == 'auto':
        return input.is_cuda and _EXTENSION_LOADED
    if not _EXTENSION_LOADED:
        raise RuntimeError(f'resample2d: the CUDA implementation was requested ({ENV_VAR}/impl=cuda) but the '
                           f'extension lib.ops._resample2d_cuda is not available ({_EXTENSION_ERROR}); build it with '
                           f'`pip install --no-build-isolation -e .` where nvcc exists, or use auto/torch')
    if not input.is_cuda:
        raise RuntimeError(f'resample2d: the CUDA implementation was requested ({ENV_VAR}/impl=cuda) but the input '
                           f'is on {input.device}')
    return True


def resample2d(input, flow, impl=None):
    """Warp ``input`` by ``flow`` (see the module docstring).

    Args:
        input: (N, C, H, W) features, float16 / bfloat16 / float32 / float64.
        flow: (N, 2, H, W) displacement in pixels, channels (dx, dy), on the same device.
        impl: None (use ``$DAVSS_RESAMPLE2D``, default ``'auto'``), ``'auto'``, ``'cuda'`` or ``'torch'``.
    Returns:
        (N, C, H, W) warped features in ``input``'s dtype.
    """
    _check_shapes(input, flow)
    if _use_cuda_extension(input, impl):
        return _Resample2dCUDA.apply(input, flow)
    return resample2d_reference(input, flow)
