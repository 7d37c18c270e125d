"""The official DAVSS list format: one labelled frame per line, ``<frame image> <label image>`` relative to the
dataset root.  The frame index is the 6-digit number in the image name; frame ``t - k`` is the same name with the
index ``t - k`` (CamVid: ``k`` frames decoded at 30 fps earlier; the label's own number is never used)."""
import glob
import os
import re
from dataclasses import dataclass

from lib.utils.errors import UserError

# <prefix><6-digit frame index><suffix>: Cityscapes "..._000019_leftImg8bit.png", CamVid "..._000030.png".
_CITYSCAPES_FRAME = re.compile(r'^(?P<prefix>.+_)(?P<index>\d{6})(?P<suffix>_leftImg8bit\.png)$')
FRAME_PATTERNS = {'cityscapes': _CITYSCAPES_FRAME, 'synthetic': _CITYSCAPES_FRAME,
                  'camvid': re.compile(r'^(?P<prefix>.+_)(?P<index>\d{6})(?P<suffix>\.png)$')}


@dataclass(frozen=True)
class LabelledFrame:
    """One list line: the labelled frame ``t`` of a video, and how to name its neighbours."""
    prefix: str
    index: int
    suffix: str
    label: str  # label path relative to the dataset root
    source: str  # "<list file>:<line number>", for error messages

    @property
    def image(self):
        return self.frame(0)

    def frame(self, offset):
        """Relative path of frame ``t + offset`` (offset <= 0 for the frames before ``t``)."""
        index = self.index + offset
        if index < 0:
            raise UserError(f'{self.source}: frame {self.index}{offset:+d} = {index} does not exist '
                            f'(the list line needs earlier frames than the video has)')
        return f'{self.prefix}{index:06d}{self.suffix}'


def parse_line(line, pattern, source):
    """``'<image> <label>'`` -> :class:`LabelledFrame`; raises :class:`UserError` naming ``source``."""
    fields = line.split()
    if len(fields) != 2:
        raise UserError(f'{source}: expected "<frame image> <label image>", got {len(fields)} fields')
    image, label = fields
    match = pattern.match(image)
    if match is None:
        raise UserError(f'{source}: frame name "{image}" does not end in a 6-digit frame index '
                        f'(expected {pattern.pattern})')
    return LabelledFrame(match['prefix'], int(match['index']), match['suffix'], label, source)


def read_list(list_path, dataset_name, errors=None):
    """All labelled frames of a list file; ``dataset_name`` selects the frame-naming rule; ``errors``: None to raise
    on the first bad line, or a list to append every problem to (skipping the line)."""
    if dataset_name not in FRAME_PATTERNS:
        raise UserError(f'data.name: expected one of {sorted(FRAME_PATTERNS)}, got "{dataset_name}"')
    if list_path is None or not os.path.isfile(list_path):
        raise UserError(f'{list_path}: list file not found')
    pattern = FRAME_PATTERNS[dataset_name]
    frames = []
    # utf-8-sig: a byte-order mark must not become part of the first path.
    with open(list_path, encoding='utf-8-sig') as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                frames.append(parse_line(line, pattern, f'{list_path}:{number}'))
            except UserError as err:
                if errors is None:
                    raise
                errors.append(str(err))
    if not frames and errors is None:
        raise UserError(f'{list_path}: the list holds no frames')
    return frames


def format_line(image, label):
    return f'{image} {label}\n'


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
