"""Benchmark SCNet's inference paths: latency, FLOPs, fraction of the machine's peak, agreement with the exact path.

    python3 tools/benchmark.py [CONFIG] [--checkpoint W] [--sizes 128x256 512x1024] [--output result/bench.json]

Writes the JSON and a markdown table next to it; docs/benchmarks.md says what each figure is.
"""
import argparse
import contextlib
import copy
import dataclasses
import datetime
import json
import os
import re
import statistics
import sys

import numpy as np
import torch

from lib.eval.keyframe_policies import stream_labels
from lib.infer.backends import OnnxRuntimeSCNet, check_backend
from lib.infer.fast import EXACT, FastSCNet, add_fast_arguments, config_from_args, resolve_dtype
from lib.infer.labels import TAILS, correction_labels
from lib.infer.video_io import frame_to_tensor, open_frame_source
from lib.model import build_scnet, load_scnet
from lib.ops import cuda_extension_available, resample2d, resample2d_reference
from lib.synthetic.scene import Street, difficulty_with
from lib.utils import cli, profiling
from lib.utils.atomic import write_json, write_text
from lib.utils.config import REPO_ROOT, load_config
from lib.utils.distributed import pick_device
from lib.utils.errors import UserError

TOOL = 'tools/benchmark.py'
FULL_SIZE = (1024, 2048)  # a whole Cityscapes frame
RESAMPLE_CHANNELS = (19, 256)


def parse_size(text):
    """'512x1024' -> (512, 1024); multiples of 4 (the 1/4-resolution design), at least 32."""
    match = re.fullmatch(r'(\d+)x(\d+)', text)
    if not match or int(match.group(1)) % 4 or int(match.group(2)) % 4 or min(map(int, match.groups())) < 32:
        raise argparse.ArgumentTypeError(f'expected HxW, multiples of 4 and at least 32, such as 512x1024; got '
                                         f'"{text}"')
    return int(match.group(1)), int(match.group(2))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    cli.add_config_arguments(parser, required=False)
    cli.add_threads_argument(parser)
    parser.add_argument('--checkpoint', default=None, help='SCNet weights (default: random initialisation)')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default=None, help='default: the config\'s device')
    parser.add_argument('--sizes', nargs='+', type=parse_size, default=None,
                        help='frame sizes HxW (default: 512x1024 on CPU, 512x1024 1024x2048 on CUDA)')
    parser.add_argument('--flops-sizes', nargs='*', type=parse_size, default=[FULL_SIZE],
                        help='more sizes whose FLOPs only are counted (on the meta device: no compute)')
    parser.add_argument('--repeats', type=cli.positive_int, default=None, help='timed runs per row (3 CPU, 20 CUDA)')
    parser.add_argument('--warmup', type=int, default=None, help='untimed runs first (default 1 CPU, 5 CUDA)')
    parser.add_argument('--key-intervals', nargs='+', type=cli.positive_int, default=[5, 10],
                        help='k of the per-frame averages (one key frame and k - 1 non-key frames)')
    parser.add_argument('--agreement-frames', type=cli.positive_int, default=9, help='non-key frames to compare')
    parser.add_argument('--input', default=None, help='frames (a folder or a video) for the agreement')
    parser.add_argument('--interval', type=cli.positive_int, default=10, help='key-frame interval on --input (PDA: 10)')
    parser.add_argument('--max-frames', type=cli.positive_int, default=None, help='use the first N --input frames')
    parser.add_argument('--compile', action='store_true', help='add the fast path under torch.compile')
    parser.add_argument('--onnxruntime', action='store_true', help='add the onnxruntime backend (CPU)')
    parser.add_argument('--tf32', action='store_true', help='allow TF32 in the fp32 paths on CUDA (default off)')
    parser.add_argument('--seed', type=int, default=0, help='weights (without --checkpoint) and synthetic frames')
    parser.add_argument('--output', default=os.path.join(REPO_ROOT, 'result', 'benchmark.json'), help='.json (and .md)')
    add_fast_arguments(parser)
    args = parser.parse_args(argv)
    args.fast = True  # the fast path is always measured; its --fast-* options configure it
    if args.warmup is not None and args.warmup < 0:
        parser.error(f'--warmup: expected a count >= 0, got {args.warmup}')
    return args


def synthetic_clip(n_frames, size, seed):
    """``n_frames`` consecutive frames of a synthetic street (lib/synthetic), each (1, 3, H, W) in [0, 1]."""
    street = Street(np.random.default_rng(seed), *size, n_frames, difficulty_with('medium'))
    return [torch.from_numpy(street.render(t)[0]).permute(2, 0, 1)[None].float() for t in range(n_frames)]


