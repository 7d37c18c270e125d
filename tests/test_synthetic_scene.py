"""The synthetic street-video generator: layout, determinism, and exactness of its labels and flow."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from lib import synthetic
from lib.dataset import build_dataset, read_flow, read_frame, read_label
from lib.dataset import synthetic_layout as layout
from lib.ops import resample2d
from lib.synthetic.scene import USED_CLASSES
from lib.utils.errors import UserError

ALLOWED_LABELS = set(USED_CLASSES) | {255}


def _frame_rel(split, seq, frame, city='synthtown'):
    return layout.frame_path(split, city, seq, frame)


def test_layout_lists_and_meta(synthetic_root):
    with open(os.path.join(synthetic_root, 'list', 'train.txt')) as f:
        lines = f.read().splitlines()
    assert lines == [
        'leftImg8bit_sequence/train/synthtown/synthtown_000000_000019_leftImg8bit.png '
        'gtFine/train/synthtown/synthtown_000000_000019_gtFine_labelTrainIds.png',
        'leftImg8bit_sequence/train/synthville/synthville_000000_000019_leftImg8bit.png '
        'gtFine/train/synthville/synthville_000000_000019_gtFine_labelTrainIds.png',
    ]
    with open(os.path.join(synthetic_root, layout.META_FILE)) as f:
        meta = json.load(f)
    assert meta['size'] == [64, 128] and meta['n_frames'] == 30 and meta['labelled_frame'] == 19
    for frame in range(30):
        rel = _frame_rel('train', 0, frame)
        image = read_frame(os.path.join(synthetic_root, rel))
        assert image.shape == (3, 64, 128)
        label = read_label(os.path.join(synthetic_root, layout.sequence_label_path(rel)), 19, (64, 128))
        assert set(label.unique().tolist()) <= ALLOWED_LABELS
        assert os.path.isfile(os.path.join(synthetic_root, layout.flow_path(rel))) == (frame > 0)
    # The gtFine label of the listed frame is that frame's every-frame label.
    rel = _frame_rel('train', 0, 19)
    gt_rel = layout.label_path('train', 'synthtown', 0, 19)
    gt = cv2.imread(os.path.join(synthetic_root, gt_rel), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(gt, cv2.imread(os.path.join(synthetic_root, layout.sequence_label_path(rel)),
                                         cv2.IMREAD_UNCHANGED))


def test_scenes_use_the_street_classes(synthetic_root):
    seen = set()
    for frame in (0, 10, 19, 29):
        rel = _frame_rel('train', 0, frame)
        seen |= set(read_label(os.path.join(synthetic_root, layout.sequence_label_path(rel)), 19).unique().tolist())
    for name, train_id in (('road', 0), ('sidewalk', 1), ('building', 2), ('sky', 10), ('car', 13)):
        assert train_id in seen, f'{name} missing from the scene'
    assert 255 in seen  # the ego vehicle's bonnet


def test_generation_is_deterministic(tmp_path):
    kwargs = dict(size=(32, 64), n_train=1, n_val=0, seed=5, workers=1, n_frames=12, labelled_frame=10)
    synthetic.generate(str(tmp_path / 'a'), **kwargs)
    synthetic.generate(str(tmp_path / 'b'), **kwargs)
    synthetic.generate(str(tmp_path / 'c'), **dict(kwargs, seed=6))
    # Same options, same files: every file byte for byte, the metadata included.
    files = sorted(p.relative_to(tmp_path / 'a') for p in (tmp_path / 'a').rglob('*') if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / 'b') for p in (tmp_path / 'b').rglob('*') if p.is_file())
    assert layout.META_FILE in {str(f) for f in files} and len(files) > 20
    for f in files:
        assert (tmp_path / 'a' / f).read_bytes() == (tmp_path / 'b' / f).read_bytes(), f
    rel = _frame_rel('train', 0, 7)
    assert not np.array_equal(cv2.imread(str(tmp_path / 'a' / rel)), cv2.imread(str(tmp_path / 'c' / rel)))


def _pairs(root, split, seq, frames, city):
    for frame in frames:
        prev_rel, rel = (layout.frame_path(split, city, seq, f) for f in (frame - 1, frame))
        flow, valid = read_flow(os.path.join(root, layout.flow_path(rel)))
        yield (read_frame(os.path.join(root, prev_rel)), read_frame(os.path.join(root, rel)), flow, valid,
               read_label(os.path.join(root, layout.sequence_label_path(prev_rel)), 19),
               read_label(os.path.join(root, layout.sequence_label_path(rel)), 19))


def test_ground_truth_flow_warps_previous_frame_onto_current(synthetic_root):
    warp_errors, still_errors, valid_fraction, magnitudes = [], [], [], []
    for prev, cur, flow, valid, _, _ in _pairs(synthetic_root, 'train', 0, range(1, 30, 4), 'synthtown'):
        warped = resample2d(prev[None], flow[None])[0]
        error = (warped - cur).abs().mean(0)  # (H, W)
        moving = valid & (flow.norm(dim=0) > 1.0)
        warp_errors.append(float(error[moving].mean()))
        still_errors.append(float((prev - cur).abs().mean(0)[moving].mean()))
        valid_fraction.append(float(valid.float().mean()))
        magnitudes.append(float(flow.norm(dim=0).mean()))
    # Left over after warping: sensor noise (sigma 0.02 in both frames), lighting drift, bilinear resampling.
    assert np.mean(warp_errors) < 0.045
    assert np.mean(warp_errors) < 0.65 * np.mean(still_errors)
    # The videos move (ego-motion of a pixel or more per frame at 64x128) and have occlusions.
    assert np.mean(magnitudes) > 1.0
    assert 0.5 < np.mean(valid_fraction) < 0.995


def test_ground_truth_flow_carries_labels(synthetic_root):
    agreement, still = [], []
    for _, _, flow, valid, prev_label, label in _pairs(synthetic_root, 'val', 0, range(1, 30, 3), 'synthberg'):
        height, width = label.shape
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
        src_x = (xs + flow[0]).round().long().clamp(0, width - 1)
        src_y = (ys + flow[1]).round().long().clamp(0, height - 1)
        carried = prev_label[src_y, src_x]
        agreement.append(float((carried == label)[valid].float().mean()))
        still.append(float((prev_label == label)[valid].float().mean()))
    assert np.mean(agreement) > 0.97
    assert np.mean(agreement) > np.mean(still)


def test_noise_free_warp_is_nearly_exact(tmp_path):
    clean = synthetic.difficulty_with('medium', noise=0.0, light=0.0)
    synthetic.generate(str(tmp_path), size=(64, 128), n_train=1, n_val=0, seed=3, workers=1, difficulty=clean,
                       n_frames=12, labelled_frame=10)
    errors, still = [], []
    for prev, cur, flow, valid, _, _ in _pairs(str(tmp_path), 'train', 0, range(1, 12), 'synthtown'):
        moving = valid & (flow.norm(dim=0) > 1.0)
        errors.append(float((resample2d(prev[None], flow[None])[0] - cur).abs().mean(0)[moving].mean()))
        still.append(float((prev - cur).abs().mean(0)[moving].mean()))
    # Only resampling of point-sampled textures and 8-bit rounding remain.
    assert np.mean(errors) < 0.025
    assert np.mean(errors) < 0.4 * np.mean(still)


def test_flow_dataset_flip_keeps_warp_consistent(synthetic_data_cfg):
    cfg = dict(synthetic_data_cfg, hflip=True, crop_size=[48, 96])
    dataset = build_dataset(cfg, 'train', 'flow')
    torch.manual_seed(0)
    for _ in range(6):
        frames, flow = dataset[10]
        warped = resample2d(frames[0][None], flow[None])[0]
        assert float((warped - frames[1]).abs().mean()) < 0.8 * float((frames[0] - frames[1]).abs().mean())


@pytest.mark.parametrize('size', [(30, 64), (8, 64)])
def test_bad_sizes_are_rejected(tmp_path, size):
    with pytest.raises(UserError, match='size'):
        synthetic.generate(str(tmp_path), size=size, n_train=1, n_val=0, workers=1)


def test_cityscapes_like_moves_an_order_of_magnitude_less_than_medium(tmp_path):
    """The preset's purpose (docs/demo.md): the same streets with about a twelfth of medium's image motion."""
    magnitudes = {}
    for name in ('medium', 'cityscapes-like'):
        root = str(tmp_path / name)
        # The demo's lens on both, so that only the motion differs.
        difficulty = synthetic.difficulty_with(name, focal=1.6)
        synthetic.generate(root, size=(64, 128), n_train=1, n_val=0, seed=5, workers=1, difficulty=difficulty,
                           n_frames=12, labelled_frame=10)
        magnitudes[name] = np.mean([float(flow.norm(dim=0).mean())
                                    for _, _, flow, _, _, _ in _pairs(root, 'train', 0, range(1, 12), 'synthtown')])
    assert synthetic.DIFFICULTIES['cityscapes-like'].focal == 1.6
    assert 0 < magnitudes['cityscapes-like'] < 0.2 * magnitudes['medium']
