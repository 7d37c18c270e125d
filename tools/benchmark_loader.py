"""Throughput of the PDA clip loader (10 decoded frames per clip), written as JSON.

    python3 tools/benchmark_loader.py                                  # data/synthetic, val split
    python3 tools/benchmark_loader.py --root data/synthetic --workers 0 2 --clips 40
    python3 tools/benchmark_loader.py --config exp/<experiment>/config.yaml --split val

Reports frames/s (decoded frames, i.e. 10 per clip) per worker count in result/benchmark_loader.json.
"""
import argparse
import copy
import json
import os
import platform
import time

import torch

from lib.dataset import build_dataset, build_eval_loader
from lib.utils import cli
from lib.utils.atomic import write_json
from lib.utils.config import DEFAULTS, load_config, resolve_path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', help='experiment config (default: the synthetic set under --root)')
    parser.add_argument('--root', default='data/synthetic', help='synthetic set root, without --config')
    parser.add_argument('--split', default='val')
    parser.add_argument('--workers', type=int, nargs='*', default=[0, 2], help='worker counts to measure')
    parser.add_argument('--clips', type=int, default=40, help='clips per measurement (the list repeats if short)')
    parser.add_argument('--out', default=os.path.join(os.environ.get('RESULT_ROOT', 'result'),
                                                      'benchmark_loader.json'))
    return parser.parse_args(argv)


def data_config(args):
    if args.config:
        return load_config(args.config)['data']
    cfg = copy.deepcopy(DEFAULTS['data'])
    root = os.path.abspath(args.root)
    cfg.update(name='synthetic', root=root, **{f'{args.split}_list': os.path.join(root, 'list', f'{args.split}.txt')})
    return cfg


def measure(dataset, workers, clips):
    """Seconds to load ``clips`` clips (after one warm-up batch that starts the workers)."""
    indices = [i % len(dataset) for i in range(clips + 1)]
    subset = torch.utils.data.Subset(dataset, indices)
    loader = build_eval_loader(subset, batch_size=1, num_workers=workers, pin_memory=False)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    frames = 0
    for batch_frames, _ in iterator:
        frames += batch_frames.shape[0] * batch_frames.shape[1]
    return time.perf_counter() - start, frames


def main(args):
    cfg = data_config(args)
    dataset = build_dataset(cfg, args.split, 'pda')
    height, width = dataset[0][0].shape[-2:]
    results = []
    for workers in args.workers:
        seconds, frames = measure(dataset, workers, args.clips)
        results.append({'workers': workers, 'clips': args.clips, 'frames': frames, 'seconds': round(seconds, 3),
                        'frames_per_s': round(frames / seconds, 1), 'clips_per_s': round(args.clips / seconds, 2)})
        print(json.dumps(results[-1]))
    report = {'dataset': cfg['name'], 'root': cfg['root'], 'split': args.split, 'frame_size': [height, width],
              'clip_length': dataset[0][0].shape[0], 'cpu_count': os.cpu_count(), 'torch': torch.__version__,
              'platform': platform.platform(), 'results': results}
    out = resolve_path(args.out) if not os.path.isabs(args.out) else args.out
    write_json(out, report)
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
