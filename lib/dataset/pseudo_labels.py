"""Precomputed DeepLab labels of the training frames ``t-i`` and ``t`` (``data.pseudo_labels: precomputed``), over
whole frames as the code of the published Cityscapes weights (jfzhuang/DAVSS a03c1ea, ``--root_mask_path``) read them
(its later code runs DeepLab on the crop: less context at the border).  One 8-bit PNG per frame at
``<pseudo_label_root>/<frame's path>``, and ``pseudo_labels.json`` (the DeepLab file's sha256 and settings) so that
one folder never mixes two networks' masks."""
import json
import os

import torch
from tqdm import tqdm

from lib.dataset.io import decode_frame
from lib.utils.atomic import write_json, write_png
from lib.utils.errors import UserError
from lib.utils.outputs import OwnedFolder

MARKER = 'pseudo_labels.json'
KIND = 'pseudo labels'
WRITER = 'tools/make_pseudo_labels.py'


def mask_path(root, frame):
    """Where the mask of ``frame`` (relative to the dataset root) lives: the same path under ``root``, as a PNG."""
    return os.path.join(root, os.path.splitext(frame)[0] + '.png')


def training_frames(entries, max_gap):
    """The frames of the training list whose labels a triplet may need: ``t - i`` for ``i`` in
    ``1 .. max_gap - 1`` and ``t`` itself, for every list entry (each frame once, in list order)."""
    return list(dict.fromkeys(entry.frame(offset) for entry in entries for offset in range(1 - max_gap, 1)))


def read_marker(root):
    """The settings the masks under ``root`` were written with; a UserError when there are none."""
    path = os.path.join(root, MARKER)
    if not os.path.isfile(path):
        raise UserError(f'data.pseudo_label_root: {root} holds no {MARKER}; write the masks first: '
                        f'python {WRITER} <config>')
    try:
        with open(path) as f:
            marker = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f'{path}: not readable ({err.__class__.__name__})') from None
    if not isinstance(marker, dict) or marker.get('writer') != WRITER:
        raise UserError(f'{path}: not written by {WRITER}')
    return marker


def check_settings(root, settings):
    """A new folder gets ``settings``; a folder of masks made with other settings is refused, naming them."""
    if not os.path.isfile(os.path.join(root, MARKER)):
        write_json(os.path.join(root, MARKER), dict(settings, writer=WRITER))
        return
    marker = read_marker(root)
    changed = [key for key in settings if marker.get(key) != settings[key]]
    if changed:
        shown = ', '.join(f'{key} {marker.get(key)!r} there, {settings[key]!r} now' for key in changed)
        raise UserError(f'data.pseudo_label_root: {root} holds masks made with other settings ({shown}); '
                        f'choose another folder, or delete that one to start again')


def write_masks(root, data_root, frames, segment, settings, pixel_scaling='multiply', progress=True):
    """Write the mask of every frame of ``frames`` (paths under ``data_root``) that ``root`` lacks; returns how many.
    ``segment``: ``(1, 3, H, W) float32 -> (1, H, W) int64``; ``settings``: what the masks depend on (the marker)."""
    with OwnedFolder(root, KIND, 'data.pseudo_label_root', own_files=[MARKER]):
        check_settings(root, settings)
        todo = [frame for frame in frames if not os.path.isfile(mask_path(root, frame))]
        for frame in tqdm(todo, desc='pseudo labels', disable=not progress):
            image = torch.from_numpy(decode_frame(os.path.join(data_root, frame), pixel_scaling))[None]
            labels = segment(image)[0]
            if int(labels.max()) > 254:
                raise UserError(f'{frame}: {int(labels.max()) + 1} classes do not fit an 8-bit mask')
            write_png(mask_path(root, frame), labels.to(torch.uint8).cpu().numpy())
        return len(todo)
