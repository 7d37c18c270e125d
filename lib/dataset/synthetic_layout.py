"""Paths of the synthetic set, in the Cityscapes layout plus every-frame labels, flow files and a metadata file
(docs/data.md: the layout and what a flow file holds)."""
import json
import os

from lib.utils.errors import UserError

META_FILE = 'synthetic_meta.json'
EXTRA_DIR = 'synthetic_extra'
_SEQUENCE_DIR = 'leftImg8bit_sequence/'
_FRAME_SUFFIX = '_leftImg8bit.png'


def _frame_stem(frame_path):
    """``leftImg8bit_sequence/<split>/<city>/<name>_leftImg8bit.png`` -> ``<split>/<city>/<name>``."""
    if not frame_path.startswith(_SEQUENCE_DIR) or not frame_path.endswith(_FRAME_SUFFIX):
        raise UserError(f'{frame_path}: not a synthetic frame name (leftImg8bit_sequence/..._leftImg8bit.png)')
    return frame_path[len(_SEQUENCE_DIR):-len(_FRAME_SUFFIX)]


def frame_path(split, city, seq, frame):
    return f'{_SEQUENCE_DIR}{split}/{city}/{city}_{seq:06d}_{frame:06d}{_FRAME_SUFFIX}'


def label_path(split, city, seq, frame):
    """The Cityscapes-style label of a snippet's labelled frame (``gtFine/``)."""
    return f'gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelTrainIds.png'


def label_ids_path(split, city, seq, frame):
    """The same label in Cityscapes label ids (the format of cityscapesscripts and the benchmark server)."""
    return f'gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png'


def sequence_label_path(frame_rel):
    """The every-frame label of a frame (relative path in, relative path out)."""
    return f'{EXTRA_DIR}/gtFine_sequence/{_frame_stem(frame_rel)}_gtFine_labelTrainIds.png'


def flow_path(frame_rel):
    """The ground-truth backward flow into a frame (relative path in, relative path out)."""
    return f'{EXTRA_DIR}/flow/{_frame_stem(frame_rel)}_flow.npz'


def read_meta(root):
    path = os.path.join(root, META_FILE)
    if not os.path.isfile(path):
        raise UserError(f'{path}: not found; is {root} a synthetic set written by tools/make_synthetic.py?')
    try:
        with open(path) as f:
            meta = json.load(f)
        int(meta['n_frames']), int(meta['labelled_frame'])
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f'{path}: not a valid synthetic metadata file ({err.__class__.__name__}: {err})') from None
    return meta
