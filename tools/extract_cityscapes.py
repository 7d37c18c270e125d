"""Extract from the official Cityscapes archives only the frames (and gtFine labels) a run needs.

    python3 tools/extract_cityscapes.py --for pda --archives ~/Downloads            # PDA on val: about 11 GB
    python3 tools/extract_cityscapes.py --for train --archives ~/Downloads --root data/cityscapes

``--for pda``: the frames t-9 .. t of every line of the val list and their labels; ``--for train``: the frames
t-max_gap .. t of every line of the train list and their labels, plus the ``pda`` set.  Running again resumes.
"""
import argparse
import os

from tqdm import tqdm

from lib.dataset import cityscapes_archive
from lib.utils import cli
from lib.utils.config import DEFAULTS, resolve_path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--for', dest='purpose', required=True, choices=cityscapes_archive.PURPOSES,
                        help='pda: the val list\'s PDA clips; train: the train list\'s triplets and the pda set')
    parser.add_argument('--archives', default='.', help='folder holding the two official zip archives (default: .)')
    parser.add_argument('--sequence-zip', help=f'{cityscapes_archive.SEQUENCE_ARCHIVE} (default: in --archives)')
    parser.add_argument('--gtfine-zip', help=f'{cityscapes_archive.GTFINE_ARCHIVE} (default: in --archives)')
    parser.add_argument('--root', default='data/cityscapes',
                        help='dataset root to extract into, the configs\' data.root (default: data/cityscapes)')
    parser.add_argument('--train-list', default=resolve_path(DEFAULTS['data']['train_list']))
    parser.add_argument('--val-list', default=resolve_path(DEFAULTS['data']['val_list']))
    parser.add_argument('--max-gap', type=cli.positive_int, default=DEFAULTS['data']['max_gap'],
                        help='longest key-frame gap of the training triplets (data.max_gap, default %(default)s)')
    return parser.parse_args(argv)


def main(args):
    archives = {'sequence': args.sequence_zip or os.path.join(args.archives, cityscapes_archive.SEQUENCE_ARCHIVE),
                'gtfine': args.gtfine_zip or os.path.join(args.archives, cityscapes_archive.GTFINE_ARCHIVE)}
    plan = cityscapes_archive.plan(args.purpose, {'train': args.train_list, 'val': args.val_list}, args.max_gap)
    summary = cityscapes_archive.extract(
        archives, plan, args.root,
        progress_bar=lambda total: tqdm(total=total, unit='B', unit_scale=True, desc=f'extract --for {args.purpose}'))
    print(f'{args.root}: {summary.extracted} file(s) extracted ({summary.extracted_bytes / 1e9:.2f} GB), '
          f'{summary.skipped} already complete ({summary.skipped_bytes / 1e9:.2f} GB)')
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
