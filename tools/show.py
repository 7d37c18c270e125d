"""Pictures of the propagation of chosen clips: what the network predicts at every frame from key frame t-d to t.

    python tools/show.py exp/spatial_correction_cityscapes/config.yaml   # [--checkpoint PATH]; default as test_pda.py

For each clip of ``eval.show_clips`` it writes a grid ``clip<i>_d<d>.png`` (frames, propagated, distortion map,
corrected, error maps), ``clip<i>_d<d>.gif`` and ``legend.png`` to ``<eval.result_root>/<experiment>/<checkpoint
file stem>/show/`` (docs/evaluation.md).
"""
import argparse

from lib.eval.jobs import add_checkpoint_argument, checkpoint_of
from lib.eval.show import ShowRun, run_show
from lib.utils import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Image grids and GIFs of the propagation of chosen PDA clips.')
    cli.add_config_arguments(parser)
    add_checkpoint_argument(parser)
    parser.add_argument('--clips', type=int, nargs='+', default=None, help='clip indices (default eval.show_clips)')
    parser.add_argument('--distance', type=int, default=9, help='key frame t-d (default 9, as the original)')
    parser.add_argument('--tile-width', type=cli.positive_int, default=256, help='width of one grid cell in pixels')
    parser.add_argument('--frame-ms', type=cli.positive_int, default=400, help='GIF frame duration in milliseconds')
    parser.add_argument('--output', help='folder (default <eval.result_root>/<experiment>/<checkpoint file stem>/show)')
    cli.add_threads_argument(parser)
    return parser.parse_args(argv)


def main(args):
    run = ShowRun(args.config, checkpoint_of(args), args.opts, clips=args.clips, distance=args.distance,
                  tile_width=args.tile_width, frame_ms=args.frame_ms, output=args.output)
    cli.set_threads(args.threads)
    run_show(run)
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
