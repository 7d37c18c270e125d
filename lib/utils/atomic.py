"""Atomic file writes: every output of the project (checkpoints, results, pictures, data) goes through here, so an
interrupted run never leaves a half-written file that looks complete."""
import json
import os
from contextlib import contextmanager

import torch


@contextmanager
def atomic_path(path):
    """Yield a temporary path in ``path``'s folder (created if needed) to write; it replaces ``path`` when the block
    ends without error and is removed otherwise.

    The temporary name keeps ``path``'s extension, because writers such as ``cv2.imwrite``, ``np.savez`` and
    matplotlib's ``savefig`` choose the format from it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(path)
    tmp = f'{stem}.tmp{os.getpid()}{ext}'
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        f.write(text)


def write_json(path, data, indent=1, **kwargs):
    write_text(path, json.dumps(data, indent=indent, **kwargs) + '\n')


def save_torch(obj, path):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
