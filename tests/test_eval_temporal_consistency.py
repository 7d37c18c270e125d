"""Temporal consistency (lib.eval.temporal_consistency) against hand-computed cases, a naive per-pixel loop, the
synthetic set's own ground truth, and DIS flow on a translated frame."""
import math

import pytest
import torch

from lib import synthetic
from lib.dataset import synthetic_layout as layout
from lib.eval.temporal_consistency import NearestSources, TemporalConsistency, dis_flow, read_clip_motion
from lib.ops.resample2d import resample2d_reference
from lib.synthetic import scene

IGNORE = 255


def constant_flow(dx, dy, h, w):
    return torch.tensor([dx, dy], dtype=torch.float32).view(2, 1, 1).expand(2, h, w).clone()


def test_translation_is_fully_consistent():
    h, w = 6, 7
    prev = torch.randint(0, 5, (h, w), generator=torch.Generator().manual_seed(0))
    # cur[y, x] = prev[y - 1, x + 2]: flow (2, -1); a non-integer flow that rounds to it carries the same pixels.
    cur = torch.full((h, w), 3, dtype=torch.int64)  # what the flow cannot carry may be anything
    cur[1:, :w - 2] = prev[:h - 1, 2:]
    for dx, dy in ((2.0, -1.0), (2.4, -0.6), (1.5, -1.49)):
        tc = TemporalConsistency(5).update(prev, cur, constant_flow(dx, dy, h, w))
        result = tc.result()
        assert result['tc'] == 1.0 and result['agreement'] == 1.0
        # Not carried: row 0 (source row -1) and columns w-2, w-1 (source columns w, w+1): 7 + 5 * 2 pixels.
        assert result['not_carried'] == w + (h - 1) * 2
        assert result['counted'] == (h - 1) * (w - 2)


def test_alternating_maps_hand_computed():
    a = torch.tensor([[0, 0, 1], [1, 2, 2]])
    b = torch.tensor([[0, 1, 1], [1, 2, 0]])
    zero = torch.zeros(2, 2, 3)
    tc = TemporalConsistency(3)
    for prev, cur in ((a, b), (b, a)):  # the clip a, b, a with no motion
        tc.update(prev, cur, zero)
    # matrix[cur, prev], pixel by pixel (row-major):
    #   pair (a -> b): (0,0) (1,0) (1,1) (1,1) (2,2) (0,2)
    #   pair (b -> a): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
    #   summed: [[2, 1, 1],
    #            [1, 4, 0],
    #            [1, 0, 2]]
    # IoU_0 = 2 / (4 + 4 - 2) = 1/3, IoU_1 = 4 / (5 + 5 - 4) = 2/3, IoU_2 = 2 / (3 + 3 - 2) = 1/2
    # TC = (1/3 + 2/3 + 1/2) / 3 = 1/2; agreement = (2 + 4 + 2) / 12 = 2/3.
    # (The mean of each pair's own mIoU would be 11/18: one matrix over all pairs, as the ETC code sums them.)
    assert tc.confusion.matrix.tolist() == [[2, 1, 1], [1, 4, 0], [1, 0, 2]]
    result = tc.result()
    assert result['tc'] == pytest.approx(1 / 2, abs=1e-15)
    assert result['agreement'] == pytest.approx(2 / 3, abs=1e-15)
    assert result['pairs'] == 2 and result['counted'] == 12 and result['not_carried'] == 0


def test_occluded_and_out_of_frame_pixels_are_excluded():
    prev = torch.tensor([[0, 1, 1], [0, 0, 1]])
    cur = torch.tensor([[1, 1, 0], [1, 1, 0]])
    flow = constant_flow(1, 0, 2, 3)  # cur[y, x] ~ prev[y, x + 1]; column 2 reads column 3: outside the frame
    valid = torch.tensor([[True, True, True], [False, True, True]])  # (1, 0) occluded: cur 1 vs prev[1, 1] = 0
    result = TemporalConsistency(2).update(prev, cur, flow, valid).result()
    # Counted: (0,0), (0,1), (1,1), each cur 1 / prev 1: matrix[cur, prev] = [[0, 0], [0, 3]]: TC 1, agreement 1.
    assert result['tc'] == 1.0 and result['agreement'] == 1.0
    assert result['counted'] == 3 and result['not_carried'] == 3  # (1, 0) and column 2
    # Counting the occluded pixel: [[0, 0], [1, 3]]: IoU_0 = 0 / 1, IoU_1 = 3 / (4 + 3 - 3): TC 3/8, agreement 3/4.
    unmasked = TemporalConsistency(2).update(prev, cur, flow).result()
    assert unmasked['tc'] == pytest.approx(3 / 8) and unmasked['agreement'] == pytest.approx(3 / 4)
    # Clamping the source to the border instead (a border-padded warp) would add column 2 as cur 0 / prev 1 twice:
    # [[0, 2], [0, 3]]: IoU_0 = 0 / 2, IoU_1 = 3 / (3 + 5 - 3): TC 3/10, agreement 3/5.
    border = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 3) * torch.tensor([1.0, 0.0]).view(2, 1, 1)
    clamped = TemporalConsistency(2).update(prev, cur, border.expand(2, 2, 3), valid).result()
    assert clamped['tc'] == pytest.approx(3 / 10) and clamped['agreement'] == pytest.approx(3 / 5)


