"""Regenerate list files (official DAVSS format) from a dataset folder, written atomically.

    python3 tools/make_lists.py --name cityscapes --root data/cityscapes --split val \
        --output data/list/cityscapes/val.txt
    python3 tools/make_lists.py ... --check      # then check every line (tools/check_dataset.py)

Cityscapes (and synthetic): a line per ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png``.  CamVid: a line per
``label/<seq>_[f]<number>.png``, frame ``video_image/<seq>/<seq>_<number - offset>.png`` (offset 6660 for 0001TP, -1
otherwise, as in the official lists).
"""
import argparse
import sys

from lib.dataset.checks import find_problems, list_config
from lib.dataset.frame_list import camvid_lines, cityscapes_lines
from lib.utils import cli
from lib.utils.atomic import write_text
from lib.utils.errors import UserError


def parse_offsets(items):
    offsets = {}
    for item in items:
        seq, sep, value = item.partition('=')
        if not sep or not value.lstrip('-').isdigit():
            raise UserError(f'--offset: expected SEQ=INTEGER, got "{item}"')
        offsets[seq] = int(value)
    return offsets


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--name', required=True, choices=('cityscapes', 'camvid', 'synthetic'))
    parser.add_argument('--root', required=True, help='dataset root')
    parser.add_argument('--split', default='train', help='Cityscapes/synthetic split folder (train, val, test)')
    parser.add_argument('--sequences', nargs='*', default=None, help='CamVid sequences to include (default: all)')
    parser.add_argument('--offset', nargs='*', default=[], metavar='SEQ=N', help='CamVid frame-number offsets')
    parser.add_argument('--output', required=True, help='list file to write')
    parser.add_argument('--check', action='store_true', help='check every frame and label of the new list')
    return parser.parse_args(argv)


def main(args):
    if args.name == 'camvid':
        lines = camvid_lines(args.root, args.sequences, parse_offsets(args.offset))
    else:
        lines = cityscapes_lines(args.root, args.split)
    write_text(args.output, ''.join(lines))
    print(f'{args.output}: {len(lines)} lines')
    if not args.check:
        return 0
    problems = find_problems(list_config(args.name, args.root, args.output), 'val')
    for problem in problems:
        print(problem)
    print(f'{len(problems)} problem(s)', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    cli.run(main, parse_args())
