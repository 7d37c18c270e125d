"""Export a trained SCNet as two ONNX graphs (key step, non-key step) and check them against PyTorch on the spot.

    python3 tools/export.py exp/spatial_correction_cityscapes/config.yaml \\
        --checkpoint saved_model/spatial_correction_cityscapes/best.pth --output export/cityscapes --size 512 1024

OUTPUT receives ``key_step.onnx``, ``non_key_step.onnx``, ``parity.json`` and, with ``--torch-export``,
``<graph>.pt2``; exit status 1 on a failed parity check (the files are kept, to inspect).  Details: docs/inference.md.
"""
import argparse
import sys

import torch

from lib.infer.export import GRAPHS, MIN_SIZE, check_parity, export_steps
from lib.infer.labels import TAILS
from lib.model import load_scnet
from lib.utils import cli
from lib.utils.atomic import write_json
from lib.utils.config import load_config
from lib.utils.outputs import StagedFolder

PROG = 'export'
KIND = 'export'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    cli.add_config_arguments(parser)
    parser.add_argument('--checkpoint', required=True, help='trained SCNet weights (.pth)')
    parser.add_argument('--output', required=True, help='output folder (must not exist unless --overwrite)')
    parser.add_argument('--size', type=int, nargs=2, default=(512, 1024), metavar=('H', 'W'), help='traced size')
    parser.add_argument('--parity-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='a second size to check the dynamic graphs at (default: 3/4 of --size, rounded to 4)')
    parser.add_argument('--tail', choices=TAILS, default='full', help='non-key merge and argmax (sparse: as full)')
    parser.add_argument('--torch-export', action='store_true', help='also save the torch.export programs (.pt2)')
    parser.add_argument('--overwrite', action='store_true', help='replace OUTPUT if it holds a previous export')
    cli.add_threads_argument(parser)
    args = parser.parse_args(argv)
    for option, size in (('--size', args.size), ('--parity-size', args.parity_size)):
        if size is not None and (size[0] % 4 or size[1] % 4 or min(size) < MIN_SIZE):
            parser.error(f'{option} {size[0]} {size[1]}: expected multiples of 4, each at least {MIN_SIZE}')
    if args.parity_size is None:
        args.parity_size = [max(MIN_SIZE, (3 * s // 4) // 4 * 4) for s in args.size]
    return args


def main(args):
    cfg = load_config(args.config, args.opts)
    threads = cli.set_threads(args.threads)
    folder = StagedFolder(args.output, KIND, '--output', overwrite=args.overwrite)
    net = load_scnet(cfg['model'], args.checkpoint, torch.device('cpu'))
    with folder:
        paths = export_steps(net, folder.partial, tuple(args.size), tail=args.tail, torch_export=args.torch_export)
        report = check_parity(net, paths, [tuple(args.size), tuple(args.parity_size)], tail=args.tail,
                              threads=threads)
        report.update(config=args.config, checkpoint=args.checkpoint, traced_size=list(args.size))
        write_json(folder.file('parity.json'), report, indent=2)
        folder.commit()
    for graph in GRAPHS:
        print(f'{PROG}: {graph}.onnx: max relative logit error {report[graph]["max_rel_logit_error"]:.2e}, argmax '
              f'agreement {100 * report[graph]["argmax_agreement"]:.4f}% (onnxruntime vs PyTorch)')
    if not report['ok']:
        print(f'error: parity check FAILED (tolerance {report["tolerance"]}); see {args.output}/parity.json',
              file=sys.stderr)
        return 1
    print(f'{PROG}: wrote {args.output}')
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
