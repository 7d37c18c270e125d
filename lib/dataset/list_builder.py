"""Rebuild the official list files from a dataset folder.

Cityscapes: one line per ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png``, naming the same frame in
``leftImg8bit_sequence/``.  CamVid: one line per ``label/<seq>_[f]<number>.png``; the frame it labels is
``video_image/<seq>/<seq>_<number - offset>.png``, where the offset relates CamVid's original frame numbers
to the frames decoded from the 30 fps video (the official lists imply 6660 for 0001TP and -1 for the other
sequences).
"""
import glob
import os
import re

from lib.utils.atomic import write_text
from lib.utils.errors import UserError

from .frame_list import format_line

CAMVID_OFFSETS = {'0001TP': 6660}
CAMVID_DEFAULT_OFFSET = -1
_CAMVID_LABEL = re.compile(r'^(?P<seq>.+?)_f?(?P<number>\d+)\.png$')
_CITYSCAPES_LABEL = re.compile(r'^(?P<stem>.+_\d{6}_\d{6})_gtFine_labelTrainIds\.png$')


def cityscapes_lines(root, split):
    pattern = os.path.join(root, 'gtFine', split, '*', '*_gtFine_labelTrainIds.png')
    lines = []
    for path in sorted(glob.glob(pattern)):
        match = _CITYSCAPES_LABEL.match(os.path.basename(path))
        if match is None:
            continue
        city = os.path.basename(os.path.dirname(path))
        label = os.path.relpath(path, root).replace(os.sep, '/')
        lines.append(format_line(f'leftImg8bit_sequence/{split}/{city}/{match["stem"]}_leftImg8bit.png', label))
    if not lines:
        raise UserError(f'{pattern}: no train-id labels found (run cityscapesscripts\' csCreateTrainIdLabelImgs)')
    return lines


def camvid_lines(root, sequences=None, offsets=None):
    """Lines for the labels of ``sequences`` (all if None); ``offsets`` override :data:`CAMVID_OFFSETS`."""
    offsets = {**CAMVID_OFFSETS, **(offsets or {})}
    pattern = os.path.join(root, 'label', '*.png')
    lines = []
    for path in sorted(glob.glob(pattern)):
        match = _CAMVID_LABEL.match(os.path.basename(path))
        if match is None or (sequences and match['seq'] not in sequences):
            continue
        seq = match['seq']
        frame = int(match['number']) - offsets.get(seq, CAMVID_DEFAULT_OFFSET)
        lines.append(format_line(f'video_image/{seq}/{seq}_{frame:06d}.png', f'label/{os.path.basename(path)}'))
    if not lines:
        raise UserError(f'{pattern}: no CamVid labels found' + (f' for sequences {sequences}' if sequences else ''))
    return lines


def write_list(path, lines):
    write_text(path, ''.join(lines))
