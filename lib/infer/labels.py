"""The labels of a frame from logits at 1/4 resolution: the exact tail and the fast path's tails."""
import functools

import torch
import torch.nn.functional as F

from lib.model.scnet import merge_logits
from lib.ops import upsample_argmax as fused_labels

TAILS = ('full', 'sparse', 'quarter_merge', 'quarter_argmax')
# Above this fraction of 1/4-grid cells on a class boundary, bilinear_argmax resizes the whole map instead.
DENSE_BOUNDARY_FRACTION = 0.25


def upsample_labels(labels, size, align_corners):
    """Nearest-neighbour resize of labels (N, h, w) -> (N, H, W) at ``size``, on the bilinear resizes' pixel grid."""
    rows = _nearest_source_index(size[0], labels.shape[1], align_corners, labels.device)
    cols = _nearest_source_index(size[1], labels.shape[2], align_corners, labels.device)
    return labels.index_select(1, rows).index_select(2, cols)


def _nearest_source_index(n_out, n_in, align_corners, device):
    position = torch.arange(n_out, device=device, dtype=torch.float64)
    if align_corners:
        source = position * (n_in - 1) / max(n_out - 1, 1)
    else:
        source = (position + 0.5) * n_in / n_out - 0.5
    return source.round().clamp(0, n_in - 1).long()


def logits_to_labels(logits, size, align_corners, tail='full'):
    """Logits (N, C, h, w) -> class map (N, H, W) int64 at ``size``: bilinear resize then argmax (``full``; the same
    labels by :func:`bilinear_argmax` for ``sparse`` and ``quarter_merge``), or argmax then nearest resize."""
    size = tuple(size)
    if tuple(logits.shape[-2:]) == size:
        return logits.argmax(1)
    if tail == 'quarter_argmax':
        return upsample_labels(logits.argmax(1), size, align_corners)
    if tail in ('sparse', 'quarter_merge'):
        return bilinear_argmax(logits.float(), size, align_corners)
    # fp32 for the resize: a bf16 upsample would create ties the argmax then breaks arbitrarily.
    upsampled = F.interpolate(logits.float(), size=size, mode='bilinear', align_corners=align_corners)
    return upsampled.argmax(1)  # (N, H, W)


def channel_argmax(x):
    """``x.argmax(1)`` (first maximum wins) for (N, C, H, W), a pass per contiguous plane: faster on CPU for C = 19."""
    best = x[:, 0].clone()
    index = torch.zeros(best.shape, dtype=torch.int64, device=x.device)
    for c in range(1, x.shape[1]):
        plane = x[:, c]
        index.masked_fill_(plane > best, c)
        torch.maximum(best, plane, out=best)
    return index