# ------------------------------------------------------------------------------------------------------ timing
class Clock:
    """Times rows round-robin and records the machine's load around each group of rows."""

    def __init__(self, device, args):
        cpu = device.type == 'cpu'
        self.device, self.threads = device, torch.get_num_threads()
        self.warmup = args.warmup if args.warmup is not None else (1 if cpu else 5)
        self.repeats = args.repeats or (3 if cpu else 20)
        self.budget_s, self.max_repeats = (1.5, 25) if cpu else (2.0, 200)
        self.groups = []

    @contextlib.contextmanager
    def group(self, name):
        """A group of rows: the load average at its start and end, and whether other work ran beside it."""
        record = {'group': name, 'load_start': profiling.load_average()}
        yield record
        record['load_end'] = profiling.load_average()
        record['busy'] = profiling.machine_busy((record['load_start'], record['load_end']), self.threads)
        if record['busy']:
            _progress(f'WARNING: the machine was busy during {name} (load {record["load_start"]:.2f} -> '
                      f'{record["load_end"]:.2f} with {self.threads} threads): its timings are unreliable')
        self.groups.append(record)

    def time(self, fns):
        """{label: callable} -> {label: {'latency_ms', 'latency_ms_min', 'latency_ms_runs', 'peak_memory_bytes'}}."""
        with torch.inference_mode():
            timings = profiling.time_interleaved(fns, self.device, self.warmup, self.repeats, self.budget_s,
                                                 self.max_repeats)
        return {label: {'latency_ms': 1e3 * statistics.median(seconds), 'latency_ms_min': 1e3 * min(seconds),
                        'latency_ms_runs': [1e3 * s for s in seconds], 'peak_memory_bytes': peak}
                for label, (seconds, peak, _) in timings.items()}


def measure_peak(clock, device, seed):
    """GFLOP/s of the friendliest work (:func:`lib.utils.profiling.peak_workloads`) per dtype: the peak."""
    dtypes = {'fp32': (torch.float32, False), 'bf16': (torch.bfloat16, False)}
    if device.type == 'cuda':
        dtypes.update(tf32=(torch.float32, True), fp16=(torch.float16, False))
    peak, shapes = {}, []
    generator = torch.Generator().manual_seed(seed)
    with clock.group('peak'):
        for name, (dtype, tf32) in dtypes.items():
            work = profiling.peak_workloads(device, dtype, generator)
            previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            try:
                timings = clock.time({label: fn for label, (fn, _) in work.items()})
            finally:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
            for label, (_, flops) in work.items():
                shapes.append({'dtype': name, 'work': label,
                               'gflops_per_s': flops / timings[label]['latency_ms'] / 1e6})
            peak[name] = max(s['gflops_per_s'] for s in shapes if s['dtype'] == name)
    return peak, shapes


# ------------------------------------------------------------------------------------------------------- paths
def build_runners(net, args, fast_config):
    """{path: runner}: every runner has key_step(frame) and non_key_step(state, cur, prev)."""
    runners = {'exact': FastSCNet(net, EXACT), 'fast': FastSCNet(copy.deepcopy(net), fast_config)}
    if args.compile:
        runners['compile'] = FastSCNet(copy.deepcopy(net), dataclasses.replace(fast_config, compile=True))
    if args.onnxruntime:
        check_backend('onnxruntime')
        runners['onnxruntime'] = OnnxRuntimeSCNet(copy.deepcopy(net), fast_config.tail, args.threads)
    return runners


def row_calls(runner, key, prev, cur, flow=None, state=None):
    """{row: callable} of one path: its key and non-key frames and, given ``flow`` and ``state``, its parts."""
    calls = {'key_frame': lambda: runner.key_step(prev), 'non_key_frame': lambda: runner.non_key_step(key, cur, prev)}
    if flow is not None:
        calls.update(flow=lambda: runner.estimate_flow(cur, prev), warp=lambda: runner.propagate(key, flow),
                     correct=lambda: runner.correct(state, cur))
    return calls


def count_row_flops(model_cfg, size):
    """{row: FLOPs} of the exact path's steps at ``size``, counted on the meta device (shapes only)."""
    with torch.device('meta'):
        runner = FastSCNet(build_scnet(model_cfg).eval(), EXACT)
        prev, cur = torch.empty(1, 3, *size), torch.empty(1, 3, *size)
    with torch.inference_mode():
        key = runner.key_frame(prev)
        flow = runner.estimate_flow(cur, prev)
        calls = row_calls(runner, key, prev, cur, flow, runner.propagate(key, flow))
        return {row: profiling.count_flops(fn) for row, fn in calls.items()}


