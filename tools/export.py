"""Export a trained SCNet as two ONNX graphs (key step, non-key step) and check them against PyTorch on the spot.

    python3 tools/export.py --config exp/spatial_correction_cityscapes/config.yaml \\
        --checkpoint saved_model/spatial_correction_cityscapes/best.pth --out export/cityscapes --size 512 1024

OUT receives ``key_step.onnx``, ``non_key_step.onnx`` (opset 18, dynamic height and width), ``parity.json``
(onnxruntime against PyTorch at ``--size`` and at ``--parity-size``: ``max_rel_logit_error`` and
``argmax_agreement`` per graph) and, with ``--torch-export``, the ``torch.export`` programs ``<graph>.pt2``.  It is
written as ``OUT.partial/`` and renamed when complete, under a lock (``OUT.lock``) against a concurrent export.  Exit status 1 when the parity check fails (the files are
kept, to inspect); 2 for bad input.  Graph inputs and outputs: lib/engine/export.py and docs/inference.md.
"""
import argparse
import os
import shutil
import sys

import torch

from lib.engine.export import GRAPHS, MIN_SIZE, check_parity, export_steps
from lib.engine.fast import TAILS
from lib.model import load_scnet
from lib.utils.atomic import write_json
from lib.utils.checkpoint import CheckpointError
from lib.utils.config import ConfigError, load_config
from lib.utils.errors import bad_input
from lib.utils.output_lock import OutputLock, OutputLockError

PROG = 'export'
OWN_FILES = {f'{g}.{ext}' for g in GRAPHS for ext in ('onnx', 'pt2')} | {'parity.json'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--config', required=True, help='experiment YAML (its model: section builds the network)')
    parser.add_argument('--checkpoint', required=True, help='trained SCNet weights (.pth)')
    parser.add_argument('--out', required=True, help='output folder (must not exist unless --overwrite)')
    parser.add_argument('--size', type=int, nargs=2, default=(512, 1024), metavar=('H', 'W'),
                        help='frame size the graphs are traced and checked at (default 512 1024); the graphs accept '
                             'any multiple of 4')
    parser.add_argument('--parity-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='a second size to check the dynamic graphs at (default: 3/4 of --size, rounded to 4)')
    parser.add_argument('--tail', choices=TAILS, default='full',
                        help='where the non-key merge and argmax happen: full (exact, default) or the fast path\'s '
                             'quarter_merge / quarter_argmax (lib/engine/fast.py)')
    parser.add_argument('--torch-export', action='store_true', help='also save the torch.export programs (.pt2)')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads of torch and onnxruntime')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT if it holds a previous export')
    parser.add_argument('--opts', nargs='*', default=[], help='config overrides key.sub=value')
    args = parser.parse_args(argv)
    for option, size in (('--size', args.size), ('--parity-size', args.parity_size)):
        if size is not None and (size[0] % 4 or size[1] % 4 or min(size) < MIN_SIZE):
            parser.error(f'{option} {size[0]} {size[1]}: expected multiples of 4, each at least {MIN_SIZE}')
    if args.parity_size is None:
        args.parity_size = [max(MIN_SIZE, (3 * s // 4) // 4 * 4) for s in args.size]
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads {args.threads}: expected a positive number of threads')
    return args


def check_output(path, overwrite):
    """OUT may be new, or (with --overwrite) a folder that holds nothing but a previous export's files."""
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise ValueError(f'{path}: exists and is not a folder; refusing to replace a file')
    if not overwrite:
        raise ValueError(f'{path}: output already exists (pass --overwrite to replace a previous export)')
    foreign = sorted(set(os.listdir(path)) - OWN_FILES)
    if foreign:
        raise ValueError(f'{path}: holds files an export does not write ({", ".join(foreign[:3])}); refusing to '
                         'replace the folder')


def commit(partial, path):
    """Rename the complete ``partial`` folder to ``path``, moving an old export aside first."""
    if os.path.isdir(path):
        old = path + '.old'
        if os.path.isdir(old):
            shutil.rmtree(old)
        os.replace(path, old)
        os.replace(partial, path)
        shutil.rmtree(old)
    else:
        os.replace(partial, path)


def main(args):
    out = os.path.normpath(args.out)
    partial = out + '.partial'
    lock = None
    try:
        check_output(out, args.overwrite)
        cfg = load_config(args.config, args.opts)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        net = load_scnet(cfg['model'], args.checkpoint, torch.device('cpu'))
        # The folder is replaced by a rename, so its lock lies beside it (as infer_video's).
        lock = OutputLock(out, lock_path=out + '.lock').acquire()
        check_output(out, args.overwrite)  # again, under the lock
        check_output(partial, overwrite=True)  # a leftover of an interrupted export is ours to replace, nothing else
        if os.path.isdir(partial):
            shutil.rmtree(partial)
        os.makedirs(partial)
        paths = export_steps(net, partial, tuple(args.size), tail=args.tail, torch_export=args.torch_export)
        report = check_parity(net, paths, [tuple(args.size), tuple(args.parity_size)], tail=args.tail,
                              threads=args.threads)
        report.update(config=args.config, checkpoint=args.checkpoint, traced_size=list(args.size))
        write_json(os.path.join(partial, 'parity.json'), report, indent=2)
        commit(partial, out)
    except (ConfigError, CheckpointError, ValueError, OSError, OutputLockError) as err:
        return bad_input(err)
    finally:
        if lock is not None:
            lock.release()
    for graph in GRAPHS:
        print(f'{PROG}: {graph}.onnx: max relative logit error {report[graph]["max_rel_logit_error"]:.2e}, argmax '
              f'agreement {100 * report[graph]["argmax_agreement"]:.4f}% (onnxruntime vs PyTorch)')
    if not report['ok']:
        print(f'error: parity check FAILED (tolerance {report["tolerance"]}); see {out}/parity.json',
              file=sys.stderr)
        return 1
    print(f'{PROG}: wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main(parse_args()))
