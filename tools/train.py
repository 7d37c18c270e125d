"""Train one stage of DAVSS from a config: ``python tools/train.py exp/<experiment>/config.yaml [--opts k=v ...]``,
as one process (CPU or one GPU) or under torchrun (one process per GPU, several nodes); see docs/training.md.
"""
import argparse

from lib.train import engine
from lib.utils import cli
from lib.utils.config import load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a DAVSS stage (segmentation | flow | dmnet | correction).')
    cli.add_config_arguments(parser)
    parser.add_argument('--resume', action='store_true',
                        help='continue from <train.save_root>/<experiment>/now.pth exactly where it stopped')
    parser.add_argument('--restart-epoch', action='store_true',
                        help='with --resume: train the open epoch again from its first batch (needed when the batch '
                             'size, accumulation, process count or dataset changed)')
    parser.add_argument('--overwrite', action='store_true', help='replace the outputs of an earlier run in the '
                        'experiment folder (config.yaml, log.txt, now/best/final.pth, TensorBoard events)')
    parser.add_argument('--deterministic', action='store_true', help='deterministic kernels (as deterministic=true)')
    cli.add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.restart_epoch and not args.resume:
        parser.error('--restart-epoch: only with --resume')
    return args


def main(args):
    cli.set_threads(args.threads)
    engine.main(load_config(args.config, args.opts), resume=args.resume, deterministic=args.deterministic,
                overwrite=args.overwrite, restart_epoch=args.restart_epoch)
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
