"""Speed of the PDA fast path against the per-distance loop of the paper's test script (a benchmark, not a test).

    python tools/benchmark_pda.py --size 256 512 --clips 2
    python tools/benchmark_pda.py exp/synthetic/correction.yaml --checkpoint saved_model/synthetic_correction/final.pth

Times, per clip, on random frames of ``--size`` (or on the first ``--clips`` clips of ``eval.split`` with
``--real-data``):

- ``naive``: for d = 1..9 separately, key frame through DeepLab, d flow + warp steps, DMNet and CFNet at t
  (the paper's loop; DAVSS row only);
- ``fast``: ``lib.eval.pda.predict_clip`` with only the DAVSS row, and with all three rows;
- ``batched``: the same with ``batched=True`` (not bit-exact; see docs/evaluation.md).

Also checks that ``naive`` and ``fast`` give identical predictions and counts the forward FLOPs of each
sub-network (torch.utils.flop_counter) to explain the speed-up. Writes JSON (``--output``) and prints it.
"""
import argparse
import json
import os
import platform
import time

import torch

from lib.dataset import PDA_CLIP_LENGTH, build_dataset
from lib.eval.pda import predict_clip
from lib.model import build_scnet, load_scnet
from lib.utils import cli
from lib.utils.atomic import write_text
from lib.utils.config import load_config, resolve_path
from lib.utils.distributed import pick_device
from lib.utils.errors import UserError
from lib.utils.profiling import count_flops, synchronize

DISTANCES = list(range(1, PDA_CLIP_LENGTH))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='PDA fast path vs the per-distance loop: time per clip.')
    parser.add_argument('config', nargs='?', default=None, help='YAML config (default: the DEFAULTS, full widths)')
    parser.add_argument('--checkpoint', default=None, help='SCNet weights (default: random init)')
    parser.add_argument('--opts', nargs='+', action='extend', default=[], metavar='KEY=VALUE')
    parser.add_argument('--size', type=int, nargs=2, default=[256, 512], metavar=('H', 'W'))
    parser.add_argument('--real-data', action='store_true', help='clips of eval.split instead of random frames')
    parser.add_argument('--clips', type=int, default=2, help='clips timed per method (after one warm-up clip)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s choice; 1 on a shared, oversubscribed machine)')
    parser.add_argument('--output', default=None, help='JSON file (default <eval.result_root>/benchmark_pda.json)')
    return parser.parse_args(argv)


@torch.no_grad()
def naive_clip(model, frames):
    """The paper's loop for one batch of clips: dict d -> (N, H, W) prediction; nothing shared across d."""
    last = frames.shape[1] - 1
    preds = {}
    for d in DISTANCES:
        state = model.key_frame(frames[:, last - d])
        for j in range(last - d, last):
            state = model.propagate(state, model.estimate_flow(frames[:, j + 1], frames[:, j]))
        preds[d] = model.correct(state, frames[:, last])['merged'].argmax(1)
    return preds


def time_per_clip(fn, clips, device):
    fn(clips[0])  # warm-up: kernel selection and allocator growth are not part of the steady state
    synchronize(device)
    start = time.perf_counter()
    outputs = []
    for clip in clips[1:]:
        outputs.append(fn(clip))
    synchronize(device)
    return (time.perf_counter() - start) / (len(clips) - 1), outputs


@torch.no_grad()
def flops_per_call(model, frame):
    """Forward GFLOPs of one call of each sub-network on one frame of the benchmark size."""
    quarter = model.to_quarter_resolution(frame)
    calls = {'deeplab': lambda: model.deeplab(frame), 'flownet': lambda: model.estimate_flow(frame, frame),
             'cfnet': lambda: model.cfnet(frame), 'dmnet': lambda: model.dmnet(quarter, quarter)}
    return {name: count_flops(call) / 1e9 for name, call in calls.items()}


def load_clips(cfg, args, device):
    n = args.clips + 1
    if args.real_data:
        dataset = build_dataset(cfg['data'], cfg['eval']['split'], 'pda')
        return [dataset[i % len(dataset)][0][None].to(device) for i in range(n)]
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(1, PDA_CLIP_LENGTH, 3, *args.size, generator=generator).to(device) for _ in range(n)]


def main(args):
    cfg = load_config(args.config, args.opts)
    if args.threads is not None and args.threads < 1:
        raise UserError(f'--threads: expected a positive number, got {args.threads}')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(cfg['device'])
    if args.checkpoint:
        model = load_scnet(cfg['model'], args.checkpoint, device)
    else:
        torch.manual_seed(0)
        model = build_scnet(cfg['model']).to(device).eval()
    clips = load_clips(cfg, args, device)

    timings, outputs = {}, {}
    timings['naive'], outputs['naive'] = time_per_clip(lambda c: naive_clip(model, c), clips, device)
    timings['fast'], outputs['fast'] = time_per_clip(
        lambda c: predict_clip(model, c, DISTANCES, per_frame=False, propagation_only=False)['davss'], clips, device)
    timings['fast_all_rows'], _ = time_per_clip(lambda c: predict_clip(model, c, DISTANCES), clips, device)
    timings['batched'], outputs['batched'] = time_per_clip(
        lambda c: predict_clip(model, c, DISTANCES, per_frame=False, propagation_only=False, batched=True)['davss'],
        clips, device)

    def agreement(name):
        same = sum(int((a[d] == b[d]).sum()) for a, b in zip(outputs['naive'], outputs[name]) for d in DISTANCES)
        total = sum(a[d].numel() for a in outputs['naive'] for d in DISTANCES)
        return same / total

    frame = clips[0][:, 0]
    result = {
        'device': str(device), 'torch': torch.__version__, 'threads': torch.get_num_threads(),
        'python': platform.python_version(), 'frame_size': list(frame.shape[-2:]), 'clips_timed': args.clips,
        'config': args.config, 'checkpoint': args.checkpoint, 'model': cfg['model'],
        'seconds_per_clip': timings,
        'speedup_fast': timings['naive'] / timings['fast'],
        'speedup_fast_all_rows': timings['naive'] / timings['fast_all_rows'],
        'speedup_batched': timings['naive'] / timings['batched'],
        'identical_predictions_fast': agreement('fast') == 1.0,
        'pixel_agreement_batched': agreement('batched'),
        'gflops_per_call': flops_per_call(model, frame),
        'calls_per_clip': {'naive': {'deeplab': 9, 'flownet': 45, 'cfnet': 9, 'dmnet': 9},
                           'fast': {'deeplab': 9, 'flownet': 9, 'cfnet': 1, 'dmnet': 9}},
    }
    text = json.dumps(result, indent=1)
    print(text)
    output = args.output or os.path.join(resolve_path(cfg['eval']['result_root']), 'benchmark_pda.json')
    write_text(output, text + '\n')
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
