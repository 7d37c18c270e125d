"""lib.utils.atomic.write_png: the one PNG writer (labels, frames, overlays, pictures, predictions)."""
import os

import cv2
import numpy as np
import pytest

from lib.utils import atomic
from lib.utils.atomic import write_png


def test_bytes_are_those_of_cv2_imwrite_and_channels_follow_order(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 11, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (7, 11), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    write_png(tmp_path / 'rgb.png', rgb)
    write_png(tmp_path / 'bgr.png', bgr, order='BGR')
    write_png(tmp_path / 'sub' / 'label.png', label)  # the folder is created
    # What the former writers (cv2.imwrite of the BGR array) produced, byte for byte.
    expected = cv2.imencode('.png', bgr)[1].tobytes()
    assert (tmp_path / 'rgb.png').read_bytes() == expected == (tmp_path / 'bgr.png').read_bytes()
    assert (tmp_path / 'sub' / 'label.png').read_bytes() == cv2.imencode('.png', label)[1].tobytes()
    assert np.array_equal(cv2.imread(str(tmp_path / 'rgb.png'))[..., ::-1], rgb)
    assert os.listdir(tmp_path / 'sub') == ['label.png']


@pytest.mark.parametrize('image', [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8),
                                   np.zeros((0, 4), np.uint8)])
def test_wrong_images_are_refused_before_anything_is_written(image, tmp_path):
    with pytest.raises(ValueError, match='expected a uint8'):
        write_png(tmp_path / 'x.png', image)
    assert os.listdir(tmp_path) == []


def test_a_refused_write_keeps_the_old_file_and_names_the_new_one(tmp_path, monkeypatch):
    path = tmp_path / 'x.png'
    path.write_bytes(b'old')
    monkeypatch.setattr(atomic.cv2, 'imwrite', lambda *a: False)  # what OpenCV returns on a full disk
    with pytest.raises(OSError, match=f'{path}: could not write'):
        write_png(path, np.zeros((2, 2), np.uint8))
    assert path.read_bytes() == b'old' and os.listdir(tmp_path) == ['x.png']
