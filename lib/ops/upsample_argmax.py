"""Fused CPU kernels for the labels of bilinearly upsampled logits (``lib/ops/csrc/upsample_argmax_cpu.cpp``).

``upsample_argmax(logits, grid)`` is ``F.interpolate(logits, size, mode='bilinear').argmax(1)`` and
``upsample_merge_argmax(p, d, q, grid)`` is the exact non-key tail ``argmax(up(p) * (1 - up(d)) + up(q) * up(d))``,
computed row by row without storing the full-resolution maps.  ``grid`` is the bilinear resize as
``(rows_lower, rows_upper, rows_weight, cols_lower, cols_upper, cols_weight)`` (int64, int64, float32 per axis;
``lib.infer.fast`` builds it the way ``F.interpolate`` does).  Built by setup.py where a C++ compiler exists;
``available()`` says whether it was, and the fast path uses PyTorch operations where it was not.
"""
import torch


def _load():
    try:
        from lib.ops import _upsample_argmax_cpu  # noqa: F401  (imported for its operator registrations)
    except ImportError:  # not built (no compiler at install time) or built against another torch
        return False
    return True


_LOADED = _load()


def available():
    """True when the compiled CPU kernels are importable."""
    return _LOADED


def _plain(x):
    return x.float().contiguous()


def upsample_argmax(logits, grid):
    """logits (N, C, h, w) on the CPU -> (N, H, W) int64, H and W the lengths of the grid's rows and columns."""
    return torch.ops.davss.upsample_argmax(_plain(logits), *grid)


def upsample_merge_argmax(propagated, distortion, correction, grid):
    """propagated, correction (N, C, h, w) and distortion (N, 1, h, w) on the CPU -> (N, H, W) int64."""
    return torch.ops.davss.upsample_merge_argmax(_plain(propagated), _plain(distortion), _plain(correction), *grid)