def benchmark_size(net, runners, size, args, clock, device, model_cfg):
    """Every row, the comparisons and the agreement of one frame size."""
    frames = [f.to(device) for f in synthetic_clip(1 + args.agreement_frames, size, args.seed)]
    prev, cur = frames[0], frames[1]
    align_corners = net.align_corners
    with torch.inference_mode():
        keys = {path: runner.key_step(prev)[0] for path, runner in runners.items()}
        parts = {}
        for path in ('exact', 'fast'):
            flow = runners[path].estimate_flow(cur, prev)
            parts[path] = (flow, runners[path].propagate(keys[path], flow))
        tail_inputs = {t: runners['fast'].correct(parts['fast'][1], cur, full_resolution=t == 'full') for t in TAILS}
    table = {}
    for path, runner in runners.items():
        for name, fn in row_calls(runner, keys[path], prev, cur, *parts.get(path, ())).items():
            table.setdefault(name, {})[path] = fn
    for tail, out in tail_inputs.items():
        table[f'tail_{tail}'] = {'fast': lambda t=tail, o=out: correction_labels(o, size, align_corners, t)}
    flops = count_row_flops(model_cfg, size)
    rows = []
    with clock.group(f'{size[0]}x{size[1]}') as load:
        for name, fns in table.items():
            _progress(f'{size[0]}x{size[1]} {name} ({", ".join(fns)})')
            for path, timing in clock.time(fns).items():
                row = {'name': name, 'path': path, **timing, 'flops': flops.get(name)}
                row['gflops_per_s'] = row['flops'] / row['latency_ms'] / 1e6 if row['flops'] else None
                rows.append(row)
    ms = {(r['path'], r['name']): r['latency_ms'] for r in rows}
    comparisons = {}
    for path in runners:
        key, non_key = ms[(path, 'key_frame')], ms[(path, 'non_key_frame')]
        comparisons[f'{path}_non_key_over_key'] = non_key / key
        for k in args.key_intervals:  # DAVSS at interval k against DeepLab on every frame, on the same path
            comparisons[f'{path}_speedup_over_per_frame_k{k}'] = k * key / (key + (k - 1) * non_key)
    for name in ('key_frame', 'non_key_frame'):
        comparisons[f'fast_speedup_{name}'] = ms[('exact', name)] / ms[('fast', name)]
    for k in args.key_intervals:
        exact, fast = (ms[(p, 'key_frame')] + (k - 1) * ms[(p, 'non_key_frame')] for p in ('exact', 'fast'))
        comparisons[f'fast_speedup_average_k{k}'] = exact / fast
    tail_runners = {f'fast_tail_{t}': FastSCNet(copy.deepcopy(net), dataclasses.replace(runners['fast'].config, tail=t))
                    for t in TAILS if t != runners['fast'].config.tail}
    return {'size': list(size), 'rows': rows, 'comparisons': comparisons, 'load': load,
            'agreement': agreement({**runners, **tail_runners}, frames, interval=len(frames))}


def agreement(runners, frames, interval):
    """Per path, the fraction of pixels labelled as by the exact path: worst frame, mean, mean per key distance."""
    clip = torch.cat(frames)
    reference = stream_labels(runners['exact'], clip, interval)
    out = {}
    for path, runner in runners.items():
        if path == 'exact':
            continue
        same = [(a == b).float().mean().item() for a, b in zip(stream_labels(runner, clip, interval), reference)]
        out[f'{path}_vs_exact'] = {
            'min': min(same), 'mean': statistics.mean(same),
            'per_distance': {d: statistics.mean(same[d::interval]) for d in range(min(interval, len(same)))}}
    return out


def fraction_of_peak(entry, peak, fast_dtype, peak_busy):
    """GFLOP/s of each path's key and non-key frames over the peak of the dtype the path computes in."""
    name = {torch.bfloat16: 'bf16', torch.float16: 'fp16'}.get(fast_dtype, 'fp32')
    out = {}
    for path in {r['path'] for r in entry['rows'] if r['name'] == 'key_frame'}:
        dtype = name if path in ('fast', 'compile') else 'fp32'
        rates = {r['name']: r['gflops_per_s'] for r in entry['rows'] if r['path'] == path}
        out[path] = {'peak': dtype, 'key_frame': rates['key_frame'] / peak[dtype],
                     'non_key_frame': rates['non_key_frame'] / peak[dtype],
                     'reliable': not (entry['load']['busy'] or peak_busy)}
    return out


