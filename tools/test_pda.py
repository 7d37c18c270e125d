"""PDA evaluation of a trained SCNet: mIoU per key-frame distance, with the per-frame and propagation-only rows.

    python tools/test_pda.py exp/spatial_correction_cityscapes/config.yaml    # what that config trained: best.pth
    python tools/test_pda.py CONFIG --checkpoint saved_model/pretrained/spatial_correction_cityscapes.pth
    torchrun --standalone --nproc_per_node=4 tools/test_pda.py CONFIG   # clips sharded

Prints a table and writes ``pda.json``, ``pda.md`` and ``pda.png`` to ``<eval.result_root>/<experiment>/<checkpoint
file stem>/``, every input checked first (``lib/eval/jobs.py``; docs/evaluation.md).
"""
import argparse

from lib.eval.jobs import PDARun, add_checkpoint_argument, checkpoint_of, run_pda
from lib.utils import cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='PDA evaluation: mIoU per distance between key and labelled frame.')
    cli.add_config_arguments(parser)
    add_checkpoint_argument(parser)
    parser.add_argument('--max-clips', type=cli.positive_int, default=None, help='evaluate only the first N clips')
    parser.add_argument('--no-per-frame', action='store_true', help='skip the per-frame key network row')
    parser.add_argument('--no-propagation-only', action='store_true', help='skip the propagation-only row')
    parser.add_argument('--batched', action='store_true',
                        help='one network call over all distances: faster on GPU, may flip a few pixels')
    parser.add_argument('--output', help='result folder (default <eval.result_root>/<experiment>/<checkpoint stem>)')
    parser.add_argument('--save-predictions', type=int, default=None, metavar='D',
                        help='also write the labels of distance D as Cityscapes label-id PNGs (official format)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    cli.add_threads_argument(parser)
    return parser.parse_args(argv)


def main(args):
    run = PDARun(args.config, checkpoint_of(args), args.opts, max_clips=args.max_clips,
                 per_frame=not args.no_per_frame, propagation_only=not args.no_propagation_only, batched=args.batched,
                 output=args.output, save_predictions=args.save_predictions, progress=not args.no_progress)
    cli.set_threads(args.threads)
    run_pda(run)
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
