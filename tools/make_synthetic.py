"""Generate the synthetic street-video set (Cityscapes layout, every frame labelled, ground-truth flow).

    python3 tools/make_synthetic.py --root data/synthetic                 # default: 128x256, 24 train + 8 val
    python3 tools/make_synthetic.py --root data/synthetic_tiny --size 64 128 --train 2 --val 1 --seed 1
    python3 tools/make_synthetic.py --root data/synthetic --preview docs/images

The result is a function of the options only (same options, same files).  See docs/data.md.
"""
import argparse
import json
import os
import sys
import time

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lib.dataset import synthetic  # noqa: E402
from lib.dataset import synthetic_layout as layout  # noqa: E402
from lib.dataset.io import read_flow  # noqa: E402
from lib.utils.atomic import atomic_path
from lib.utils.palette import CITYSCAPES_PALETTE, colorize  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--root', default=os.environ.get('SYNTHETIC_ROOT', 'data/synthetic'),
                        help='output folder (default: data/synthetic, or $SYNTHETIC_ROOT)')
    parser.add_argument('--size', type=int, nargs=2, default=(128, 256), metavar=('H', 'W'))
    parser.add_argument('--train', type=int, default=24, help='training snippets')
    parser.add_argument('--val', type=int, default=8, help='validation snippets')
    parser.add_argument('--test', type=int, default=0, help='test snippets')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--difficulty', default='medium', choices=sorted(synthetic.DIFFICULTIES))
    parser.add_argument('--focal', type=float, default=None,
                        help="focal length in image widths (default: the preset's 0.8; tools/demo.py uses 1.6)")
    parser.add_argument('--frames', type=int, default=30, help='frames per snippet')
    parser.add_argument('--labelled-frame', type=int, default=19)
    parser.add_argument('--workers', type=int, default=None, help='processes (default: CPU count)')
    parser.add_argument('--preview', metavar='DIR', default=None,
                        help='also write example frames / labels / flow of the first val snippet to DIR')
    return parser.parse_args(argv)


def flow_to_rgb(flow, max_magnitude=None):
    """HSV colour coding of a (2, H, W) flow: hue = direction, value = magnitude."""
    dx, dy = flow[0].astype(np.float32), flow[1].astype(np.float32)
    magnitude, angle = cv2.cartToPolar(dx, dy, angleInDegrees=True)
    scale = max_magnitude or max(float(magnitude.max()), 1e-6)
    hsv = np.zeros(flow.shape[1:] + (3,), dtype=np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude / scale * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def write_preview(root, out_dir, meta):
    """A strip of frames (top), their labels (middle) and flow (bottom) of one snippet, as a small PNG."""
    split = 'val' if meta['snippets'].get('val') else 'train'
    city, seq = synthetic.snippet_name(split, 0)
    labelled = meta['labelled_frame']
    frames = [labelled - 9, labelled - 5, labelled - 1, labelled]
    rows = [[], [], []]
    for frame in frames:
        image_rel = layout.frame_path(split, city, seq, frame)
        rows[0].append(cv2.cvtColor(cv2.imread(os.path.join(root, image_rel)), cv2.COLOR_BGR2RGB))
        label = cv2.imread(os.path.join(root, layout.sequence_label_path(image_rel)), cv2.IMREAD_UNCHANGED)
        rows[1].append(colorize(label, CITYSCAPES_PALETTE))
        flow, _ = read_flow(os.path.join(root, layout.flow_path(image_rel)))
        rows[2].append(flow_to_rgb(flow.numpy(), max_magnitude=12.0))
    sheet = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, 'synthetic_example.png')
    # Sensor noise makes true-colour PNGs large; 128 colours keep the figure small (< 100 KB) for the docs.
    indexed = Image.fromarray(sheet).quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        indexed.save(tmp, optimize=True)
    return path


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        difficulty = args.difficulty
        if args.focal is not None:
            if args.focal <= 0:
                raise ValueError(f'--focal: expected a positive number of image widths, got {args.focal}')
            difficulty = synthetic.difficulty_with(args.difficulty, focal=args.focal)
        meta = synthetic.generate(args.root, size=args.size, n_train=args.train, n_val=args.val, n_test=args.test,
                                  seed=args.seed, difficulty=difficulty, n_frames=args.frames,
                                  labelled_frame=args.labelled_frame, workers=args.workers, progress=True)
    except ValueError as err:
        sys.exit(f'make_synthetic: {err}')
    meta['seconds'] = round(time.perf_counter() - start, 2)
    print(json.dumps({k: meta[k] for k in ('size', 'snippets', 'n_frames', 'difficulty', 'seed', 'seconds')}))
    print(f'lists: {os.path.join(args.root, "list")}/{{train,val}}.txt')
    if args.preview:
        print(f'preview: {write_preview(args.root, args.preview, meta)}')


if __name__ == '__main__':
    main()
