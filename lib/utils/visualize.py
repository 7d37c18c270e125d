"""Pictures of predictions: colour tiles, distortion heat maps, error maps, labelled grids, legends and GIFs.

Every function works on uint8 RGB arrays ``(H, W, 3)`` so that the pieces can be stacked freely; writers go
through a temporary name and ``os.replace`` so that an interrupted run leaves no half-written picture.
"""

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lib.utils.atomic import atomic_path
from lib.utils.metrics import IGNORE_INDEX
from lib.utils.palette import colorize

# Error maps: pixels the prediction gets right stay dark so that the mistakes (red) stand out.
ERROR_COLOURS = {'correct': (40, 40, 40), 'wrong': (230, 30, 30), 'ignored': (0, 0, 0)}
HEAT_COLORMAP = 'inferno'  # perceptually uniform: 0 = no distortion (black) .. 1 = distorted (yellow)


def frame_to_rgb(frame):
    """A frame tensor (3, H, W) float in [0, 1] -> uint8 (H, W, 3)."""
    array = frame.detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy()
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def label_to_rgb(label, palette):
    """A label map (H, W) (tensor or array, 255 = ignore) -> uint8 (H, W, 3) in the dataset's colours."""
    if hasattr(label, 'cpu'):
        label = label.cpu().numpy()
    return colorize(np.asarray(label), palette)


def heat_map(values):
    """A map (H, W) with values in [0, 1] (tensor or array) -> uint8 (H, W, 3) in the ``inferno`` colour map."""
    if hasattr(values, 'cpu'):
        values = values.detach().float().cpu().numpy()
    rgba = matplotlib.colormaps[HEAT_COLORMAP](np.clip(values, 0.0, 1.0), bytes=True)  # (H, W, 4) uint8
    return np.ascontiguousarray(rgba[..., :3])


def error_map(pred, label, ignore_index=IGNORE_INDEX):
    """Where ``pred`` (H, W) disagrees with ``label`` (H, W): red on dark grey, black where the label is ignored."""
    if hasattr(pred, 'cpu'):
        pred, label = pred.cpu().numpy(), label.cpu().numpy()
    out = np.empty(pred.shape + (3,), dtype=np.uint8)
    ignored = label == ignore_index
    out[:] = ERROR_COLOURS['correct']
    out[(pred != label) & ~ignored] = ERROR_COLOURS['wrong']
    out[ignored] = ERROR_COLOURS['ignored']
    return out


def error_rate(pred, label, ignore_index=IGNORE_INDEX):
    """Fraction of labelled pixels that ``pred`` gets wrong (for tile captions)."""
    valid = label != ignore_index
    return float(((pred != label) & valid).sum()) / max(int(valid.sum()), 1)


def resize(image, width, nearest):
    """Scale an (H, W, 3) uint8 image to ``width`` keeping the aspect ratio; ``nearest`` for label colours."""
    h, w = image.shape[:2]
    height = max(1, round(h * width / w))
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


def caption(image, text):
    """Write ``text`` in the top-left corner of a copy of ``image`` on a dark box, readable on any colour."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    right, bottom = draw.textbbox((3, 2), text, font=font)[2:]
    draw.rectangle((0, 0, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil)


def grid(rows, gap=2):
    """Tiles arranged in rows; ``None`` leaves a black cell. All tiles must share one size.

    Args:
        rows: list of rows, each a list of uint8 (h, w, 3) tiles or None.
        gap: pixels of white between cells.
    Returns:
        uint8 (R*h + (R-1)*gap, K*w + (K-1)*gap, 3) with K the longest row.
    """
    tiles = [t for row in rows for t in row if t is not None]
    if not tiles:
        raise ValueError('grid: no tiles')
    h, w = tiles[0].shape[:2]
    if any(t.shape[:2] != (h, w) for t in tiles):
        raise ValueError('grid: tiles differ in size')
    n_cols = max(len(row) for row in rows)
    out = np.full((len(rows) * (h + gap) - gap, n_cols * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            y, x = r * (h + gap), c * (w + gap)
            out[y:y + h, x:x + w] = 0 if tile is None else tile
    return out


def legend(palette, class_names, swatch=18, width=180):
    """A column of colour swatches with class names, one row per class (ignore = black last)."""
    names = list(class_names) + ['ignore']
    colours = [tuple(int(v) for v in palette[i]) for i in range(len(class_names))] + [(0, 0, 0)]
    pil = Image.new('RGB', (width, len(names) * (swatch + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    for i, (name, colour) in enumerate(zip(names, colours)):
        y = 4 + i * (swatch + 4)
        draw.rectangle((4, y, 4 + swatch, y + swatch), fill=colour, outline=(0, 0, 0))
        label = f'{i if i < len(class_names) else IGNORE_INDEX} {name}'
        top, bottom = draw.textbbox((0, 0), label, font=font)[1::2]
        draw.text((swatch + 10, y + (swatch - (bottom + top)) // 2), label, fill=(0, 0, 0), font=font)
    return np.asarray(pil)


def save_png(image, path):
    """Write an (H, W, 3) uint8 image atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format='PNG')


def save_gif(images, path, duration_ms=300):
    """Write uint8 (H, W, 3) images as an endlessly looping animated GIF, atomically."""
    frames = [Image.fromarray(image) for image in images]
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format='GIF', save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
