"""Frames too large for the memory available are refused before the first one, with a --size that fits."""
import numpy as np
import pytest

from lib.infer.video_segmenter import VideoSegmenter
from lib.utils import profiling
from lib.utils.errors import UserError


def test_a_frame_that_would_not_fit_is_refused_with_a_size_that_fits(model_files, monkeypatch):
    config, checkpoint = model_files
    seg = VideoSegmenter.from_config(config, checkpoint)
    peak = {}

    def measured(fn, device):  # the real measurement of the probe, remembered
        peak['bytes'] = real(fn, device)
        return peak['bytes']
    real = profiling.peak_memory_bytes
    monkeypatch.setattr(profiling, 'peak_memory_bytes', measured)
    seg.check_memory((1080, 1920))  # the paper's size or less: never probed
    assert not peak
    monkeypatch.setattr(profiling, 'available_memory_bytes', lambda device: 10 * 2 ** 20)
    with pytest.raises(UserError) as err:
        seg.check_memory((3000, 4000))
    assert peak['bytes'] > 0
    message = str(err.value)
    assert message.startswith('frames of 4000x3000 (WxH) need about') and 'GiB are available' in message
    h, w = (int(v) for v in message.split('--size ')[1].split())
    need_per_pixel = peak['bytes'] / (128 * 256)
    assert h % 4 == w % 4 == 0 and need_per_pixel * h * w <= 10 * 2 ** 20 < need_per_pixel * (h + 8) * (w + 8)
    monkeypatch.setattr(profiling, 'available_memory_bytes', lambda device: 2 ** 50)
    seg.check_memory((3000, 4000))  # fits: no error


def test_run_checks_the_first_frame_before_writing(model_files, monkeypatch, tmp_path):
    config, checkpoint = model_files
    seg = VideoSegmenter.from_config(config, checkpoint)
    calls = []
    monkeypatch.setattr(seg, 'check_memory', lambda size: calls.append(size))
    frames = tmp_path / 'frames'
    frames.mkdir()
    import cv2
    for t in range(2):
        cv2.imwrite(str(frames / f'{t}.png'), np.zeros((20, 28, 3), np.uint8))
    seg.run(str(frames), str(tmp_path / 'out'))
    assert calls == [(20, 28)]
