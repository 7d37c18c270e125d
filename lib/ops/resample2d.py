"""resample2d: bilinear backward warping of a feature map by a dense flow field (semantics: docs/resample2d.md).

``out[b, c, y, x]`` samples ``input[b, c]`` at ``(x + flow[b, 0, y, x], y + flow[b, 1, y, x])``; positions outside
the map read the nearest border pixel (as the original kernel); a NaN flow component reads like -inf (the first
column or row) with a zero gradient.  ``impl``, else ``$DAVSS_RESAMPLE2D`` (``auto`` | ``cuda`` | ``torch``), else
``auto`` chooses between ``resample2d_reference`` (``grid_sample``) and the CUDA extension ``lib.ops._resample2d_cuda``
(``torch.ops.davss.*``): ``auto`` takes the extension where it is built and passes a one-time probe on the tensors'
GPU, else PyTorch after a one-line warning; ``cuda`` makes that an error."""
import math
import os
import warnings

import torch
import torch.nn.functional as F

ENV_VAR = 'DAVSS_RESAMPLE2D'
IMPLEMENTATIONS = ('auto', 'cuda', 'torch')

try:
    from lib.ops import _resample2d_cuda  # noqa: F401  (imported for its operator registrations)
    _EXTENSION_LOADED, _EXTENSION_ERROR = True, None
except ImportError as error:  # not built (CPU-only torch, no nvcc) or built against another torch
    _EXTENSION_LOADED, _EXTENSION_ERROR = False, f'{type(error).__name__}: {error}'


def cuda_extension_available():
    """True when the CUDA extension is built and importable (whether or not a GPU is present)."""
    return _EXTENSION_LOADED


def resample2d_reference(input, flow):
    """Pure PyTorch warp (``grid_sample``, border padding, ``align_corners=True``): input (N, C, H, W) and flow
    (N, 2, H, W) (dx, dy) in pixels -> (N, C, H, W) in ``input``'s dtype."""
    n, _, h, w = input.shape
    # Sample in float32 (float64 for double maps) as the CUDA kernel does: a bfloat16 grid puts positions up to
    # 0.25 px off at width 512, and grid_sample on large half CPU maps returns garbage.
    compute = torch.float64 if input.dtype == torch.float64 else torch.float32
    position = torch.promote_types(compute, flow.dtype)
    ys = torch.arange(h, device=flow.device, dtype=position).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=position).view(1, 1, w)
    x = xs + flow[:, 0].to(position)  # (N, H, W)
    y = ys + flow[:, 1].to(position)
    # align_corners=True maps pixel centres 0 and W-1 to -1 and 1; guard 1-pixel maps against division by zero.
    grid = torch.stack((2.0 * x / max(w - 1, 1) - 1.0, 2.0 * y / max(h - 1, 1) - 1.0), dim=-1)  # (N, H, W, 2)
    # NaN -> -1, the first pixel, where the CPU forward already puts it (its backward segfaults on NaN:
    # pytorch/pytorch#24823); other values and their gradients keep their bits.
    grid = grid.nan_to_num(nan=-1.0, posinf=math.inf, neginf=-math.inf)
    out = F.grid_sample(input.to(compute), grid.to(compute), mode='bilinear', padding_mode='border', align_corners=True)
    return out.to(input.dtype)


def scatter_grad_input(grad_output, flow):
    """Gradient (N, C, H, W) of resample2d w.r.t. its input from ``grad_output`` (N, C, H, W) and ``flow``, summed in
    float32 (or float64) in an order that does not change between runs: the 4 corner contributions
    (docs/resample2d.md) go through ``index_put_(accumulate=True)``, sorted by target on CUDA."""
    n, c, h, w = grad_output.shape
    acc = torch.float64 if torch.float64 in (grad_output.dtype, flow.dtype) else torch.float32
    xs = torch.arange(w, device=flow.device, dtype=acc).view(1, 1, w) + flow[:, 0].to(acc)  # (N, H, W)
    ys = torch.arange(h, device=flow.device, dtype=acc).view(1, h, 1) + flow[:, 1].to(acc)
    # As the kernel: positions clamped to [-1, size] first (huge flows; NaN reads -1), each corner clamped to the map.
    xs, ys = xs.clamp(-1, w).nan_to_num_(-1.0), ys.clamp(-1, h).nan_to_num_(-1.0)
    x0, y0 = xs.floor(), ys.floor()
    alpha, beta = xs - x0, ys - y0
    x0, y0 = x0.long(), y0.long()
    left, right = x0.clamp(0, w - 1), (x0 + 1).clamp(0, w - 1)
    top, bottom = y0.clamp(0, h - 1) * w, (y0 + 1).clamp(0, h - 1) * w
    targets = torch.stack((top + left, top + right, bottom + left, bottom + right), dim=1).view(n, 4 * h * w)
    weights = torch.stack(((1 - alpha) * (1 - beta), alpha * (1 - beta), (1 - alpha) * beta, alpha * beta), dim=1)
    # (N, 4, H*W, C): channels last, so that one index moves a whole row of channels.
    values = weights.view(n, 4, h * w, 1) * grad_output.to(acc).reshape(n, 1, c, h * w).transpose(2, 3)
    batches = torch.arange(n, device=flow.device).view(n, 1).expand(n, 4 * h * w)
    grad_input = torch.zeros(n, h * w, c, device=grad_output.device, dtype=acc)
    grad_input.index_put_((batches, targets), values.reshape(n, 4 * h * w, c), accumulate=True)
    return grad_input.transpose(1, 2).reshape(n, c, h, w).to(grad_output.dtype)


