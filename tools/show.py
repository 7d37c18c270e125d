"""Pictures of the propagation of chosen clips: what the network predicts at every frame from key frame t-d to t.

    python tools/show.py exp/spatial_correction_cityscapes/config.yaml --checkpoint saved_model/.../best.pth

For each clip of ``eval.show_clips`` (indices into the ``eval.split`` list) it writes to
``<eval.result_root>/<experiment>/<checkpoint file stem>/show/``:

- ``clip<i>_d<d>.png``, a grid with one column per frame t-d .. t and the rows
  1. the video frames,
  2. the propagated prediction without correction (the key frame's own prediction in the first column),
  3. DMNet's distortion map as a heat map (black = 0, yellow = 1),
  4. the corrected prediction (what the original show script drew),
  5. at frame t: the ground truth, the key network on frame t, and the error maps (red = wrong) of the
     propagated-only and of the corrected prediction against the ground truth, with their error rates;
- ``clip<i>_d<d>.gif``, the same frames animated: frame | propagated | distortion | corrected;
- ``legend.png``, the class colours of the dataset.
"""
import argparse
import os
import sys

import numpy as np

from lib.dataset import DatasetError, build_dataset, check_class_count
from lib.engine.pda import PDAInputError, check_clip_files, check_distances, prepare_output_dir, trace_clip
from lib.engine.result_dir import ResultFolderError, default_result_dir, lock_results
from lib.model import load_scnet
from lib.utils import visualize as vis
from lib.utils.checkpoint import CheckpointError
from lib.utils.config import ConfigError, load_config
from lib.utils.distributed import pick_device
from lib.utils.errors import one_line
from lib.utils.palette import class_names, palette_for
from lib.utils.precision import tf32

BAD_INPUT = (ConfigError, CheckpointError, DatasetError, PDAInputError, ResultFolderError)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Image grids and GIFs of the propagation of chosen PDA clips.')
    parser.add_argument('config', help='YAML config, e.g. exp/spatial_correction_cityscapes/config.yaml')
    parser.add_argument('--checkpoint', required=True, help='a whole SCNet checkpoint (best.pth / final.pth)')
    parser.add_argument('--opts', nargs='+', action='extend', default=[], metavar='KEY=VALUE', help='config overrides')
    parser.add_argument('--clips', type=int, nargs='+', default=None, help='clip indices (default eval.show_clips)')
    parser.add_argument('--distance', type=int, default=9, help='key frame t-d (default 9, as the original)')
    parser.add_argument('--tile-width', type=int, default=256, help='width of one grid cell in pixels')
    parser.add_argument('--frame-ms', type=int, default=400, help='GIF frame duration in milliseconds')
    parser.add_argument('--output', default=None,
                        help='folder (default <eval.result_root>/<experiment>/<checkpoint file stem>/show)')
    return parser.parse_args(argv)


class TileMaker:
    """Turns tensors into captioned tiles of one width (labels resized nearest, images bilinear)."""

    def __init__(self, palette, width):
        self.palette = palette
        self.width = width

    def image(self, frame, text):
        return vis.caption(vis.resize(vis.frame_to_rgb(frame), self.width, nearest=False), text)

    def label(self, label, text):
        return vis.caption(vis.resize(vis.label_to_rgb(label, self.palette), self.width, nearest=True), text)

    def heat(self, values, text):
        return vis.caption(vis.resize(vis.heat_map(values), self.width, nearest=False), text)

    def errors(self, pred, label, text):
        rate = vis.error_rate(pred.cpu().numpy(), label.cpu().numpy())
        tile = vis.error_map(pred, label)
        return vis.caption(vis.resize(tile, self.width, nearest=True), f'{text} {100 * rate:.1f}%')


def step_name(frame_index, last):
    return 't' if frame_index == last else f't-{last - frame_index}'


def clip_pictures(trace, frames, label, tiles):
    """The grid (uint8 image) and GIF frames (list of uint8 images) of one traced clip (batch index 0)."""
    last = frames.shape[0] - 1
    names = [step_name(j, last) for j in trace['frames']]
    row_frames = [tiles.image(frames[j], f'frame {n}') for j, n in zip(trace['frames'], names)]
    row_propagated = [tiles.label(p[0], f'{"key" if k == 0 else "propagated"} {n}')
                      for k, (p, n) in enumerate(zip(trace['propagated'], names))]
    row_distortion = [None if dm is None else tiles.heat(dm[0], f'distortion {n}')
                      for dm, n in zip(trace['distortion'], names)]
    row_merged = [tiles.label(p[0], f'{"key" if k == 0 else "corrected"} {n}')
                  for k, (p, n) in enumerate(zip(trace['merged'], names))]
    row_truth = [tiles.label(label, 'ground truth t'), tiles.label(trace['per_frame'][0], 'key network on t'),
                 tiles.errors(trace['propagated'][-1][0], label, 'err propagated'),
                 tiles.errors(trace['merged'][-1][0], label, 'err corrected')]
    picture = vis.grid([row_frames, row_propagated, row_distortion, row_merged, row_truth])
    blank = np.zeros_like(row_frames[0])
    animation = [np.concatenate([f, p, blank if d is None else d, m], axis=1)
                 for f, p, d, m in zip(row_frames, row_propagated, row_distortion, row_merged)]
    return picture, animation


def setup(args):
    cfg = load_config(args.config, args.opts)
    check_class_count(cfg)
    out_dir = args.output or os.path.join(default_result_dir(cfg, args.checkpoint), 'show')
    prepare_output_dir(out_dir)
    dataset = build_dataset(cfg['data'], cfg['eval']['split'], 'pda')
    clips = args.clips if args.clips is not None else list(cfg['eval']['show_clips'])
    bad = [c for c in clips if not 0 <= c < len(dataset)]
    if bad:
        raise PDAInputError(f'clips {bad}: the {cfg["eval"]["split"]} split has {len(dataset)} clips (0..'
                            f'{len(dataset) - 1})')
    check_distances([args.distance])
    check_clip_files(dataset, clips)
    device = pick_device(cfg['device'])
    model = load_scnet(cfg['model'], args.checkpoint, device)
    return cfg, out_dir, dataset, clips, device, model


def run(argv=None):
    args = parse_args(argv)
    try:
        cfg, out_dir, dataset, clips, device, model = setup(args)
        lock = lock_results(out_dir)
    except BAD_INPUT as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    try:
        write_pictures(args, cfg, out_dir, dataset, clips, device, model)
    except (DatasetError, OSError) as err:
        print(f'error: {one_line(err)}', file=sys.stderr)
        return 1
    finally:
        lock.release()
    return 0


def write_pictures(args, cfg, out_dir, dataset, clips, device, model):
    name = cfg['data']['name']
    palette = palette_for(name)
    tiles = TileMaker(palette, args.tile_width)
    vis.save_png(vis.legend(palette, class_names(name)), os.path.join(out_dir, 'legend.png'))
    for index in clips:
        frames, label = dataset[index]
        with tf32(cfg['eval']['tf32']):  # plain fp32 by default, as the evaluation
            trace = trace_clip(model, frames[None].to(device), args.distance)
        picture, animation = clip_pictures(trace, frames, label, tiles)
        stem = os.path.join(out_dir, f'clip{index}_d{args.distance}')
        vis.save_png(picture, f'{stem}.png')
        vis.save_gif(animation, f'{stem}.gif', duration_ms=args.frame_ms)
        print(f'wrote {stem}.png and {stem}.gif')
    print(f'wrote {os.path.join(out_dir, "legend.png")}')


if __name__ == '__main__':
    sys.exit(run())