def test_ignore_labels_are_not_counted():
    prev = torch.tensor([[0, IGNORE, 1], [1, 1, 0]])
    cur = torch.tensor([[0, 1, IGNORE], [1, 0, 0]])
    result = TemporalConsistency(2).update(prev, cur, torch.zeros(2, 2, 3)).result()
    # (0,1): prev ignore; (0,2): cur ignore (neither counted nor "not carried"); (0,0) 0/0, (1,0) 1/1, (1,1) 0/1,
    # (1,2) 0/0: matrix[cur, prev] = [[2, 1], [0, 1]]: IoU_0 = 2 / 3, IoU_1 = 1 / 2: TC 7/12, agreement 3/4.
    assert result['counted'] == 4 and result['not_carried'] == 0
    assert result['tc'] == pytest.approx(7 / 12, abs=1e-15) and result['agreement'] == pytest.approx(3 / 4)


def naive_confusion(prev, cur, flow, valid, n_classes):
    """Per-pixel loop: nearest source pixel (halves rounded up), sources outside the frame not carried."""
    matrix = [[0] * n_classes for _ in range(n_classes)]
    n, h, w = cur.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                sx, sy = x + float(flow[i, 0, y, x]), y + float(flow[i, 1, y, x])
                if cur[i, y, x] == IGNORE or not valid[i, y, x] or not (math.isfinite(sx) and math.isfinite(sy)):
                    continue
                col, row = math.floor(sx + 0.5), math.floor(sy + 0.5)
                if not (0 <= col < w and 0 <= row < h) or prev[i, row, col] == IGNORE:
                    continue
                matrix[int(cur[i, y, x])][int(prev[i, row, col])] += 1
    return matrix


def naive_miou(matrix):
    ious = []
    for c in range(len(matrix)):
        union = sum(matrix[c]) + sum(row[c] for row in matrix) - matrix[c][c]
        if union:
            ious.append(matrix[c][c] / union)
    return sum(ious) / len(ious)


def test_matches_naive_loop():
    g = torch.Generator().manual_seed(3)
    n, h, w, k = 4, 7, 9, 5
    prev = torch.randint(0, k, (n, h, w), generator=g)
    cur = torch.randint(0, k, (n, h, w), generator=g)
    prev[torch.rand(n, h, w, generator=g) < 0.1] = IGNORE
    cur[torch.rand(n, h, w, generator=g) < 0.1] = IGNORE
    flow = torch.empty(n, 2, h, w)
    flow[0] = torch.randint(-4, 5, (2, h, w), generator=g).float()  # integer
    flow[1] = torch.rand(2, h, w, generator=g) * 10 - 5  # non-integer
    flow[2] = (torch.randint(-8, 9, (2, h, w), generator=g) * 0.5).float()  # exact halves: the tie rule
    flow[3] = torch.rand(2, h, w, generator=g) * 3 - 1.5
    flow[3, 0, :, 0] = -0.5  # x + dx = -0.5 exactly: nearest pixel 0, carried
    flow[3, 0, :, w - 1] = 0.5  # x + dx = W - 0.5 exactly: nearest pixel W, not carried
    flow[3, 1, 0, 1] = float('nan')
    valid = torch.rand(n, h, w, generator=g) < 0.8
    tc = TemporalConsistency(k).update(prev, cur, flow, valid)
    expected = naive_confusion(prev, cur, flow, valid, k)
    assert tc.confusion.matrix.tolist() == expected
    assert tc.result()['tc'] == pytest.approx(naive_miou(expected), rel=1e-12)
    assert 0 < tc.result()['agreement'] < 1


