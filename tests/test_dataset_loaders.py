"""Datasets: list parsing, frame naming and order, augmentation consistency, seeding, and bad-input errors."""
import copy
import os

import cv2
import numpy as np
import pytest
import torch
from helpers import H, W, fake_label, make_camvid, make_cityscapes

from lib.dataset import build_dataset
from lib.dataset.frame_list import read_list
from lib.utils.config import DEFAULTS
from lib.utils.errors import UserError


def data_cfg(name, root, list_path, **overrides):
    cfg = copy.deepcopy(DEFAULTS['data'])
    cfg.update(name=name, root=str(root), train_list=list_path, val_list=list_path, crop_size=None, num_workers=0)
    cfg.update(overrides)
    return cfg


def frame_indices(frames):
    """Frame indices encoded by :func:`helpers.index_frame` in each frame's blue channel (RGB index 2)."""
    return [round(float(frame[2, 0, 0]) * 255 / 8) for frame in frames]


# --- frame order and naming ---------------------------------------------------------------------------------------


def test_pda_clip_is_frames_t_minus_9_to_t_cityscapes(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)))
    frames, label = build_dataset(cfg, 'val', 'pda')[0]
    assert frames.shape == (10, 3, H, W) and frames.dtype == torch.float32
    assert label.dtype == torch.int64 and label.shape == (H, W)
    assert frame_indices(frames) == list(range(10, 20))
    assert torch.equal(label, torch.from_numpy(fake_label().astype(np.int64)))


def test_pda_clip_camvid_naming_counts_decoded_frames(tmp_path):
    cfg = data_cfg('camvid', tmp_path, make_camvid(str(tmp_path)))
    frames, _ = build_dataset(cfg, 'val', 'pda')[0]
    assert frame_indices(frames) == [i % 25 for i in range(21, 31)]


def test_triplet_key_intermediate_target_and_redraw(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)), min_gap=2, max_gap=10)
    dataset = build_dataset(cfg, 'val', 'triplet')
    assert len(dataset) == 9  # one line x gaps 2..10
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        frames, label = dataset[8]  # gap 10
        key, mid, target = frame_indices(frames)
        assert (key, target) == (9, 19)
        assert 10 <= mid <= 18
        seen.add(mid)
    assert len(seen) >= 4, 'the intermediate frame must be redrawn at every __getitem__'
    frames, _ = dataset[0]  # gap 2: the only intermediate frame is t-1
    assert frame_indices(frames) == [17, 18, 19]


def test_triplet_is_reproducible_under_torch_seed(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)), crop_size=[8, 16], hflip=True)
    dataset = build_dataset(cfg, 'train', 'triplet')
    draws = []
    for _ in range(2):
        torch.manual_seed(123)
        draws.append([dataset[i] for i in range(len(dataset))])
    for (f1, l1), (f2, l2) in zip(*draws):
        assert torch.equal(f1, f2) and torch.equal(l1, l2)


def test_crop_and_flip_are_shared_by_frames_and_label(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)), crop_size=[8, 16], hflip=True)
    dataset = build_dataset(cfg, 'train', 'triplet')
    full_label = torch.from_numpy(fake_label().astype(np.int64))
    rows = torch.arange(H, dtype=torch.float32).view(H, 1).expand(H, W) * 15 / 255
    cols = torch.arange(W, dtype=torch.float32).view(1, W).expand(H, W) * 7 / 255
    flips = set()
    torch.manual_seed(1)
    for _ in range(20):
        frames, label = dataset[3]
        assert frames.shape == (3, 3, 8, 16) and label.shape == (8, 16)
        # The gradients give the crop window and flip; the label must come from the same window.
        top = round(float(frames[2, 0, 0, 0]) * 255 / 15)
        col_first, col_last = (round(float(frames[2, 1, 0, i]) * 255 / 7) for i in (0, -1))
        flipped = col_first > col_last
        left = min(col_first, col_last)
        expected = full_label[top:top + 8, left:left + 16]
        expected = expected.flip(-1) if flipped else expected
        assert torch.equal(label, expected)
        window_rows, window_cols = rows[top:top + 8, left:left + 16], cols[top:top + 8, left:left + 16]
        if flipped:
            window_rows, window_cols = window_rows.flip(-1), window_cols.flip(-1)
        for frame in frames:  # every frame of the triplet has the same window
            assert torch.allclose(frame[0], window_rows, atol=1e-6)
            assert torch.allclose(frame[1], window_cols, atol=1e-6)
        flips.add(flipped)
    assert flips == {True, False}


def test_image_mode_rescale_and_crop_shapes(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)), crop_size=[12, 24],
                   scale_range=[0.5, 2.0], hflip=True)
    dataset = build_dataset(cfg, 'train', 'image')
    torch.manual_seed(0)
    for _ in range(10):
        image, label = dataset[0]
        assert image.shape == (3, 12, 24) and label.shape == (12, 24)
        values = set(label.unique().tolist())
        assert values <= set(range(19)) | {255}
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_training_loader_collates_and_reseeds_workers(tmp_path):
    """The engine's loader, seeded as the engine seeds an epoch: two runs give the same crops and flips."""
    from lib.train.engine import build_train_loader
    from lib.train.resume import epoch_seed
    from lib.train.stages import get_stage

    data = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)), crop_size=[8, 16], hflip=True,
                    num_workers=1, pin_memory=False)
    cfg = {'seed': 7, 'data': data, 'train': {'batch_size': 3}}
    runs = []
    for _ in range(2):
        loader = build_train_loader(cfg, get_stage('dmnet'))
        loader.sampler.set_epoch(1)
        loader.generator.manual_seed(epoch_seed(7, 0, 1))
        runs.append([batch for batch in loader])
    frames, label = runs[0][0]
    assert frames.shape == (3, 3, 3, 8, 16) and label.shape == (3, 8, 16)
    for (f1, l1), (f2, l2) in zip(*runs):
        assert torch.equal(f1, f2) and torch.equal(l1, l2)


