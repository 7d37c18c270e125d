"""Accuracy against cost of key-frame policies: which ``fixed:k`` or ``distortion:tau`` to run a video with.

    python3 tools/eval_keyframe_policies.py exp/<experiment>/config.yaml --checkpoint saved_model/<experiment>/best.pth

Writes ``<out>/keyframe_policies.json`` and ``.png`` (mIoU against GFLOPs, ms and TC); docs/inference.md says how.
"""
import argparse

from lib.eval.keyframe_policies import DEFAULT_INTERVALS, PATHS, KeyframeRun, format_table, run_keyframe_policies
from lib.utils import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    cli.add_config_arguments(parser)
    parser.add_argument('--checkpoint', required=True, help='trained SCNet weights (.pth)')
    parser.add_argument('--split', default=None, help='train | val | test (default: the config\'s eval.split)')
    parser.add_argument('--max-clips', type=cli.positive_int, default=None, help='evaluate only the first N clips')
    parser.add_argument('--max-frames', type=cli.positive_int, default=None,
                        help='stream only the first N frames of each clip (synthetic snippets have 30)')
    parser.add_argument('--timing-repeats', type=cli.positive_int, default=5, help='timed runs of each step (median)')
    parser.add_argument('--intervals', type=int, nargs='+', default=list(DEFAULT_INTERVALS),
                        help='k of the fixed:k policies (per-frame is always included)')
    parser.add_argument('--thresholds', type=float, nargs='+', default=None,
                        help='tau of the distortion:tau policies (default: quantiles of the scores under fixed:MAX)')
    parser.add_argument('--max-interval', type=cli.positive_int, default=10, help='max=N of the distortion policies')
    parser.add_argument('--stat', default='mean', help='distortion score: mean, area (> 0.5) or a percentile pNN')
    parser.add_argument('--paths', nargs='+', choices=sorted(PATHS), default=[], help='paths to time against exact')
    parser.add_argument('--output', default=None,
                        help='result folder (default <eval.result_root>/<experiment>/<checkpoint file stem>)')
    parser.add_argument('--device', default=None, help='cpu | cuda (default: the config\'s device)')
    cli.add_threads_argument(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    if args.max_frames is not None and args.max_frames < 2:
        parser.error(f'--max-frames {args.max_frames}: a clip needs at least 2 frames to have a non-key frame')
    return args


def main(args):
    run = KeyframeRun(args.config, args.checkpoint, args.opts, split=args.split, max_clips=args.max_clips,
                      max_frames=args.max_frames, timing_repeats=args.timing_repeats, intervals=args.intervals,
                      thresholds=args.thresholds, max_interval=args.max_interval, stat=args.stat, out=args.output,
                      paths=args.paths, device=args.device, progress=not args.no_progress)
    cli.set_threads(args.threads)
    report, out = run_keyframe_policies(run)
    print(format_table(report))
    print(f'wrote {out}/keyframe_policies.json and keyframe_policies.png')
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
