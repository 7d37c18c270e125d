"""Walk a whole split and collect every problem (instead of failing on the first bad sample)."""
import os

from tqdm import tqdm

from lib.utils.errors import UserError

from ..utils.config import resolve_path
from . import synthetic_layout
from .build import PDA_CLIP_LENGTH, list_path_of, num_classes
from .frame_list import read_list
from .io import check_multiple_of_4, read_flow, read_frame, read_label
from .video import snippet_offsets


def _frame_size(path, checked, problems):
    """Decode a frame once; its (H, W), or None after recording the problem."""
    if path not in checked:
        try:
            checked[path] = tuple(read_frame(path).shape[-2:])
        except UserError as err:
            problems.append(str(err))
            checked[path] = None
    return checked[path]


def _check_entry(root, entry, offsets, n_classes, checked, problems):
    target_path = os.path.join(root, entry.image)
    size = _frame_size(target_path, checked, problems)
    if size is not None:
        try:
            check_multiple_of_4(target_path, *size)
        except UserError as err:
            problems.append(str(err))
    for offset in offsets:
        try:
            path = os.path.join(root, entry.frame(offset))
        except UserError as err:
            problems.append(str(err))
            continue
        frame_size = _frame_size(path, checked, problems)
        if size is not None and frame_size is not None and frame_size != size:
            problems.append(f'{path}: frame is {frame_size[0]}x{frame_size[1]} but {target_path} is '
                            f'{size[0]}x{size[1]}')
    try:
        read_label(os.path.join(root, entry.label), n_classes, size)
    except UserError as err:
        problems.append(str(err))


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


def find_problems(data_cfg, split, progress=True):
    """Every problem of one split, as one message per bad file or list line (empty list = all good).

    Checks the list syntax, that every frame a training triplet or PDA clip needs exists, decodes and has the
    labelled frame's size, that every label is a valid train-id map of that size, and for the synthetic set
    its every-frame labels and flow files.
    """
    name = data_cfg.get('name')
    n_classes = num_classes(name)
    root = resolve_path(data_cfg.get('root'))
    problems = []
    try:
        entries = read_list(list_path_of(data_cfg, split), name, errors=problems)
    except UserError as err:
        return [str(err)]
    history = max(PDA_CLIP_LENGTH - 1, int(data_cfg.get('max_gap', 10)))
    offsets = range(-history, 1)
    meta = None
    if name == 'synthetic':
        try:
            meta = synthetic_layout.read_meta(root)
        except UserError as err:
            problems.append(str(err))
    checked = {}
    for entry in tqdm(entries, desc=f'checking {split}', disable=not progress):
        _check_entry(root, entry, offsets, n_classes, checked, problems)
        if meta is not None:
            _check_synthetic_extras(root, entry, meta, n_classes, problems)
    return problems