def test_batch_equals_pairs_one_by_one():
    g = torch.Generator().manual_seed(1)
    prev, cur = torch.randint(0, 3, (2, 3, 5, 6), generator=g)
    flow = torch.rand(3, 2, 5, 6, generator=g) * 4 - 2
    batched = TemporalConsistency(3).update(prev, cur, flow)
    single = TemporalConsistency(3)
    for i in range(3):
        single.update(prev[i], cur[i], flow[i])
    assert torch.equal(batched.confusion.matrix, single.confusion.matrix)
    assert batched.result() == single.result()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match='expected labels'):
        NearestSources(torch.zeros(1, 2, 4, 4)).warp(torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match='expected flow'):
        NearestSources(torch.zeros(1, 2, 4, 4), torch.ones(1, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r'labels must be in \[0, 3\) or 255'):
        TemporalConsistency(3).update(torch.tensor([[0, 3]]), torch.tensor([[0, 255]]), torch.zeros(2, 1, 2))
    with pytest.raises(ValueError, match='at least 2'):
        read_clip_motion('/nonexistent', ['leftImg8bit_sequence/val/a/a_000000_000001_leftImg8bit.png'], 19)


def footprint_labels(prev, flow):
    """(4, N, H, W) labels of the 4 pixels around each source position (the bilinear footprint)."""
    n, h, w = prev.shape
    x = torch.arange(w, dtype=torch.float64) + flow[:, 0].double()
    y = torch.arange(h, dtype=torch.float64).view(h, 1) + flow[:, 1].double()
    x0, y0 = x.floor().clamp(0, w - 1).long(), y.floor().clamp(0, h - 1).long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    b = torch.arange(n).view(n, 1, 1)
    return torch.stack([prev[b, yy, xx] for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))])


def test_ground_truth_ceiling(tmp_path):
    """The synthetic ground truth with its own flow: TC just under 1, and every disagreement explained.

    ``valid`` requires the same SURFACE around the source, not the same label; the ground (road | sidewalk) and
    the facade rows (building | vegetation) are one surface with two classes each.  The nearest pixel of a
    source position between pixel centres can fall across such a boundary: those pixels, and only those, differ.
    """
    synthetic.generate(str(tmp_path), size=(64, 128), n_train=0, n_val=1, n_frames=10, labelled_frame=9, seed=0,
                       difficulty='medium', workers=1)
    city, seq = synthetic.snippet_name('val', 0)
    relatives = [layout.frame_path('val', city, seq, frame) for frame in range(10)]
    labels, flow, valid = read_clip_motion(str(tmp_path), relatives, 19)
    assert labels.shape == (10, 64, 128) and flow.shape == (9, 2, 64, 128) and valid.shape == (9, 64, 128)
    tc = TemporalConsistency(19)
    for i in range(9):
        tc.update(labels[i], labels[i + 1], flow[i], valid[i])
    result = tc.result()
    assert result['pairs'] == 9 and result['counted'] > 0.75 * 9 * 64 * 128 and result['not_carried'] > 0

    prev, cur = labels[:-1], labels[1:]
    sources = NearestSources(flow)
    warped, carried = sources.warp(prev), sources.carried
    counted = carried & valid & (cur != IGNORE) & (warped != IGNORE)
    differ = counted & (warped != cur)
    assert 0 < int(differ.sum()) < 0.01 * int(counted.sum())  # measured: 249 of 57504 pixels
    assert 0.99 < result['tc'] < 1.0 and 0.99 < result['agreement'] < 1.0
    # Every disagreement: the source lies among pixels of mixed labels, its own label among them ...
    footprint = footprint_labels(prev, flow)
    mixed = (footprint != footprint[0]).any(0)
    own_label_there = (footprint == cur).any(0)
    assert bool((mixed & own_label_there)[differ].all())
    # ... and the two labels share a surface.
    pairs = {frozenset((int(a), int(b))) for a, b in zip(cur[differ], warped[differ])}
    assert pairs <= {frozenset((scene.ROAD, scene.SIDEWALK)), frozenset((scene.BUILDING,
                                                                                 scene.VEGETATION))}
    # Leaving out the sources with mixed labels around them leaves TC exactly 1.
    ceiling = TemporalConsistency(19).update(prev, cur, flow, valid & ~mixed).result()
    assert ceiling['tc'] == 1.0 and ceiling['agreement'] == 1.0


def smooth_texture(h, w, seed):
    coarse = torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, scale_factor=4, mode='bicubic', align_corners=False)[0].clamp(0, 1)


@pytest.mark.parametrize('dx, dy', [(3, -2), (-5, 4)])
def test_dis_flow_recovers_a_translation(dx, dy):
    h, w, pad, margin = 64, 96, 8, 12
    texture = smooth_texture(h + 2 * pad, w + 2 * pad, seed=0)
    prev = texture[:, pad:pad + h, pad:pad + w]
    cur = texture[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]  # cur[y, x] = prev[y + dy, x + dx]
    flow = dis_flow(prev, cur)
    assert flow.shape == (2, h, w) and flow.dtype == torch.float32
    inner = (slice(None), slice(margin, -margin), slice(margin, -margin))
    shift = torch.tensor([dx, dy], dtype=torch.float32).view(2, 1, 1)
    assert float((flow - shift)[inner].abs().max()) < 0.25  # pixels; measured 0.04 .. 0.17 over 4 textures
    warped = resample2d_reference(prev[None], flow[None])[0]
    assert float((warped - cur)[inner].abs().max()) < 0.05  # intensity in [0, 1]; measured <= 0.036