def benchmark_resample(clock, device, sizes, seed):
    """The warp's implementations in GB/s, beside the copy bandwidth (a copy far larger than the caches)."""
    generator = torch.Generator().manual_seed(seed)
    impls = {'grid_sample': resample2d_reference}
    if device.type == 'cuda' and cuda_extension_available():
        impls['cuda_extension'] = lambda x, flow: resample2d(x, flow, impl='cuda')
    nbytes = (1 << 30) if device.type == 'cuda' else (256 << 20)
    src, rows = torch.ones(nbytes // 4, device=device), []
    dst = torch.empty_like(src)
    with clock.group('resample2d'):
        copy_gbps = 2 * nbytes / clock.time({'copy': lambda: dst.copy_(src)})['copy']['latency_ms'] / 1e6
        for h, w in sorted({(h // 4, w // 4) for h, w in sizes}):
            for channels in RESAMPLE_CHANNELS:
                x = torch.randn(1, channels, h, w, generator=generator).to(device)
                flow = (torch.rand(1, 2, h, w, generator=generator) * 8 - 4).to(device)
                minimum_bytes = (2 * channels + 2) * h * w * 4  # input and output once each, the flow once
                for impl, timing in clock.time({i: (lambda fn=fn: fn(x, flow)) for i, fn in impls.items()}).items():
                    rows.append({'impl': impl, 'channels': channels, 'size': [h, w], 'latency_ms': timing['latency_ms'],
                                 'achieved_gb_per_s': minimum_bytes / timing['latency_ms'] / 1e6,
                                 'fraction_of_copy_bandwidth': minimum_bytes / timing['latency_ms'] / 1e6 / copy_gbps})
    return {'gb_per_s': copy_gbps}, rows


# ------------------------------------------------------------------------------------------------------ report
def markdown(result):
    lines = [f'# Benchmark: {result["machine"]}', '',
             f'{result["date"]}; torch {result["torch"]}, {result["device"]}, {result["threads"]} threads; weights: '
             f'{result["weights"]}; fast path: {result["fast_config"]}.', '',
             'Reliable: ' + ('yes (the machine was idle)' if result['reliable'] else
                             '**no**: the machine was busy during ' + ', '.join(
                                 g['group'] for g in result['load'] if g['busy'])), '',
             '| peak GFLOP/s | ' + ' | '.join(result['peak_gflops']) + ' |', '|---|' + '---:|' * len(
                 result['peak_gflops']), '| best of ' + ', '.join(sorted({s['work'] for s in result['peak_shapes']}))
             + ' | ' + ' | '.join(f'{v:.1f}' for v in result['peak_gflops'].values()) + ' |', '']
    for entry in result['sizes']:
        paths = sorted({r['path'] for r in entry['rows']}, key=['exact', 'fast', 'compile', 'onnxruntime'].index)
        get = {(r['path'], r['name']): r for r in entry['rows']}
        load = ' -> '.join('-' if x is None else f'{x:.2f}' for x in (entry['load']['load_start'],
                                                                      entry['load']['load_end']))
        lines += [f'## {entry["size"][0]}x{entry["size"][1]} (median ms; load average {load})', '',
                  '| row | GFLOPs | ' + ' | '.join(paths) + ' |', '|---|---:|' + '---:|' * len(paths)]
        for name in dict.fromkeys(r['name'] for r in entry['rows']):
            flops = next(r['flops'] for r in entry['rows'] if r['name'] == name)
            lines.append(f'| {name} | {"-" if flops is None else f"{flops / 1e9:.3f}"} | ' + ' | '.join(
                f'{get[(p, name)]["latency_ms"]:.2f}' if (p, name) in get else '' for p in paths) + ' |')
        lines += ['', ', '.join(f'{k} {v:.3f}' for k, v in entry['comparisons'].items()), '',
                  '| agreement with exact | min | mean |', '|---|---:|---:|']
        lines += [f'| {name} | {a["min"]:.5f} | {a["mean"]:.5f} |' for name, a in entry['agreement'].items()]
        lines += ['', '| fraction of peak | peak | key frame | non-key frame |', '|---|---|---:|---:|']
        lines += [f'| {path} | {f["peak"]} | {f["key_frame"]:.3f} | {f["non_key_frame"]:.3f}'
                  f'{"" if f["reliable"] else " (unreliable: busy machine)"} |'
                  for path, f in entry['fraction_of_peak'].items()] + ['']
    if result.get('agreement_input'):
        lines += [f'Agreement on {result["input"]} (key every {result["interval"]}): ' + ', '.join(
            f'{name} min {a["min"]:.5f} mean {a["mean"]:.5f}' for name, a in result['agreement_input'].items()), '']
    lines += [f'FLOPs: {profiling.FLOP_CONVENTION}.', '', '| size | key GFLOPs | non-key GFLOPs | non-key / key |',
              '|---|---:|---:|---:|']
    lines += [f'| {size} | {f["key_frame"] / 1e9:.3f} | {f["non_key_frame"] / 1e9:.3f} | '
              f'{f["non_key_frame"] / f["key_frame"]:.4f} |' for size, f in result['flops'].items()]
    lines += ['', f'resample2d (copy bandwidth {result["copy_bandwidth"]["gb_per_s"]:.1f} GB/s): ' + ', '.join(
        f'{r["impl"]} C={r["channels"]} {r["size"][0]}x{r["size"][1]} {r["achieved_gb_per_s"]:.1f} GB/s'
        for r in result['resample2d'])]
    return '\n'.join(lines) + '\n'


def check_output(path):
    """Refuse to replace a file this tool did not write."""
    if not os.path.lexists(path):
        return
    try:
        with open(path) as f:
            ours = json.load(f).get('tool') == TOOL
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UserError(f'--output {path}: exists and was not written by {TOOL}; give another path')


def _progress(text):
    print(f'[benchmark] {text}', file=sys.stderr, flush=True)


def main(args):
    cfg = load_config(args.config, args.opts)
    device = pick_device(args.device or cfg['device'])
    fast_config = config_from_args(args)
    if args.onnxruntime and device.type != 'cpu':
        raise UserError('--onnxruntime: the onnxruntime backend runs on the CPU (--device cpu)')
    if fast_config.cuda_graphs and device.type != 'cuda':
        raise UserError('--fast-cuda-graphs: needs --device cuda')
    check_output(args.output)
    cli.set_threads(args.threads)
    if device.type == 'cuda':  # fixed shapes: cuDNN's fastest algorithms for every path; fp32 is fp32 unless --tf32
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
    sizes = args.sizes or ([(512, 1024)] if device.type == 'cpu' else [(512, 1024), FULL_SIZE])
    torch.manual_seed(args.seed)
    net = (load_scnet(cfg['model'], args.checkpoint, device) if args.checkpoint
           else build_scnet(cfg['model']).to(device).eval())
    clock = Clock(device, args)
    autocast = resolve_dtype(fast_config.dtype, device.type)
    result = {'tool': TOOL, 'date': datetime.date.today().isoformat(), 'machine': profiling.machine_description(device),
              'device': device.type, 'torch': torch.__version__, 'threads': torch.get_num_threads(),
              'weights': args.checkpoint or f'random initialisation (seed {args.seed})', 'model': cfg['model'],
              'fast_config': dataclasses.asdict(fast_config) | {'autocast_dtype': str(autocast)},
              'flop_convention': profiling.FLOP_CONVENTION, 'sizes': []}
    result['peak_gflops'], result['peak_shapes'] = measure_peak(clock, device, args.seed)
    runners = build_runners(net, args, fast_config)
    for size in sizes:
        entry = benchmark_size(net, runners, size, args, clock, device, cfg['model'])
        entry['fraction_of_peak'] = fraction_of_peak(entry, result['peak_gflops'], autocast, clock.groups[0]['busy'])
        result['sizes'].append(entry)
    if args.input:
        _progress(f'agreement on {args.input}')
        source = open_frame_source(args.input, max_frames=args.max_frames)
        frames = [frame_to_tensor(f, device=device)[0] for f in source]
        if len(frames) < 2:
            raise UserError(f'--input {args.input}: needs at least 2 frames, found {len(frames)}')
        result.update(input=args.input, interval=args.interval, agreement_input=agreement(runners, frames,
                                                                                          args.interval))
    result['flops'] = {}
    for size in sizes + [s for s in args.flops_sizes if s not in sizes]:
        counts = count_row_flops(cfg['model'], size)
        result['flops'][f'{size[0]}x{size[1]}'] = {row: counts[row] for row in ('key_frame', 'non_key_frame')}
    result['copy_bandwidth'], result['resample2d'] = benchmark_resample(clock, device, sizes, args.seed)
    result['load'] = clock.groups
    result['reliable'] = not any(g['busy'] for g in clock.groups)
    write_json(args.output, result, indent=2, default=str)
    write_text(os.path.splitext(args.output)[0] + '.md', markdown(result))
    _progress(f'wrote {args.output}' + ('' if result['reliable'] else ' (UNRELIABLE timings: the machine was busy)'))
    return 0


if __name__ == '__main__':
    cli.run(main, parse_args())
