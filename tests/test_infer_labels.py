"""lib.infer.labels: the exact tail and the fast path's label tails, against naive loops and float64 references,
with the compiled CPU kernels and with the PyTorch computation they replace."""
import pytest
import torch
import torch.nn.functional as F

import lib.infer.labels as labels_module
from lib.infer.labels import (
    DENSE_BOUNDARY_FRACTION,
    bilinear_argmax,
    channel_argmax,
    correction_labels,
    logits_to_labels,
    sparse_merge_argmax,
    upsample_labels,
)
from lib.model.scnet import merge_logits
from lib.ops import upsample_argmax as compiled_labels


@pytest.fixture(params=['compiled', 'torch'])
def label_kernels(request, monkeypatch):
    """Runs a test with the compiled CPU label kernels and again with the PyTorch computation they replace."""
    if request.param == 'compiled':
        if not compiled_labels.available():
            pytest.skip('the CPU label kernels are not built (no C++ compiler at install time)')
    else:
        monkeypatch.setattr(labels_module, '_use_fused', lambda maps: False)
    return request.param


def naive_nearest(labels, size, align_corners):
    """Per-pixel loop: output pixel (y, x) reads the source pixel nearest to its position on the input grid."""
    n, h, w = labels.shape
    out = torch.empty(n, *size, dtype=labels.dtype)
    for y in range(size[0]):
        sy = y * (h - 1) / (size[0] - 1) if align_corners else (y + 0.5) * h / size[0] - 0.5
        for x in range(size[1]):
            sx = x * (w - 1) / (size[1] - 1) if align_corners else (x + 0.5) * w / size[1] - 0.5
            iy = min(max(int(torch.tensor(sy).round()), 0), h - 1)
            ix = min(max(int(torch.tensor(sx).round()), 0), w - 1)
            out[:, y, x] = labels[:, iy, ix]
    return out


@pytest.mark.parametrize('align_corners', [True, False])
def test_upsample_labels_matches_naive_loop(align_corners):
    labels = torch.randint(0, 19, (2, 5, 7))
    expected = naive_nearest(labels, (20, 28), align_corners)
    assert torch.equal(upsample_labels(labels, (20, 28), align_corners), expected)


def test_logits_to_labels_full_tail_is_bilinear_then_argmax():
    logits = torch.randn(1, 19, 6, 8)
    expected = F.interpolate(logits, size=(24, 32), mode='bilinear', align_corners=True).argmax(1)
    assert torch.equal(logits_to_labels(logits, (24, 32), True, 'full'), expected)
    assert torch.equal(logits_to_labels(logits, (6, 8), True, 'full'), logits.argmax(1))


def test_channel_argmax_is_argmax_with_first_index_on_ties():
    x = torch.randint(0, 4, (2, 19, 9, 11)).float()  # many ties
    assert torch.equal(channel_argmax(x), x.argmax(1))


def naive_bilinear_argmax(logits, size, align_corners):
    """float64 bilinear resize written out per output row and column (PyTorch's source-index rule), then argmax."""
    n, c, h, w = logits.shape
    x = logits.double()

    def source(n_out, n_in):
        out = []
        for i in range(n_out):
            if align_corners:
                pos = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
            else:
                pos = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            lo = min(int(pos), n_in - 1)
            out.append((lo, min(lo + 1, n_in - 1), pos - lo))
        return out
    rows, cols = source(size[0], h), source(size[1], w)
    out = torch.empty(n, *size, dtype=torch.int64)
    for i, (y0, y1, wy) in enumerate(rows):
        top = x[:, :, y0] * (1 - wy) + x[:, :, y1] * wy  # (N, C, w)
        for j, (x0, x1, wx) in enumerate(cols):
            out[:, i, j] = (top[:, :, x0] * (1 - wx) + top[:, :, x1] * wx).argmax(1)
    return out