class _Resample2dCUDA(torch.autograd.Function):
    """Autograd wrapper of the extension's operators (first-order gradients w.r.t. input and flow)."""

    @staticmethod
    def forward(ctx, input, flow):
        ctx.save_for_backward(input, flow)
        return torch.ops.davss.resample2d_forward(input, flow)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        return cuda_backward(grad_output, *ctx.saved_tensors, *ctx.needs_input_grad)


def cuda_backward(grad_output, input, flow, need_input, need_flow, backward_op=None):
    """Both gradients through ``backward_op`` (default ``torch.ops.davss.resample2d_backward``); None where not
    needed. Deterministic algorithms use no atomics: the flow gradient one thread per pixel, the input gradient from
    :func:`scatter_grad_input`."""
    backward_op = backward_op or torch.ops.davss.resample2d_backward
    if torch.are_deterministic_algorithms_enabled():
        grad_flow = backward_op(grad_output, input, flow, False, True, True)[1] if need_flow else None
        grad_input = scatter_grad_input(grad_output, flow).to(input.dtype) if need_input else None
        return grad_input, grad_flow
    grad_input, grad_flow = backward_op(grad_output, input, flow, need_input, need_flow, False)
    return (grad_input if need_input else None), (grad_flow if need_flow else None)


if _EXTENSION_LOADED:
    # Shape-only versions of the operators, so torch.compile / FakeTensor tracing can run through them.
    @torch.library.register_fake('davss::resample2d_forward')
    def _resample2d_forward_fake(input, flow):
        return torch.empty_like(input, memory_format=torch.contiguous_format)

    @torch.library.register_fake('davss::resample2d_backward')
    def _resample2d_backward_fake(grad_output, input, flow, need_input_grad, need_flow_grad, deterministic=False):
        def grad(like, needed):
            return torch.empty_like(like, memory_format=torch.contiguous_format) if needed else like.new_empty(0)
        return grad(input, need_input_grad), grad(flow, need_flow_grad)


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


_DEVICE_PROBLEMS = {}  # device -> why the extension cannot run there (None: it can), probed once
_WARNED = set()  # reasons already warned about: `auto` warns once per reason


def _probe_extension(device):
    """None when the extension runs on a tiny case on ``device`` and agrees with the reference, else why not (one
    line): catches a build without code for this GPU ("no kernel image is available") before it reaches a model."""
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(1, 3, 4, 5, generator=generator).to(device)
    flow = (torch.rand(1, 2, 4, 5, generator=generator) * 6 - 3).to(device)
    major, minor = torch.cuda.get_device_capability(device)
    name = f'{device} ({torch.cuda.get_device_name(device)}, sm_{major}{minor})'
    try:
        out = torch.ops.davss.resample2d_forward(input, flow)
        torch.ops.davss.resample2d_backward(torch.ones_like(out), input, flow, True, True, False)
        torch.cuda.synchronize(device)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f'the CUDA extension cannot run on {name}: {first_line}'
    if not torch.allclose(out, resample2d_reference(input, flow), rtol=1e-4, atol=1e-4):
        return f'the CUDA extension gives wrong results on {name}'
    return None


def extension_problem(device):
    """Why the CUDA extension cannot warp tensors on ``device`` (a CUDA ``torch.device``), or None when it can."""
    if not _EXTENSION_LOADED:
        return (f'the extension lib.ops._resample2d_cuda is not available ({_EXTENSION_ERROR}); build it with '
                f'`pip install --no-build-isolation -e .` where nvcc exists')
    if device not in _DEVICE_PROBLEMS:
        # No probe while torch.compile traces or a CUDA graph is captured (it copies to the device and
        # synchronises): the extension is used as built, and a missing kernel image fails there loudly.
        if torch.compiler.is_compiling() or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()):
            return None
        _DEVICE_PROBLEMS[device] = _probe_extension(device)
    return _DEVICE_PROBLEMS[device]


def _use_cuda_extension(device, impl):
    """True to warp tensors on ``device`` with the extension, as ``impl``, else ``$DAVSS_RESAMPLE2D``, else ``auto``
    asks (see the module docstring)."""
    source = 'impl' if impl is not None else ENV_VAR
    choice = (impl if impl is not None else os.environ.get(ENV_VAR, 'auto')).strip().lower()
    if choice not in IMPLEMENTATIONS:
        raise ValueError(f'resample2d: {source} must be one of {", ".join(IMPLEMENTATIONS)}, got {choice!r}')
    if choice == 'torch' or (choice == 'auto' and device.type != 'cuda'):
        return False
    off_gpu_with_extension = device.type != 'cuda' and _EXTENSION_LOADED
    problem = f'the input is on {device}' if off_gpu_with_extension else extension_problem(device)
    if problem is None:
        return True
    if choice == 'cuda':
        raise RuntimeError(f'resample2d: the CUDA implementation was requested ({ENV_VAR}/impl=cuda) but {problem}')
    if problem not in _WARNED:
        _WARNED.add(problem)
        warnings.warn(f'resample2d: {problem}; using the PyTorch implementation (set {ENV_VAR}=torch to silence '
                      f'this, or {ENV_VAR}=cuda to make it an error)', RuntimeWarning, stacklevel=3)
    return False


def resample2d(input, flow, impl=None):
    """Warp ``input`` (N, C, H, W), any floating dtype, by ``flow`` (N, 2, H, W) (dx, dy) in pixels on the same device
    -> (N, C, H, W) in ``input``'s dtype; ``impl``: None, ``'auto'``, ``'cuda'`` or ``'torch'`` (module docstring)."""
    _check_shapes(input, flow)
    if _use_cuda_extension(input.device, impl):
        return _Resample2dCUDA.apply(input, flow)
    return resample2d_reference(input, flow)
