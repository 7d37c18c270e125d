"""Segment a real video with a trained SCNet: key frames through DeepLab, the rest by distortion-aware propagation.

    python3 tools/infer_video.py exp/spatial_correction_cityscapes/config.yaml input.mp4 out/drive \\
        --checkpoint saved_model/spatial_correction_cityscapes/best.pth --policy fixed:5

A thin command line over :meth:`lib.VideoSegmenter.run` (outputs and Ctrl-C: there, and docs/inference.md).
"""
import argparse
import sys
import warnings

from lib.infer.backends import BACKENDS
from lib.infer.fast import add_fast_arguments, config_from_args
from lib.infer.video_segmenter import VideoSegmenter
from lib.utils import cli

PROG = 'infer_video'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    cli.add_config_arguments(parser)
    parser.add_argument('input', help='video file, folder of frames, camera index (0) or stream URL')
    parser.add_argument('output', help='output folder (must not exist unless --overwrite)')
    parser.add_argument('--checkpoint', required=True, help='trained SCNet weights (.pth)')
    parser.add_argument('--policy', default='fixed:5',
                        help='key frames: fixed:K (default fixed:5) | distortion:TAU[,max=N][,stat=...] | per-frame')
    parser.add_argument('--size', type=cli.positive_int, nargs=2, metavar=('H', 'W'),
                        help='run the model at this size (default: the frame size); outputs keep the frame size')
    parser.add_argument('--overwrite', action='store_true', help='replace OUTPUT if infer_video wrote it')
    parser.add_argument('--save-labels', action='store_true', help='write labels/NNNNNN.png (trainIds, 255 = ignore)')
    parser.add_argument('--save-overlay', action='store_true', help='write overlay/NNNNNN.png (colour overlays)')
    parser.add_argument('--video', action='store_true', help='write the overlay video (default without --save-*)')
    parser.add_argument('--start', type=int, default=0, metavar='N',
                        help='skip the first N frames of the input (output files keep the input\'s frame numbers)')
    parser.add_argument('--max-frames', type=cli.positive_int, default=None, metavar='N',
                        help='segment at most N frames (default: to the end, or Ctrl-C)')
    parser.add_argument('--fps', type=float, default=None, help='output frame rate (default: the input\'s, else 25)')
    parser.add_argument('--device', default=None, help='cpu | cuda (default: the config\'s device)')
    parser.add_argument('--backend', choices=BACKENDS, default='torch', help='onnxruntime: CPU, fp32 (default torch)')
    cli.add_threads_argument(parser)
    add_fast_arguments(parser)
    args = parser.parse_args(argv)
    if args.start < 0:
        parser.error(f'--start {args.start}: expected a frame number, 0 or more')
    if args.fps is not None and not args.fps > 0:
        parser.error(f'--fps {args.fps}: expected a positive frame rate')
    if args.size is not None and min(args.size) < 4:
        parser.error(f'--size {args.size[0]} {args.size[1]}: expected a height and width of at least 4 pixels')
    if not (args.save_labels or args.save_overlay):
        args.video = True
    return args


def main(args):
    threads = cli.set_threads(args.threads)
    segmenter = VideoSegmenter.from_config(args.config, args.checkpoint, policy=args.policy,
                                           fast=config_from_args(args) or False, backend=args.backend,
                                           device=args.device, opts=args.opts, size=args.size, threads=threads)
    with warnings.catch_warnings(record=True) as caught:  # one line each, as the errors (a damaged video's counts)
        warnings.simplefilter('default')
        summary = segmenter.run(args.input, args.output, overwrite=args.overwrite, save_labels=args.save_labels,
                                save_overlay=args.save_overlay, video=args.video, fps=args.fps, progress=True,
                                start=args.start, max_frames=args.max_frames)
    for warning in caught:
        print(f'warning: {warning.message}', file=sys.stderr)
    stopped = 'stopped by Ctrl-C, what was segmented is kept: ' if summary['interrupted'] else ''
    print(f'{PROG}: {stopped}{summary["frames"]} frames ({len(summary["key_frames"])} key frames, '
          f'{summary["policy"]}) at {summary["frames_per_second"]:.2f} frames/s -> {args.output}')
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
