"""Atomic file writes: an interrupted or failed write leaves the old file, never half a file under its name."""
import json
import os
from contextlib import contextmanager

import cv2
import numpy as np
import torch


def _fsync(path, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path, sync=False):
    """Yield a temporary path (``path``'s extension: writers choose the format by it) that replaces ``path`` if the
    block succeeds; ``sync=True`` also survives a power cut (not worth it for thousands of generated images)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(path)
    tmp = f'{stem}.tmp{os.getpid()}{ext}'
    try:
        try:
            yield tmp
        except OSError as err:
            # A failed write() names no file (or the temporary one): name the file the caller asked for.
            raise OSError(f'{path}: could not write ({err.strerror or err})') from None
        if sync:
            _fsync(tmp)
        os.replace(tmp, path)
        if sync:
            _fsync(folder, directory=True)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path, sync=True) as tmp, open(tmp, 'w') as f:
        f.write(text)


def write_json(path, data, indent=1, **kwargs):
    write_text(path, json.dumps(data, indent=indent, **kwargs) + '\n')


def save_torch(obj, path):
    with atomic_path(path, sync=True) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:
            # torch's zip writer reports a failed write as a RuntimeError with a C++ location.
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise OSError(f'{path}: could not write the checkpoint (disk full or over a size limit? torch: '
                          f'{first})') from None


def write_png(path, image, order='RGB'):
    """The one PNG writer: uint8 ``(H, W)`` or ``(H, W, 3)`` in ``order`` (RGB, or BGR as OpenCV holds it)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or image.ndim == 3 and image.shape[2] == 3) or not image.size:
        raise ValueError(f'{path}: expected a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}')
    if order not in ('RGB', 'BGR'):
        raise ValueError(f'write_png: order must be RGB or BGR, got {order!r}')
    if image.ndim == 3 and order == 'RGB':
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, image):
            raise OSError('cv2.imwrite refused it: disk full, over a size limit, or not writable?')
