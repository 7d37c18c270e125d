"""Check a whole dataset split and report every problem at once (exit status 1 if there is any).

    python3 tools/check_dataset.py exp/<experiment>/config.yaml [--split train val]
    python3 tools/check_dataset.py --name synthetic --root data/synthetic --list data/synthetic/list/val.txt

Checks list syntax, every frame a training triplet or PDA clip needs (exists, decodes, same size as the
labelled frame), every label (single-channel, frame-sized, values in [0, n_classes) or 255, not resized with
interpolation) and, for the synthetic set, its every-frame labels and flow files.
"""
import argparse
import sys

from lib.dataset.checks import find_problems, list_config
from lib.utils import cli
from lib.utils.config import load_config
from lib.utils.errors import UserError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_arguments(parser, required=False)
    parser.add_argument('--name', choices=('cityscapes', 'camvid', 'synthetic'), help='instead of a config')
    parser.add_argument('--root', help='dataset root (with --name)')
    parser.add_argument('--list', help='list file to check (with --name)')
    parser.add_argument('--split', nargs='*', help='splits of the config to check (default: those whose list is set)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    cli.add_threads_argument(parser)
    return parser.parse_args(argv)


def data_configs(args):
    """``[(split, data_cfg), ...]`` to check."""
    if args.name:
        if not (args.root and args.list):
            raise UserError('--name: needs --root and --list')
        return [('val', list_config(args.name, args.root, args.list))]
    if not args.config:
        raise UserError('expected a CONFIG, or --name with --root and --list')
    cfg = load_config(args.config, args.opts)['data']
    splits = args.split or [s for s in ('train', 'val', 'test') if cfg.get(f'{s}_list')]
    return [(split, cfg) for split in splits]


def main(args):
    cli.set_threads(args.threads)
    total = 0
    for split, cfg in data_configs(args):
        problems = find_problems(cfg, split, progress=not args.quiet)
        for problem in problems:
            print(problem)
        print(f'{split}: {len(problems)} problem(s)', file=sys.stderr)
        total += len(problems)
    return 1 if total else 0


if __name__ == '__main__':
    cli.run(main, parse_args())
