"""Fused CPU kernels for the labels of bilinearly upsampled logits (``lib/ops/csrc/upsample_argmax_cpu.cpp``),
computed row by row without storing the full-resolution maps; where they are not built, the fast path uses PyTorch.
``grid``: the bilinear resize of ``F.interpolate`` as ``(rows_lower, rows_upper, rows_weight, cols_lower, cols_upper,
cols_weight)`` (int64, int64, float32 per axis), built by ``lib.infer.labels``."""
import torch

try:
    from lib.ops import _upsample_argmax_cpu  # noqa: F401  (imported for its operator registrations)
    _LOADED = True
except ImportError:  # not built (no compiler at install time) or built against another torch
    _LOADED = False


def available():
    """True when the compiled CPU kernels are importable."""
    return _LOADED


def _plain(x):
    return x.float().contiguous()


def upsample_argmax(logits, grid):
    """``F.interpolate(logits, size, mode='bilinear').argmax(1)``: logits (N, C, h, w) on the CPU -> (N, H, W) int64,
    H and W the lengths of the grid's rows and columns."""
    return torch.ops.davss.upsample_argmax(_plain(logits), *grid)


def upsample_merge_argmax(propagated, distortion, correction, grid):
    """The non-key tail ``argmax(up(p) * (1 - up(d)) + up(q) * up(d))``: propagated, correction (N, C, h, w) and
    distortion (N, 1, h, w) on the CPU -> (N, H, W) int64."""
    return torch.ops.davss.upsample_merge_argmax(_plain(propagated), _plain(distortion), _plain(correction), *grid)
