"""Accuracy against cost of key-frame policies: which ``fixed:k`` or ``distortion:tau`` to run a video with.

    python3 tools/eval_keyframe_policies.py exp/<experiment>/config.yaml --checkpoint saved_model/<experiment>/best.pth

Every policy streams every clip of the split from its first frame (a key frame for all policies).  On the synthetic
set every frame has a label and every frame counts; on Cityscapes / CamVid the clips are the PDA clips (10 frames)
and only the labelled last frame counts.

Cost of a policy = (n_key * cost_key + n_nonkey * cost_nonkey) / n_frames, with the costs of one key step (DeepLab)
and one non-key step (flow, warp, DMNet, CFNet, merge) measured once at the clips' resolution: FLOPs with
``torch.utils.flop_counter`` (convolutions and matrix products; the warp's grid sampling and the resizes are not
counted, they are small) and wall-clock milliseconds.  The distortion policy's decision is a mean over a map that the
merge computes anyway, so it adds nothing.  The frame-wise networks (DeepLab, FlowNet, CFNet) do not depend on the
policy, so their outputs are computed once per clip and replayed for every policy: the predictions are those of
``tools/infer_video.py``, the evaluation just does not pay for them once per policy.

The ``fixed:k`` policies are also run propagation-only (flow and warp, no DMNet, no CFNet: the DFF-style baseline),
and the report says how well DMNet's score ranks the frames by what propagation costs them (Spearman correlation
with the loss to the key network, over all frames and within each distance to the key frame), the one thing a
distortion-triggered policy can exploit.

Every row also gets its temporal consistency (TC, docs/evaluation.md): the mIoU between the labels of each frame and
those of the frame before carried to it by optical flow, over every consecutive pair of every clip; with the
synthetic set's ground-truth flow (and the ground truth's own TC, the ceiling), elsewhere with OpenCV's DIS flow.
On Cityscapes / CamVid it needs no labels: it is measured on the 9 frame pairs of each PDA clip.

``--paths fast compile onnxruntime`` times those inference paths against the exact one and names the fastest whose
labels agree with the exact path's on at least 99.5% of the pixels (key frame every max(--intervals) frames).

Writes ``<out>/keyframe_policies.json`` and ``<out>/keyframe_policies.png`` (mIoU against GFLOPs, ms and TC per
frame).
"""
import argparse

from lib.eval.keyframe_policies import DEFAULT_INTERVALS, PATHS, KeyframeRun, format_table, run_keyframe_policies
from lib.utils import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    cli.add_config_arguments(parser)
    parser.add_argument('--checkpoint', required=True, help='trained SCNet weights (.pth)')
    parser.add_argument('--split', default=None, help='train | val | test (default: the config\'s eval.split)')
    parser.add_argument('--max-clips', type=int, default=None, help='evaluate only the first N clips')
    parser.add_argument('--max-frames', type=int, default=None,
                        help='stream only the first N frames of each clip (synthetic snippets have 30)')
    parser.add_argument('--timing-repeats', type=int, default=5, help='timed runs of each step (median is kept)')
    parser.add_argument('--intervals', type=int, nargs='+', default=list(DEFAULT_INTERVALS),
                        help='k of the fixed:k policies (per-frame is always included)')
    parser.add_argument('--thresholds', type=float, nargs='+', default=None,
                        help='tau of the distortion:tau policies (default: quantiles of the distortion scores seen '
                             'under fixed:MAX, so the sweep covers the model\'s own range)')
    parser.add_argument('--max-interval', type=int, default=10, help='max=N of the distortion policies')
    parser.add_argument('--stat', default='mean',
                        help='distortion score: mean, area (fraction above 0.5) or a percentile pNN')
    parser.add_argument('--paths', nargs='+', choices=sorted(PATHS), default=[],
                        help='inference paths to time against the exact one; the report names the fastest that keeps '
                             'the labels (lib/infer/fast.py, lib/infer/backends.py)')
    parser.add_argument('--output', default=None,
                        help='result folder (default <eval.result_root>/<experiment>/<checkpoint file stem>)')
    parser.add_argument('--device', default=None, help='cpu | cuda (default: the config\'s device)')
    cli.add_threads_argument(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    for name in ('max_clips', 'max_frames', 'timing_repeats', 'max_interval'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} {value}: expected a positive integer')
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
