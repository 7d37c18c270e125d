"""Pictures of predictions: colour tiles, distortion heat maps, error maps, labelled grids, legends, GIFs and plots,
all uint8 RGB ``(H, W, 3)`` so that the pieces stack freely; files are written atomically."""
import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw

from lib.utils.atomic import atomic_path
from lib.utils.metrics import IGNORE_INDEX
from lib.utils.palette import colorize

# Error maps: pixels the prediction gets right stay dark so that the mistakes (red) stand out.
ERROR_COLOURS = {'correct': (40, 40, 40), 'wrong': (230, 30, 30), 'ignored': (0, 0, 0)}
HEAT_COLORMAP = 'inferno'  # perceptually uniform: 0 = no distortion (black) .. 1 = distorted (yellow)


def heat_map(values):
    """A map (H, W) with values in [0, 1] (tensor or array) -> uint8 (H, W, 3) in the ``inferno`` colour map."""
    if hasattr(values, 'cpu'):
        values = values.detach().float().cpu().numpy()
    rgba = matplotlib.colormaps[HEAT_COLORMAP](np.clip(values, 0.0, 1.0), bytes=True)  # (H, W, 4) uint8
    return np.ascontiguousarray(rgba[..., :3])


def colour_bar(height, width):
    """The heat-map scale as a tile (H, W, 3): the colours from 0 (left) to 1 (right), labelled."""
    pil = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(pil)
    bar = heat_map(np.tile(np.linspace(0.0, 1.0, width - 8), (max(height // 3, 1), 1)))
    pil.paste(Image.fromarray(bar), (4, height // 3))
    draw.text((4, 2), 'distortion scale', fill=(0, 0, 0))
    below = height // 3 + bar.shape[0] + 1
    for value, anchor in ((0, 'la'), (0.5, 'ma'), (1, 'ra')):
        draw.text((4 + value * (width - 9), below), f'{value:g}', fill=(0, 0, 0), anchor=anchor)
    return np.asarray(pil)


def flows_to_rgb(flows):
    """Flow fields ``(2, H, W)`` (dx, dy) -> uint8 ``(H, W, 3)`` each, on the colour wheel of one common scale."""
    from torchvision.utils import flow_to_image  # here: importing torchvision takes seconds, video output needs none

    batch = torch.stack([torch.as_tensor(f, dtype=torch.float32) for f in flows])  # (N, 2, H, W)
    return [np.ascontiguousarray(rgb.permute(1, 2, 0).numpy()) for rgb in flow_to_image(batch)]


def error_map(pred, label, ignore_index=IGNORE_INDEX):
    """Where ``pred`` (H, W) disagrees with ``label`` (H, W): red on dark grey, black where the label is ignored."""
    if hasattr(pred, 'cpu'):
        pred, label = pred.cpu().numpy(), label.cpu().numpy()
    out = np.full(pred.shape + (3,), ERROR_COLOURS['correct'], dtype=np.uint8)
    ignored = label == ignore_index
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
    right, bottom = draw.textbbox((3, 2), text)[2:]
    draw.rectangle((0, 0, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255))
    return np.asarray(pil)


def grid(rows, gap=2):
    """Rows of uint8 (h, w, 3) tiles of one size (None: a black cell), ``gap`` white pixels apart -> uint8
    (R*h + (R-1)*gap, K*w + (K-1)*gap, 3), K the longest row."""
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
    for i, (name, colour) in enumerate(zip(names, colours)):
        y = 4 + i * (swatch + 4)
        draw.rectangle((4, y, 4 + swatch, y + swatch), fill=colour, outline=(0, 0, 0))
        label = f'{i if i < len(class_names) else IGNORE_INDEX} {name}'
        top, bottom = draw.textbbox((0, 0), label)[1::2]
        draw.text((swatch + 10, y + (swatch - (bottom + top)) // 2), label, fill=(0, 0, 0))
    return np.asarray(pil)


def video_frame(image, label, palette, names=None, key=False):
    """A frame of the overlay video: ``image`` (H, W, 3) with a strip along its bottom naming the classes of
    ``label`` (H, W) (most pixels first, as many as fit) and, on a key frame, ``KEY`` in the top-left corner."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    counts = np.bincount(label.ravel(), minlength=256)[:len(palette)]
    height, width = image.shape[:2]
    top = height - 12
    draw.rectangle((0, top, width, height), fill=(0, 0, 0))
    x = 2
    for c in np.argsort(-counts, kind='stable')[:int((counts > 0).sum())]:
        text = names[c] if names is not None else str(c)
        right = x + 10 + draw.textlength(text)
        if right > width:
            break
        draw.rectangle((x, top + 2, x + 7, top + 9), fill=tuple(int(v) for v in palette[c]))
        draw.text((x + 10, top + 1), text, fill=(255, 255, 255))
        x = right + 6
    return caption(np.asarray(pil), 'KEY') if key else np.asarray(pil)


def save_gif(images, path, duration_ms=300):
    """Write uint8 (H, W, 3) images as an endlessly looping animated GIF, atomically."""
    frames = [Image.fromarray(image) for image in images]
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format='GIF', save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)


class TileMaker:
    """Turns tensors into captioned tiles of one width (labels resized nearest, images bilinear)."""

    def __init__(self, palette, width):
        self.palette = palette
        self.width = width

    def image(self, frame, text):
        """``frame``: (3, H, W) float in [0, 1]."""
        rgb = frame.detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy().transpose(1, 2, 0)
        return caption(resize(np.ascontiguousarray(rgb), self.width, nearest=False), text)

    def label(self, label, text):
        return caption(resize(colorize(label, self.palette), self.width, nearest=True), text)

    def heat(self, values, text):
        return caption(resize(heat_map(values), self.width, nearest=False), text)

    def errors(self, pred, label, text):
        rate = error_rate(pred.cpu().numpy(), label.cpu().numpy())
        return caption(resize(error_map(pred, label), self.width, nearest=True), f'{text} {100 * rate:.1f}%')


def clip_pictures(trace, frames, label, tiles):
    """The grid (uint8 image) and GIF frames (list of uint8 images) of one traced clip (batch index 0)."""
    last = frames.shape[0] - 1
    names = ['t' if j == last else f't-{last - j}' for j in trace['frames']]
    row_frames = [tiles.image(frames[j], f'frame {n}') for j, n in zip(trace['frames'], names)]
    row_propagated = [tiles.label(p[0], f'{"key" if k == 0 else "propagated"} {n}')
                      for k, (p, n) in enumerate(zip(trace['propagated'], names))]
    scale = colour_bar(*row_frames[0].shape[:2])  # in the key frame's cell, which has no distortion map
    row_distortion = [scale if dm is None else tiles.heat(dm[0], f'distortion {n}')
                      for dm, n in zip(trace['distortion'], names)]
    row_merged = [tiles.label(p[0], f'{"key" if k == 0 else "corrected"} {n}')
                  for k, (p, n) in enumerate(zip(trace['merged'], names))]
    row_truth = [tiles.label(label, 'ground truth t'), tiles.label(trace['per_frame'][0], 'key network on t'),
                 tiles.errors(trace['propagated'][-1][0], label, 'err propagated'),
                 tiles.errors(trace['merged'][-1][0], label, 'err corrected')]
    picture = grid([row_frames, row_propagated, row_distortion, row_merged, row_truth])
    animation = [np.concatenate(tiles_of_step, axis=1)
                 for tiles_of_step in zip(row_frames, row_propagated, row_distortion, row_merged)]
    return picture, animation


def _save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)


def plot_tradeoff(report, path, title):
    """mIoU against GFLOPs, ms per frame and temporal consistency of the policies of a ``lib.eval.keyframe_policies``
    report: fixed intervals (labelled k), distortion-triggered, per-frame, the deployed path (ms), the truth's TC."""
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt

    flow = 'ground_truth' if 'ground_truth' in report['tc_flows'] else 'dis'

    def tc(r):
        value = r['tc'].get(flow, {}).get('tc')
        return float('nan') if value is None else 100 * value

    rows = {name: [dict(r, tc_value=tc(r)) for r in report[name]] for name in ('fixed', 'propagation', 'distortion')}
    paths = report.get('paths')
    deployed = paths['paths'][paths['deployed']] if paths else None
    if deployed:  # the DAVSS curve with the deployed path's step times
        rows['deployed'] = [dict(r, ms_per_frame=(r['key_frames'] * deployed['key_ms'] + (
            r['frames'] - r['key_frames']) * deployed['nonkey_ms']) / r['frames']) for r in report['fixed']]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), sharey=True)
    costs = report['step_costs']
    for ax, cost in zip(axes, ('gflops_per_frame', 'ms_per_frame', 'tc_value')):
        curves = [('fixed', 'o-', 'DAVSS, key frame every k'), ('propagation', '^:', 'propagation only, every k'),
                  ('distortion', 's--', 'DAVSS, distortion-triggered')]
        if cost == 'ms_per_frame' and deployed:
            curves.append(('deployed', 'd-', f'DAVSS, deployed path ({paths["deployed"]})'))
        for name, style, label in curves:
            results = sorted(rows[name], key=lambda r: r['key_fraction'])  # a curve in the order of k
            ax.plot([r[cost] for r in results], [100 * r['miou'] for r in results], style, label=label, ms=4)
            for r in [r for r in results if name in ('fixed', 'propagation') and r['policy'].startswith('fixed:')]:
                ax.annotate(r['policy'].split(':')[1], (r[cost], 100 * r['miou']), textcoords='offset points',
                            xytext=(2, 4 if name == 'fixed' else -10), fontsize=7)
        per_frame = rows['fixed'][0]
        ax.plot([per_frame[cost]], [100 * per_frame['miou']], '*', ms=12, color='black', label='per-frame DeepLab')
        marked = [r for r in rows['fixed'] if r['policy'] == report.get('marked')]
        for r in marked:
            ax.plot([r[cost]], [100 * r['miou']], 'o', ms=13, mfc='none', mec='red', mew=1.5,
                    label=f'paper\'s setting ({r["policy"]})')
        ax.grid(alpha=0.3)
    for ax, unit in zip(axes, ('gflops', 'ms')):
        ax.set_xlabel(f'average {unit.replace("gflops", "GFLOPs")} per frame (key {costs["key"][unit]:.3g}, non-key '
                      f'{costs["nonkey"][unit]:.3g}: {100 * costs["nonkey"][unit] / costs["key"][unit]:.0f}%)')
    if deployed:
        timed = {name: paths['paths'][name] for name in ('exact', paths['deployed'])}
        axes[1].set_xlabel(axes[1].get_xlabel() + '\ntimed together: ' + ', '.join(
            f'{name} key {p["key_ms"]:.3g}, non-key {p["nonkey_ms"]:.3g} ({100 * p["non_key_over_key_ms"]:.0f}%)'
            for name, p in timed.items()))
    truth = (report.get('ground_truth_tc') or {}).get(flow, {}).get('tc')
    if truth is not None:
        axes[2].axvline(100 * truth, color='black', ls='--', label='ground truth\'s own TC')
    axes[2].set_xlabel(f'temporal consistency (%), {flow.replace("_", "-")} flow (higher: less flicker)')
    axes[0].set_ylabel('mIoU (%)')
    for ax in axes:
        ax.legend(fontsize=7, loc='lower right')
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def plot_pda(result, path, title):
    """mIoU against the key-frame distance of a ``pda.json``: per-frame, propagation only, DAVSS (those present)."""
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    distances = result['distances']
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if result.get('per_frame'):
        ax.axhline(100 * result['per_frame']['miou'], color='black', ls='--', label='per-frame (key network on t)')
    for key, style, label in (('propagation_only', '^:', 'propagation only (DFF-style)'),
                              ('davss', 'o-', 'DAVSS (corrected)')):
        if result.get(key):
            ax.plot(distances, [None if v is None else 100 * v for v in result[key]['miou']], style, label=label)
    ax.set_xlabel('distance d to the key frame (frames)')
    ax.set_ylabel('mIoU (%)')
    ax.set_xticks(distances)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
