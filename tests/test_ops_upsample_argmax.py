"""lib.ops.upsample_argmax: the compiled CPU label kernels, against float64 references written out here."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lib.infer import fast, labels
from lib.ops import upsample_argmax as kernels
from lib.utils.config import REPO_ROOT

needs_kernels = pytest.mark.skipif(not kernels.available(), reason='the CPU label kernels are not built')


def test_the_kernels_are_built_wherever_a_compiler_is():
    # setup.py builds them whenever it finds the C++ compiler; a silent build failure would only slow the fast
    # path down (it falls back to PyTorch), so it is caught here.
    if shutil.which(os.environ.get('CXX', 'c++')) is None:
        pytest.skip('no C++ compiler on PATH')
    assert kernels.available()


def grid(source_size, size, align_corners):
    return labels._bilinear_grid(source_size, size, align_corners, "cpu")


def reference_resize(x, size, align_corners):
    """float64 bilinear resize, each output value from its four source values by F.interpolate's source rule."""
    h, w = x.shape[-2:]

    def axis(n_out, n_in):
        i = torch.arange(n_out, dtype=torch.float64)
        if align_corners:
            pos = i * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        else:
            pos = ((i + 0.5) * n_in / n_out - 0.5).clamp_min(0)
        lo = pos.floor().long().clamp(0, n_in - 1)
        return lo, (lo + 1).clamp_max(n_in - 1), pos - lo

    y0, y1, wy = axis(size[0], h)
    x0, x1, wx = axis(size[1], w)
    x = x.double()
    top = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return top[..., x0] * (1 - wx) + top[..., x1] * wx


def clear_pixels(values):
    """Pixels whose two best classes are more than float32 rounding apart."""
    top2 = values.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) > 1e-5


def region_logits(generator, n, c, h, w):
    blocks = torch.randint(0, c, (n, 3, 4), generator=generator)
    blocks = blocks.repeat_interleave(-(-h // 3), 1)[:, :h].repeat_interleave(-(-w // 4), 2)[:, :, :w]
    return 3 * F.one_hot(blocks, c).permute(0, 3, 1, 2).double() + 0.5 * torch.randn(n, c, h, w, generator=generator,
                                                                                    dtype=torch.float64)


@needs_kernels
@pytest.mark.parametrize('align_corners', [True, False])
@pytest.mark.parametrize('source, size', [((36, 48), (144, 192)), ((37, 50), (145, 203)), ((9, 7), (9, 7)),
                                          ((1, 5), (4, 20))])
def test_upsample_argmax_is_the_argmax_of_the_resize(align_corners, source, size):
    generator = torch.Generator().manual_seed(0)
    for logits in (region_logits(generator, 2, 19, *source), torch.randn(2, 19, *source, generator=generator)):
        logits = logits.float()
        got = kernels.upsample_argmax(logits, grid(source, size, align_corners))
        reference = reference_resize(logits, size, align_corners)
        assert got.shape == (2, *size) and got.dtype == torch.int64
        clear = clear_pixels(reference)
        assert clear.float().mean() > 0.99
        assert torch.equal(got[clear], reference.argmax(1)[clear])


@needs_kernels
@pytest.mark.parametrize('align_corners', [True, False])
def test_upsample_merge_argmax_is_the_exact_tail(align_corners):
    generator = torch.Generator().manual_seed(1)
    n, c, h, w = 2, 19, 32, 40
    size = (4 * h, 4 * w)
    propagated = region_logits(generator, n, c, h, w).float()
    correction = torch.randn(n, c, h, w, generator=generator) * 2
    distortion = torch.rand(n, 1, h, w, generator=generator)
    got = kernels.upsample_merge_argmax(propagated, distortion, correction, grid((h, w), size, align_corners))
    up = [reference_resize(x, size, align_corners) for x in (propagated, distortion, correction)]
    merged = up[0] * (1 - up[1]) + up[2] * up[1]
    clear = clear_pixels(merged)
    assert clear.float().mean() > 0.99
    assert torch.equal(got[clear], merged.argmax(1)[clear])
    # The distortion decides: all 0 gives the propagated labels, all 1 the correction's.
    for d, source in ((0.0, propagated), (1.0, correction)):
        labels = kernels.upsample_merge_argmax(propagated, torch.full_like(distortion, d), correction,
                                               grid((h, w), size, align_corners))
        assert torch.equal(labels, kernels.upsample_argmax(source, grid((h, w), size, align_corners)))


@needs_kernels
def test_ties_go_to_the_first_class_and_any_layout_is_accepted():
    logits = torch.zeros(1, 5, 4, 6)
    logits[:, 2] = 1.0
    logits[:, 4] = 1.0  # ties with class 2 everywhere
    labels = kernels.upsample_argmax(logits.contiguous(memory_format=torch.channels_last),
                                     grid((4, 6), (16, 24), False))
    assert torch.equal(labels, torch.full((1, 16, 24), 2))
    assert torch.equal(kernels.upsample_argmax(torch.zeros(1, 3, 2, 2).bfloat16(), grid((2, 2), (8, 8), True)),
                       torch.zeros(1, 8, 8, dtype=torch.int64))


@needs_kernels
def test_bad_inputs_are_refused_by_name():
    logits = torch.randn(1, 4, 8, 8)
    rows_lower, rows_upper, rows_weight, *cols = grid((8, 8), (16, 16), False)
    with pytest.raises(RuntimeError, match='row source index outside the map'):
        torch.ops.davss.upsample_argmax(logits, rows_lower + 8, rows_upper, rows_weight, *cols)
    with pytest.raises(RuntimeError, match='column indices must be int64'):
        torch.ops.davss.upsample_argmax(logits, rows_lower, rows_upper, rows_weight, cols[0].int(), *cols[1:])
    with pytest.raises(RuntimeError, match='distortion'):
        kernels.upsample_merge_argmax(logits, torch.rand(1, 2, 8, 8), logits, grid((8, 8), (16, 16), False))


def test_retain_freed_memory_sets_the_three_glibc_options(monkeypatch):
    calls = []

    class FakeLibc:
        @staticmethod
        def mallopt(option, value):
            calls.append((option, value))
            return 1

    monkeypatch.setattr(fast.platform, 'system', lambda: 'Linux')
    monkeypatch.setattr(fast.ctypes, 'CDLL', lambda name: FakeLibc())
    assert fast.retain_freed_memory()
    # M_MMAP_THRESHOLD at glibc's maximum, M_TRIM_THRESHOLD never reached, M_TOP_PAD 256 MiB (<malloc.h>).
    assert calls == [(-3, 32 << 20), (-1, 2 ** 31 - 1), (-2, 256 << 20)]
    monkeypatch.setattr(fast.platform, 'system', lambda: 'Darwin')
    assert not fast.retain_freed_memory()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_retain_freed_memory_is_accepted_by_this_libc():
    # In a child process: the settings are process-wide and must not leak into the test session.
    code = 'from lib.infer.fast import retain_freed_memory; print(retain_freed_memory())'
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'True'