@pytest.mark.parametrize('align_corners', [True, False])
def test_bilinear_argmax_matches_resize_then_argmax(align_corners, label_kernels):
    generator = torch.Generator().manual_seed(0)
    # Region-like logits (blocks of one class: few boundaries, the sparse path) and noise (boundaries everywhere:
    # the dense path).
    blocks = torch.randint(0, 19, (2, 3, 4), generator=generator).repeat_interleave(12, 1).repeat_interleave(12, 2)
    one_hot = F.one_hot(blocks, 19).permute(0, 3, 1, 2).float()
    smooth = 3 * one_hot + 0.3 * torch.randn(2, 19, 36, 48, generator=generator)
    noisy = torch.randn(2, 19, 36, 48, generator=generator)
    for logits, dense in ((smooth, False), (noisy, True)):
        assert (boundary_cells(logits.argmax(1)) > DENSE_BOUNDARY_FRACTION) == dense
        got = bilinear_argmax(logits, (144, 192), align_corners)
        resized = F.interpolate(logits, size=(144, 192), mode='bilinear', align_corners=align_corners)
        reference = naive_bilinear_argmax(logits, (144, 192), align_corners)
        # Where the two best classes are not within float32 rounding, all three agree exactly.
        top2 = resized.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-5
        assert torch.equal(got[clear], reference[clear])
        assert torch.equal(got[clear], resized.argmax(1)[clear])
        assert clear.float().mean() > 0.99
    assert torch.equal(logits_to_labels(smooth, (144, 192), align_corners, 'quarter_merge'),
                       bilinear_argmax(smooth, (144, 192), align_corners))


@pytest.mark.parametrize('align_corners', [True, False])
def test_sparse_merge_argmax_gives_the_full_tail_labels(align_corners, label_kernels):
    generator = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, 19, (2, 3, 4), generator=generator).repeat_interleave(12, 1).repeat_interleave(12, 2)
    propagated = 3 * F.one_hot(blocks, 19).permute(0, 3, 1, 2).float() + 0.3 * torch.randn(2, 19, 36, 48,
                                                                                           generator=generator)
    # CFNet mostly agrees, except in one block; the distortion is high there and varies smoothly elsewhere.
    correction = propagated + 0.2 * torch.randn(2, 19, 36, 48, generator=generator)
    correction[:, :, :12, :12] = torch.randn(2, 19, 12, 12, generator=generator) * 3
    distortion = torch.rand(2, 1, 36, 48, generator=generator) * 0.3
    distortion[:, :, :14, :14] = 0.9
    for p, d, c in ((propagated, distortion, correction),
                    (torch.randn(1, 19, 36, 48), torch.rand(1, 1, 36, 48), torch.randn(1, 19, 36, 48))):
        size = (4 * p.shape[-2], 4 * p.shape[-1])
        merged = {}
        for name, dtype in (('float', torch.float32), ('double', torch.float64)):
            up = [F.interpolate(x.to(dtype), size=size, mode='bilinear', align_corners=align_corners)
                  for x in (p, d, c)]
            merged[name] = up[0] * (1 - up[1]) + up[2] * up[1]
        got = sparse_merge_argmax(p, d, c, size, align_corners)
        top2 = merged['double'].topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-5
        assert clear.float().mean() > 0.99
        assert torch.equal(got[clear], merged['double'].argmax(1)[clear])
        assert torch.equal(got[clear], merged['float'].argmax(1)[clear])


def boundary_cells(labels):
    """Fraction of 2x2 cells (last row/column paired with itself) holding more than one class."""
    pad = torch.cat((labels, labels[:, -1:]), 1)
    pad = torch.cat((pad, pad[:, :, -1:]), 2)
    a, b, c, d = pad[:, :-1, :-1], pad[:, 1:, :-1], pad[:, :-1, 1:], pad[:, 1:, 1:]
    return 1 - ((a == b) & (a == c) & (a == d)).float().mean().item()


def test_merge_logits_takes_propagated_where_undistorted_and_correction_where_distorted(label_kernels):
    generator = torch.Generator().manual_seed(2)
    propagated, correction = torch.randn(2, 1, 19, 8, 12, generator=generator).unbind(0)
    distortion = torch.rand(1, 1, 8, 12, generator=generator)
    expected = propagated.double() * (1 - distortion.double()) + correction.double() * distortion.double()
    assert torch.allclose(merge_logits(propagated, distortion, correction).double(), expected, atol=1e-6)
    for d, source in ((0.0, propagated), (1.0, correction)):
        out = {'propagated': propagated, 'distortion': torch.full_like(distortion, d), 'correction': correction}
        assert torch.equal(correction_labels(out, (32, 48), True, 'sparse'), bilinear_argmax(source, (32, 48), True))
