"""ConfusionMatrix against a naive per-pixel loop, and the palettes."""
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from lib.utils.metrics import ConfusionMatrix
from lib.utils.palette import CAMVID_PALETTE, CITYSCAPES_PALETTE, class_names, colorize, palette_for


def naive_confusion(pred, gt, n_classes, ignore_index=255):
    matrix = [[0] * n_classes for _ in range(n_classes)]
    for p, g in zip(np.asarray(pred).ravel().tolist(), np.asarray(gt).ravel().tolist()):
        if g != ignore_index:
            matrix[g][p] += 1
    return matrix


def naive_iou(matrix):
    n = len(matrix)
    ious = []
    for c in range(n):
        tp = matrix[c][c]
        fn = sum(matrix[c]) - tp
        fp = sum(matrix[r][c] for r in range(n)) - tp
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else float('nan'))
    return ious


def random_batch(generator, n_classes, shape=(2, 9, 13)):
    gt = torch.randint(0, n_classes, shape, generator=generator)
    gt[torch.rand(shape, generator=generator) < 0.1] = 255
    pred = torch.where(torch.rand(shape, generator=generator) < 0.6, gt.clamp(max=n_classes - 1),
                       torch.randint(0, n_classes, shape, generator=generator))
    return pred, gt


def test_matches_naive_loop_over_several_updates():
    g = torch.Generator().manual_seed(0)
    meter = ConfusionMatrix(7)
    preds, gts = [], []
    for _ in range(3):
        pred, gt = random_batch(g, 7)
        meter.update(pred, gt.numpy() if len(preds) == 1 else gt)  # tensors and numpy both accepted
        preds.append(pred.numpy())
        gts.append(gt.numpy())
    expected = naive_confusion(np.concatenate([p.ravel() for p in preds]),
                               np.concatenate([x.ravel() for x in gts]), 7)
    assert meter.matrix.tolist() == expected
    assert np.allclose(meter.iou().numpy(), naive_iou(expected), equal_nan=True)
    assert math.isclose(meter.miou(), float(np.nanmean(naive_iou(expected))))


def test_absent_classes_are_nan_and_left_out_of_the_mean():
    meter = ConfusionMatrix(4)
    gt = torch.tensor([[0, 0, 1, 255]])
    pred = torch.tensor([[0, 2, 1, 3]])  # class 2 predicted but absent from gt; class 3 only on an ignored pixel
    meter.update(pred, gt)
    iou = meter.iou()
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(1.0) and iou[2] == 0.0
    assert math.isnan(iou[3])
    assert meter.miou() == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_errors():
    meter = ConfusionMatrix(5)
    with pytest.raises(ValueError, match='ground truth'):
        meter.update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match='predictions'):
        meter.update(torch.tensor([9]), torch.tensor([0]))
    with pytest.raises(ValueError, match='pixels'):
        meter.update(torch.tensor([0, 1]), torch.tensor([0]))


def test_all_reduce_sums_across_processes(tmp_path):
    """One gloo process: all_reduce runs the collective (world of 1 keeps the counts); without a group it is a no-op."""
    meter = ConfusionMatrix(3).update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    before = meter.matrix.clone()
    meter.all_reduce()
    assert torch.equal(meter.matrix, before)
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0, world_size=1)
    try:
        meter.all_reduce()
        assert torch.equal(meter.matrix, before)
    finally:
        dist.destroy_process_group()


def test_palettes_and_colorize():
    assert CITYSCAPES_PALETTE.shape == (19, 3) and CAMVID_PALETTE.shape == (11, 3)
    assert palette_for('synthetic') is CITYSCAPES_PALETTE and palette_for('camvid') is CAMVID_PALETTE
    assert len(class_names('cityscapes')) == 19 and class_names('camvid')[0] == 'sky'
    label = np.array([[0, 13], [255, 18]])
    rgb = colorize(torch.from_numpy(label), CITYSCAPES_PALETTE)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [128, 64, 128] and rgb[0, 1].tolist() == [0, 0, 142]
    assert rgb[1, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [119, 11, 32]
    with pytest.raises(ValueError, match='unknown dataset'):
        palette_for('kitti')
