"""Walk a whole split and collect every problem (instead of failing on the first bad sample)."""
import copy
import os

import numpy as np
from tqdm import tqdm

from lib.dataset import synthetic_layout
from lib.dataset.build import PDA_CLIP_LENGTH, list_path_of, num_classes
from lib.dataset.frame_list import read_list
from lib.dataset.io import check_multiple_of_4, file_kind, image_problem, read_flow, read_frame, read_label
from lib.dataset.video import snippet_offsets
from lib.utils.config import DEFAULTS, resolve_path
from lib.utils.errors import UserError

# An interpolated label has, along every edge between classes a and b, pixels of a class strictly between them; a
# native or nearest-resized one only where a thin structure lies between two classes in that order (a few percent of
# its class edges). A map without regions (more class edges than pixels) is not judged.
RAMP_SHARE = 0.2
MIN_RAMPS = 50


def interpolation_ramps(label):
    """``(pixels strictly between the classes of both neighbours along a row or a column, class-edge pixels)``
    of an ``(H, W)`` integer label map."""
    label = np.asarray(label, dtype=np.int32)
    ramps = 0
    for a, c, b in ((label[:, :-2], label[:, 1:-1], label[:, 2:]), (label[:-2], label[1:-1], label[2:])):
        ramps += int((((a < c) & (c < b)) | ((a > c) & (c > b))).sum())
    edges = int((label[:, 1:] != label[:, :-1]).sum() + (label[1:] != label[:-1]).sum())
    return ramps, edges


def check_nearest(path, label):
    """A problem message if the ``(H, W)`` ``label`` read from ``path`` looks resized with interpolation, else None."""
    ramps, edges = interpolation_ramps(label)
    if ramps >= MIN_RAMPS and RAMP_SHARE * edges < ramps and edges <= label.size:
        return (f'{path}: {ramps} pixels ({ramps / edges:.0%} of the class edges) lie strictly between the classes '
                f'of their neighbours, as after a bilinear or bicubic resize; resize labels with nearest-neighbour '
                f'(cv2.INTER_NEAREST)')
    return None


def _attempt(problems, call, *args):
    """``call(*args)``, or None after recording its UserError."""
    try:
        return call(*args)
    except UserError as err:
        problems.append(str(err))
        return None


def _frame_size(path, checked, problems):
    """Decode a frame once; its (H, W), or None after recording the problem."""
    if path not in checked:
        frame = _attempt(problems, read_frame, path)
        checked[path] = None if frame is None else tuple(frame.shape[-2:])
    return checked[path]


def _check_entry(root, entry, offsets, n_classes, checked, problems):
    target_path = os.path.join(root, entry.image)
    size = _frame_size(target_path, checked, problems)
    if size is not None:
        _attempt(problems, check_multiple_of_4, target_path, *size)
    for offset in offsets:
        frame = _attempt(problems, entry.frame, offset)
        if frame is None:
            continue
        path = os.path.join(root, frame)
        frame_size = _frame_size(path, checked, problems)
        if size is not None and frame_size is not None and frame_size != size:
            problems.append(f'{path}: frame is {frame_size[0]}x{frame_size[1]} but {target_path} is '
                            f'{size[0]}x{size[1]}')
    label_path = os.path.join(root, entry.label)
    label = _attempt(problems, read_label, label_path, n_classes, size)
    if label is None:  # one problem per file: a refused label is not judged further
        return
    resized = check_nearest(label_path, label.numpy())
    if resized:
        problems.append(resized)


def _check_synthetic_extras(root, entry, meta, n_classes, problems):
    offsets = snippet_offsets(meta)
    for offset in offsets:
        try:
            frame = entry.frame(offset)
            read_label(os.path.join(root, synthetic_layout.sequence_label_path(frame)), n_classes)
            if offset != offsets[0]:  # the first frame of a snippet has no flow into it
                read_flow(os.path.join(root, synthetic_layout.flow_path(frame)))
        except UserError as err:
            problems.append(str(err))


def list_config(name, root, list_path):
    """The ``data:`` section that checks one list file of dataset ``name`` under ``root``, as its val split."""
    return dict(copy.deepcopy(DEFAULTS['data']), name=name, root=os.path.abspath(root),
                val_list=os.path.abspath(list_path))


def find_problems(data_cfg, split, progress=True):
    """Every problem of one split, one message per bad file or list line (tools/check_dataset.py: what is checked)."""
    name = data_cfg.get('name')
    n_classes = num_classes(name)
    root = resolve_path(data_cfg.get('root'))
    problems = []
    try:
        entries = read_list(list_path_of(data_cfg, split), name, errors=problems)
    except UserError as err:
        return [str(err)]
    offsets = range(-max(PDA_CLIP_LENGTH - 1, int(data_cfg.get('max_gap', 10))), 1)  # every frame a clip reads
    meta = _attempt(problems, synthetic_layout.read_meta, root) if name == 'synthetic' else None
    checked = {}
    for entry in tqdm(entries, desc=f'checking {split}', disable=not progress):
        _check_entry(root, entry, offsets, n_classes, checked, problems)
        if meta is not None:
            _check_synthetic_extras(root, entry, meta, n_classes, problems)
    return problems


def check_clip_files(dataset, indices=None):
    """Every frame and label the clips ``indices`` (default: all) of a ``'pda'`` dataset read must exist and look
    whole, frames of one size (a multiple of 4), labels PNG files of that size: checked up front, since a bad file
    would otherwise stop the run after hours."""
    entries = [dataset.frames[i] for i in (range(len(dataset)) if indices is None else indices)]
    clips = [(entry, [entry.frame(offset) for offset in dataset.offsets] + [entry.label]) for entry in entries]
    missing = [(entry.source, p) for entry, files in clips for p in files
               if not os.path.isfile(os.path.join(dataset.root, p))]
    if missing:
        source, path = missing[0]
        raise UserError(f'{source}: {len(missing)} file(s) the PDA clips need are missing under '
                        f'{dataset.root}, first: {path}')
    problems, sizes = [], {}
    for entry, files in clips:
        clip = [os.path.join(dataset.root, p) for p in files]  # the frames, then the label
        for path in clip:
            if path not in sizes:
                problem, sizes[path] = image_problem(path)
                if problem is None and path == clip[-1] and file_kind(path) != 'PNG':
                    problem = 'not a PNG file; labels must be lossless PNG'
                if problem:
                    problems.append(f'{path}: {problem}')
        image = os.path.join(dataset.root, entry.image)
        size = sizes[image]
        if size is not None and (size[0] % 4 or size[1] % 4):
            problems.append(f'{image}: frame is {size[0]}x{size[1]} (HxW); the networks need sides that are '
                            f'multiples of 4')
        problems += [f'{p}: {sizes[p][0]}x{sizes[p][1]} but frame t of its clip is {size[0]}x{size[1]}'
                     for p in clip if size is not None and sizes[p] is not None and sizes[p] != size]
    problems = list(dict.fromkeys(problems))
    if problems:
        raise UserError(f'{len(problems)} problem(s) in the files the PDA clips read (tools/check_dataset.py '
                        f'lists them all), first: {problems[0]}')
