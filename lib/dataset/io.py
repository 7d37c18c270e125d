"""Reading frames, labels and flow files; each reader raises one :class:`UserError` naming the bad file and what was
expected (``tools/check_dataset.py`` collects all of them)."""
import os

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lib.utils.errors import UserError
from lib.utils.metrics import IGNORE_INDEX

cv2.setNumThreads(1)  # OpenCV's threads would fight the DataLoader workers, which decode one image each
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _require_file(path):
    if not os.path.isfile(path):
        raise UserError(f'{path}: file not found')


def file_kind(path):
    """'PNG', 'JPEG' or None (other) from the first bytes of the file (its name may lie)."""
    with open(path, 'rb') as f:
        head = f.read(8)
    return 'PNG' if head == PNG_SIGNATURE else 'JPEG' if head[:3] == b'\xff\xd8\xff' else None


def check_multiple_of_4(path, height, width):
    """FlowNetS and the 1/4-resolution warp need frame sides that are multiples of 4."""
    if height % 4 or width % 4:
        raise UserError(f'{path}: frame is {height}x{width} (HxW); the networks need sides that are multiples '
                        f'of 4: crop or pad the frames (or set data.crop_size for training)')


def decode_frame(path, scaling='multiply'):
    """An RGB frame as float32 ``(3, H, W)`` numpy in [0, 1]: ``x * (1/255)``, or the original's ``x / 255`` with
    ``scaling='divide'``.  Numpy, not torch: torch would spread these tiny ops over its threads, slower when busy."""
    _require_file(path)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f'{path}: not a readable image (corrupt or unsupported format)')
    chw = np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)  # BGR -> RGB, (3, H, W)
    if scaling == 'divide':
        chw /= 255.0
    else:
        chw *= 1.0 / 255.0
    return chw


def read_frame(path, scaling='multiply'):
    """An RGB video frame as a float32 tensor ``(3, H, W)`` in [0, 1] (``scaling``: see :func:`decode_frame`)."""
    return torch.from_numpy(decode_frame(path, scaling))


def read_label(path, n_classes, size=None):
    """A train-id label map (8-bit PNG, values in ``[0, n_classes)`` or 255) as int64 ``(H, W)``, of ``size`` if set."""
    _require_file(path)
    kind = file_kind(path)
    if kind != 'PNG':
        # A JPEG label decodes, but its compression blurs the class ids at every boundary.
        raise UserError(f'{path}: not a PNG file ({kind or "unknown"} data); labels must be lossless PNG')
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise UserError(f'{path}: not a readable image (corrupt or unsupported format)')
    if label.ndim != 2 or label.dtype != np.uint8:
        raise UserError(f'{path}: expected a single-channel 8-bit train-id label map, got shape '
                        f'{label.shape} dtype {label.dtype}')
    if size is not None and label.shape != tuple(size):
        raise UserError(f'{path}: label is {label.shape[0]}x{label.shape[1]} but the frame is {size[0]}x{size[1]}')
    counts = np.bincount(label.ravel(), minlength=IGNORE_INDEX + 1)
    counts[:n_classes] = counts[IGNORE_INDEX] = 0
    bad = np.flatnonzero(counts).tolist()  # sorted values outside [0, n_classes) and the ignore index
    if bad:
        shown = ', '.join(str(v) for v in bad[:8]) + (', ...' if len(bad) > 8 else '')
        raise UserError(f'{path}: label values must be in [0, {n_classes}) or {IGNORE_INDEX}, found {shown}')
    return torch.from_numpy(label.astype(np.int64))


def read_flow(path, size=None):
    """A ground-truth flow file of the synthetic set: ``(flow (2, H, W) float32, valid (H, W) bool)``."""
    _require_file(path)
    try:
        with np.load(path) as data:
            flow = data['flow'].astype(np.float32)
            valid = data['valid'].astype(bool)
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise UserError(f'{path}: not a readable flow file with "flow" and "valid" arrays '
                        f'({err.__class__.__name__})') from None
    if flow.ndim != 3 or flow.shape[0] != 2 or valid.shape != flow.shape[1:]:
        raise UserError(f'{path}: expected flow (2, H, W) and valid (H, W), got {flow.shape} and {valid.shape}')
    if size is not None and flow.shape[1:] != tuple(size):
        raise UserError(f'{path}: flow is {flow.shape[1]}x{flow.shape[2]} but the frame is {size[0]}x{size[1]}')
    return torch.from_numpy(flow), torch.from_numpy(valid)


PNG_END = b'IEND\xaeB`\x82'
JPEG_END = b'\xff\xd9'


def image_problem(path):
    """``(None, (height, width))`` for a file that looks whole, else ``(problem, None)`` (one phrase)."""
    try:
        with Image.open(path) as image:  # reads the header only
            kind, (width, height) = image.format, image.size
    except FileNotFoundError:
        return 'file not found', None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return f'not a readable image ({type(err).__name__})', None
    try:
        with open(path, 'rb') as f:
            f.seek(-min(64, f.seek(0, 2)), 2)  # the last 64 bytes (seek returns the position: the size)
            tail = f.read()
    except OSError as err:
        return f'cannot be read ({err.strerror or err})', None
    if kind == 'PNG' and not tail.endswith(PNG_END):
        return 'truncated PNG (no IEND chunk at the end)', None
    if kind == 'JPEG' and JPEG_END not in tail[-16:]:
        return 'truncated JPEG (no end-of-image marker)', None
    return None, (height, width)
