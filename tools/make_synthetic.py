"""Generate the synthetic street-video set (Cityscapes layout, every frame labelled, ground-truth flow).

    python3 tools/make_synthetic.py --root data/synthetic                 # default: 128x256, 24 train + 8 val
    python3 tools/make_synthetic.py --root data/synthetic --preview docs/images

The result is a function of the options only (same options, same files).  See docs/data.md.
"""
import argparse
import json
import os
import time

import cv2
import numpy as np
from PIL import Image

from lib import synthetic
from lib.dataset import synthetic_layout as layout
from lib.dataset.io import read_flow
from lib.utils import cli
from lib.utils.atomic import atomic_path
from lib.utils.errors import UserError
from lib.utils.palette import CITYSCAPES_PALETTE, colorize
from lib.utils.visualize import flows_to_rgb


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
    parser.add_argument('--focal', type=float, help="focal length in image widths (default: the preset's, 0.8; 1.6 "
                                                     "for cityscapes-like and tools/demo.py)")
    parser.add_argument('--frames', type=int, default=30, help='frames per snippet')
    parser.add_argument('--labelled-frame', type=int, default=19)
    parser.add_argument('--workers', type=cli.positive_int, default=None, help='processes (default: CPU count)')
    parser.add_argument('--preview', metavar='DIR', help='write frames / labels / flow of the first val snippet to DIR')
    return parser.parse_args(argv)


def write_preview(root, out_dir, meta):
    """A strip of frames (top), their labels (middle) and flow (bottom) of one snippet, as a small PNG."""
    split = 'val' if meta['snippets'].get('val') else 'train'
    city, seq = synthetic.snippet_name(split, 0)
    labelled = meta['labelled_frame']
    rows, flows = [[], []], []
    for frame in (labelled - 9, labelled - 5, labelled - 1, labelled):
        image_rel = layout.frame_path(split, city, seq, frame)
        rows[0].append(cv2.cvtColor(cv2.imread(os.path.join(root, image_rel)), cv2.COLOR_BGR2RGB))
        label = cv2.imread(os.path.join(root, layout.sequence_label_path(image_rel)), cv2.IMREAD_UNCHANGED)
        rows[1].append(colorize(label, CITYSCAPES_PALETTE))
        flow, _ = read_flow(os.path.join(root, layout.flow_path(image_rel)))
        flows.append(flow)
    rows.append(flows_to_rgb(flows))  # one colour scale for the strip
    sheet = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
    path = os.path.join(out_dir, 'synthetic_example.png')
    # Sensor noise makes true-colour PNGs large; 128 colours keep the figure small (< 100 KB) for the docs.
    indexed = Image.fromarray(sheet).quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        indexed.save(tmp, optimize=True)
    return path


def main(args):
    start = time.perf_counter()
    difficulty = args.difficulty
    if args.focal is not None:
        if args.focal <= 0:
            raise UserError(f'--focal: expected a positive number of image widths, got {args.focal}')
        difficulty = synthetic.difficulty_with(args.difficulty, focal=args.focal)
    meta = synthetic.generate(args.root, size=args.size, n_train=args.train, n_val=args.val, n_test=args.test,
                              seed=args.seed, difficulty=difficulty, n_frames=args.frames,
                              labelled_frame=args.labelled_frame, workers=args.workers, progress=True)
    meta['seconds'] = round(time.perf_counter() - start, 2)
    print(json.dumps({k: meta[k] for k in ('size', 'snippets', 'n_frames', 'difficulty', 'seed', 'seconds')}))
    print(f'lists: {os.path.join(args.root, "list")}/{{train,val}}.txt')
    if args.preview:
        print(f'preview: {write_preview(args.root, args.preview, meta)}')
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