def _bilinear_source(n_out, n_in, align_corners, device):
    """Source rows (or columns) of ``F.interpolate``'s bilinear resize: lower, upper index, upper weight (float32)."""
    position = torch.arange(n_out, device=device, dtype=torch.float64)
    if align_corners:
        source = position * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        source = ((position + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    lower = source.floor().long().clamp(0, n_in - 1)
    upper = (lower + 1).clamp_max(n_in - 1)
    return lower, upper, (source - lower).float()


@functools.lru_cache(maxsize=16)
def _bilinear_grid(source_size, size, align_corners, device):
    """The bilinear resize grid (rows, then columns) the compiled kernels take; cached, as a stream reuses it."""
    return (*_bilinear_source(size[0], source_size[0], align_corners, device),
            *_bilinear_source(size[1], source_size[1], align_corners, device))


def _use_fused(maps):
    return maps.device.type == 'cpu' and fused_labels.available()


def bilinear_argmax(logits, size, align_corners):
    """``F.interpolate(logits, size, 'bilinear').argmax(1)``, logits (N, C, h, w) -> (N, H, W) int64, resizing only
    where needed: a convex combination of 4 source pixels that share one argmax class has that class too (rounding
    is monotonic), so only pixels whose sources disagree are interpolated, in F.interpolate's order."""
    if _use_fused(logits):
        return fused_labels.upsample_argmax(logits, _bilinear_grid(tuple(logits.shape[-2:]), tuple(size),
                                                                   align_corners, logits.device))

    def dense():
        return channel_argmax(F.interpolate(logits, size=tuple(size), mode='bilinear', align_corners=align_corners))
    return _sparse_argmax(logits, channel_argmax(logits), size, align_corners, lambda maps: maps, dense)


def sparse_merge_argmax(propagated, distortion, correction, size, align_corners):
    """The labels (N, H, W) int64 of the exact non-key tail, ``argmax(up(P) * (1 - up(D)) + up(C) * up(D))``, from
    propagated, correction (N, C, h, w) and distortion (N, 1, h, w).  The merge is a convex combination of the 8
    vectors ``P_k, C_k`` of 4 sources: where all 8 share one argmax class, so does the merge; elsewhere the maps are
    interpolated and merged as the exact tail does (on CPU by :mod:`lib.ops.upsample_argmax`, row by row)."""
    if _use_fused(propagated):
        grid = _bilinear_grid(tuple(propagated.shape[-2:]), tuple(size), align_corners, propagated.device)
        return fused_labels.upsample_merge_argmax(propagated, distortion, correction, grid)
    c = propagated.shape[1]
    maps = torch.cat((propagated.float(), correction.float(), distortion.float()), 1)  # (N, 2C + 1, h, w)
    label_p, label_c = channel_argmax(propagated), channel_argmax(correction)
    key = torch.where(label_p == label_c, label_p, torch.full_like(label_p, -1))  # -1: the two disagree

    def merge(values):  # (..., 2C + 1) interpolated maps -> (..., C) merged logits
        return merge_logits(values[..., :c], values[..., 2 * c:], values[..., c:2 * c])

    def dense():  # the original tail, with the faster argmax
        up = [F.interpolate(x.float(), size=tuple(size), mode='bilinear', align_corners=align_corners)
              for x in (propagated, distortion, correction)]
        return channel_argmax(merge_logits(*up))
    return _sparse_argmax(maps, key, size, align_corners, merge, dense)


def _sparse_argmax(maps, key, size, align_corners, combine, dense):
    """Labels at ``size`` from 1/4 maps: output pixels whose 4 sources share one ``key`` (N, h, w; -1: none) take it,
    the others ``argmax(combine(bilinear sample of maps))``; ``dense()`` when boundaries are too many."""
    if maps.device.type == 'meta':  # FLOP counting: no values; the dense resize is the upper bound
        return dense()
    n, k, h, w = maps.shape
    y0, y1, ly = _bilinear_source(size[0], h, align_corners, maps.device)
    x0, x1, lx = _bilinear_source(size[1], w, align_corners, maps.device)
    # Does each source cell (row i and i+1, column j and j+1, clamped) hold one key?
    down = torch.cat((key[:, 1:], key[:, -1:]), 1)
    right = torch.cat((key[:, :, 1:], key[:, :, -1:]), 2)
    diagonal = torch.cat((right[:, 1:], right[:, -1:]), 1)
    uniform = (key >= 0) & (key == down) & (key == right) & (key == diagonal)  # (N, h, w)
    if uniform.float().mean() < 1 - DENSE_BOUNDARY_FRACTION:
        # Boundaries almost everywhere (noise-like logits): gathering them costs more than resizing everything.
        return dense()
    # y1 is y0 + 1 or, on the last row, y0 itself, for which "uniform" is as strict as needed.
    out = key.clamp_min(0).index_select(1, y0).index_select(2, x0)  # (N, H, W)
    mixed = ~uniform.index_select(1, y0).index_select(2, x0)
    b, row, col = mixed.nonzero(as_tuple=True)
    if b.numel():
        flat = maps.permute(0, 2, 3, 1).reshape(n * h * w, k)  # (N*h*w, K): one gather per corner

        def corner(rows, cols):
            return flat.index_select(0, (b * h + rows[row]) * w + cols[col])  # (M, K)

        wy, wx = ly[row, None], lx[col, None]
        top = corner(y0, x0) * (1 - wx) + corner(y0, x1) * wx
        bottom = corner(y1, x0) * (1 - wx) + corner(y1, x1) * wx
        out[b, row, col] = combine(top * (1 - wy) + bottom * wy).argmax(1)
    return out


def correction_labels(out, size, align_corners, tail):
    """Labels of a non-key frame from ``SCNet.correct``'s dict computed under ``tail`` (full resolution for
    ``full``, 1/4 otherwise): the ``sparse`` tail reads the three maps, the others the merged logits."""
    if tail == 'sparse':
        return sparse_merge_argmax(out['propagated'], out['distortion'], out['correction'], size, align_corners)
    return logits_to_labels(out['merged'], size, align_corners, tail)