# --- bad input ----------------------------------------------------------------------------------------------------


def _expect_error(cfg, mode, needle, index=0):
    with pytest.raises(UserError) as info:
        build_dataset(cfg, 'val', mode)[index]
    assert needle in str(info.value), str(info.value)
    return str(info.value)


def test_list_line_that_does_not_parse(tmp_path):
    list_path = make_cityscapes(str(tmp_path))
    with open(list_path, 'a') as f:
        f.write('only_one_field.png\n')
    message = _expect_error(data_cfg('cityscapes', tmp_path, list_path), 'pda', 'list.txt:2')
    assert 'expected "<frame image> <label image>"' in message
    with open(list_path, 'w') as f:
        f.write('leftImg8bit_sequence/a/b_leftImg8bit.png gtFine/x.png\n')
    _expect_error(data_cfg('cityscapes', tmp_path, list_path), 'pda', '6-digit frame index')


def test_missing_list_and_unknown_dataset(tmp_path):
    _expect_error(data_cfg('cityscapes', tmp_path, str(tmp_path / 'nope.txt')), 'pda', 'nope.txt: list file not found')
    list_path = make_cityscapes(str(tmp_path))
    _expect_error(data_cfg('kitti', tmp_path, list_path), 'pda', 'data.name')


def test_missing_frame_names_the_file(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)))
    missing = tmp_path / 'leftImg8bit_sequence/train/aachen/aachen_000000_000012_leftImg8bit.png'
    os.remove(missing)
    message = _expect_error(cfg, 'pda', str(missing))
    assert 'file not found' in message


def test_list_needing_frames_before_the_video_start(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path), labelled=(5,), first=0, last=5))
    _expect_error(cfg, 'pda', 'does not exist')


def test_corrupt_image_names_the_file(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)))
    broken = tmp_path / 'leftImg8bit_sequence/train/aachen/aachen_000000_000015_leftImg8bit.png'
    broken.write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
    message = _expect_error(cfg, 'pda', str(broken))
    assert 'not a readable image' in message


def test_label_of_wrong_size(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)))
    label_path = tmp_path / 'gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png'
    cv2.imwrite(str(label_path), np.zeros((H, W + 4), dtype=np.uint8))
    message = _expect_error(cfg, 'pda', str(label_path))
    assert f'{H}x{W + 4}' in message


def test_label_with_values_out_of_range(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)))
    label_path = tmp_path / 'gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png'
    label = fake_label()
    label[3, 3] = 19
    label[4, 4] = 200
    cv2.imwrite(str(label_path), label)
    message = _expect_error(cfg, 'pda', str(label_path))
    assert 'found 19, 200' in message
    cv2.imwrite(str(label_path), np.zeros((H, W, 3), dtype=np.uint8))
    _expect_error(cfg, 'pda', 'single-channel')


def test_camvid_labels_are_checked_against_11_classes(tmp_path):
    list_path = make_camvid(str(tmp_path))
    label = (fake_label() % 11).astype(np.uint8)
    label[0, 5] = 11
    cv2.imwrite(str(tmp_path / 'label/0001TP_006690.png'), label)
    _expect_error(data_cfg('camvid', tmp_path, list_path), 'pda', '[0, 11)')


def test_flow_mode_needs_the_synthetic_set(tmp_path):
    cfg = data_cfg('cityscapes', tmp_path, make_cityscapes(str(tmp_path)))
    _expect_error(cfg, 'flow', 'only data.name=synthetic')


def test_collecting_list_errors_reports_every_bad_line(tmp_path):
    list_path = tmp_path / 'list.txt'
    list_path.write_text('a b c\nvideo_image/x/x_000001.png label/x.png\nbroken\n')
    errors = []
    frames = read_list(str(list_path), 'camvid', errors=errors)
    assert len(frames) == 1 and len(errors) == 2
    assert 'list.txt:1' in errors[0] and 'list.txt:3' in errors[1]


# --- the synthetic set through the Cityscapes loaders ---------------------------------------------------------------


def test_synthetic_pda_clips_match_the_files(synthetic_data_cfg):
    from lib.dataset import read_frame
    dataset = build_dataset(synthetic_data_cfg, 'val', 'pda')
    frames, label = dataset[0]
    assert frames.shape == (10, 3, 64, 128) and label.shape == (64, 128)
    root = synthetic_data_cfg['root']
    for k, frame in enumerate(frames):
        path = os.path.join(root, f'leftImg8bit_sequence/val/synthberg/synthberg_000000_{10 + k:06d}_leftImg8bit.png')
        assert torch.equal(frame, read_frame(path))
    assert set(label.unique().tolist()) <= set(range(19)) | {255}


def test_synthetic_triplets_and_modes(synthetic_data_cfg):
    cfg = dict(synthetic_data_cfg, crop_size=[32, 64], hflip=True)
    triplets = build_dataset(cfg, 'train', 'triplet')
    assert len(triplets) == 2 * 9
    frames, label = triplets[5]
    assert frames.shape == (3, 3, 32, 64) and label.shape == (32, 64)
    images = build_dataset(cfg, 'train', 'image')
    assert len(images) == 2 * 30  # every synthetic frame is labelled
    assert len(build_dataset(cfg, 'val', 'image')) == 1  # evaluation uses the listed frames only
    pairs = build_dataset(cfg, 'train', 'flow')
    assert len(pairs) == 2 * 29
    frames, flow = pairs[0]
    assert frames.shape == (2, 3, 32, 64) and flow.shape == (2, 32, 64) and flow.dtype == torch.float32
