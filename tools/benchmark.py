"""Benchmark every part of SCNet against the paper's budget, on CPU or CUDA.

For each frame size: median latency after warm-up, FLOPs, parameters, peak memory and achieved FLOP/s of each
component (DeepLab, FlowNet, warp, DMNet, CFNet, the merge/upsample/argmax tails) and of whole frames (key,
non-key, average at key intervals), plus comparison rows measured in the same run on the same machine:

- a non-key frame done the original evaluation's way (three full-resolution upsamples, merge at full resolution,
  argmax) against ours;
- resample2d: the CUDA extension against the grid_sample fallback, in GB/s next to the device's copy bandwidth;
- fp32 against the fast path (``--fast``, lib/infer/fast.py), with the argmax agreement between them (on the
  benchmarked network, and with ``--agreement-checkpoint`` on trained weights and real frames);
- the measured convolution peak of the device (dense 3x3 convolutions in bf16 and fp32, and TF32/fp16 on CUDA)
  and each frame row of the fast path as a fraction of it (``peak_gflops``, ``fraction_of_peak``);
- optional backend rows beside eager: ``--compile-rows`` (the fast path under torch.compile with freezing) and
  ``--onnxruntime`` (the exported graphs in onnxruntime, CPU).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-add of
convolutions and matrix products.  It does not count grid_sample/resample2d or resizes: those are counted by hand
(``flops_hand``: 8 FLOPs, i.e. 4 multiply-adds, per output value of a bilinear sample) through its
``custom_mapping``.  Elementwise ops (batch norm, activations, the merge) and argmax are not counted.

Examples:
    python3 tools/benchmark.py --device cpu --sizes 512x1024 --fast
    python3 tools/benchmark.py --fast --compile-rows --onnxruntime --agreement-config exp/synthetic/correction.yaml \
        --agreement-checkpoint saved_model/synthetic_correction/final.pth \
        --agreement-input data/synthetic/leftImg8bit_sequence/val/synthberg
    python3 tools/benchmark.py --device cuda --sizes 512x1024 1024x2048 --fast --fast-cuda-graphs
    python3 tools/benchmark.py --sizes 64x128 --model-opts deeplab.width_mult=0.125 --out result/benchmark_tiny.json
"""
import argparse
import collections
import copy
import dataclasses
import json
import math
import os
import platform
import re
import statistics
import sys

import torch
import torch.nn.functional as F

import lib.ops
from lib.infer.backends import build_segmenter
from lib.infer.fast import EXACT, FastConfig, FastSCNet, add_fast_arguments, config_from_args, resolve_dtype
from lib.infer.keyframe_policy import FixedInterval
from lib.infer.labels import sparse_merge_argmax, upsample_labels
from lib.infer.video_io import frame_to_tensor, open_frame_source
from lib.model import build_scnet, load_scnet
from lib.ops import resample2d, resample2d_reference
from lib.utils import cli
from lib.utils.atomic import write_json, write_text
from lib.utils.config import REPO_ROOT, load_config
from lib.utils.errors import UserError
from lib.utils.profiling import count_params, flop_counts, time_interleaved

DEFAULT_OUT = os.path.join('result', 'benchmark.json')
# FlopCounterMode does not count these; each output value of a bilinear sample costs 4 multiply-adds.
BILINEAR_FLOPS_PER_VALUE = 8
# Under inference_mode the counter sees composite overloads (grid_sampler, upsample_bilinear2d.vec) before they
# decompose, so every overload of each op is mapped.
HAND_COUNTED_OPS = (torch.ops.aten.grid_sampler, torch.ops.aten.grid_sampler_2d, torch.ops.aten.upsample_bilinear2d)
FLOP_CONVENTION = ('torch.utils.flop_counter.FlopCounterMode: 2 FLOPs per multiply-add of convolutions and matrix '
                   'products (flops_counted). grid_sample/resample2d and bilinear resizes are not counted by it and '
                   'are counted by hand at 8 FLOPs (4 multiply-adds) per output value (flops_hand). Elementwise ops '
                   '(batch norm, activations, merge) and argmax are not counted.')
WARP_BYTES_MODEL = ('minimum traffic: each input value read once, the flow read once, each output value written once '
                    '((2*C + 2) values per pixel); the same model for every implementation')
RESAMPLE_CHANNELS = (19, 256)
COMPONENT_PATHS = ('exact', 'fast')
# Dense 3x3 convolutions (channels, 1/4 .. 1/16 grid of a 512x1024 frame) whose best throughput is the peak.
PEAK_SHAPES = ((256, 128, 256), (512, 64, 128), (1024, 32, 64))
FULL_SIZE = (1024, 2048)  # a whole Cityscapes frame


# ----------------------------------------------------------------------------------------------------- arguments
def parse_size(text):
    """'512x1024' -> (512, 1024); both multiples of 4 (the 1/4-resolution design)."""
    match = re.fullmatch(r'(\d+)x(\d+)', text)
    if not match:
        raise argparse.ArgumentTypeError(f'--sizes: expected HxW such as 512x1024, got "{text}"')
    size = int(match.group(1)), int(match.group(2))
    if size[0] % 4 or size[1] % 4 or min(size) < 32:
        raise argparse.ArgumentTypeError(f'--sizes: H and W must be multiples of 4 and at least 32, got "{text}"')
    return size


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', type=parse_size, default=None,
                        help='frame sizes HxW (default: 512x1024 on CPU, 512x1024 1024x2048 on CUDA)')
    parser.add_argument('--flops-sizes', nargs='*', type=parse_size, default=[FULL_SIZE],
                        help='extra sizes for which only FLOPs are counted (on the meta device, no compute)')
    parser.add_argument('--resample-sizes', nargs='*', type=parse_size, default=None,
                        help='frame sizes whose 1/4 grid the resample2d rows use (default: --sizes and 1024x2048)')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default=None, help='default: cuda when available')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    parser.add_argument('--repeats', type=int, default=None, help='timed runs per row (default: 3 CPU, 20 CUDA)')
    parser.add_argument('--warmup', type=int, default=None, help='untimed runs first (default: 1 CPU, 5 CUDA)')
    parser.add_argument('--row-budget', type=float, default=None,
                        help='seconds a row may take: cheap rows get more runs, up to --max-repeats '
                             '(default: 1.5 CPU, 2 CUDA)')
    parser.add_argument('--max-repeats', type=int, default=None,
                        help='cap of timed runs per row (default 25 CPU, 200 CUDA)')
    parser.add_argument('--key-intervals', nargs='+', type=int, default=[5, 10], help='k for the average rows')
    parser.add_argument('--agreement-frames', type=int, default=3,
                        help='non-key frames after the key frame over which fast/exact agreement is measured')
    parser.add_argument('--config', default=None, help='YAML config whose model section is benchmarked')
    parser.add_argument('--model-opts', nargs='*', default=[],
                        help='overrides of the model section, e.g. deeplab.width_mult=0.5 (the "model." is optional)')
    parser.add_argument('--checkpoint', default=None, help='weights to load (default: random initialisation)')
    parser.add_argument('--tf32', action='store_true', help='allow TF32 in fp32 cuDNN convolutions (default off)')
    parser.add_argument('--compile-rows', action='store_true',
                        help='add key/non-key rows of the fast path under torch.compile (freezing); needs --fast')
    parser.add_argument('--onnxruntime', action='store_true',
                        help='add key/non-key rows of the onnxruntime backend (fp32 graphs, the fast path\'s tail; '
                             'CPU)')
    parser.add_argument('--agreement-config', default=None,
                        help='config of trained weights on which fast/exact agreement is measured (with '
                             '--agreement-checkpoint and --agreement-input)')
    parser.add_argument('--agreement-checkpoint', default=None, help='trained whole-SCNet weights for the agreement')
    parser.add_argument('--agreement-input', default=None,
                        help='real frames for the agreement: a frame folder or a video file')
    parser.add_argument('--agreement-interval', type=int, default=10,
                        help='key-frame interval of the agreement run (10: distances 1..9 as in PDA)')
    parser.add_argument('--agreement-max-frames', type=int, default=None, help='use only the first N frames')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help=f'JSON output; a .md table is written next to it '
                                                    f'(default: {DEFAULT_OUT} under the repository root)')
    add_fast_arguments(parser)
    args = parser.parse_args(argv)
    agreement_options = (args.agreement_config, args.agreement_checkpoint, args.agreement_input)
    if any(agreement_options) and not all(agreement_options):
        parser.error('--agreement-config, --agreement-checkpoint and --agreement-input go together')
    if args.compile_rows and not args.fast:
        parser.error('--compile-rows: needs --fast (it compiles the fast path)')
    for name in ('repeats', 'warmup', 'agreement_frames', 'threads', 'agreement_interval'):
        value = getattr(args, name)
        if value is not None and value < (0 if name == 'warmup' else 1):
            parser.error(f'--{name.replace("_", "-")}: expected a count >= {0 if name == "warmup" else 1}, got {value}')
    if any(k < 1 for k in args.key_intervals):
        parser.error(f'--key-intervals: expected positive intervals, got {args.key_intervals}')
    return args


def resolve_device(name):
    if name is None:
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda: no CUDA device is available')
    return torch.device(name)


def model_config(args):
    opts = [text if text.startswith('model.') else f'model.{text}' for text in args.model_opts]
    return load_config(args.config, opts)['model']


def build_model(model_cfg, device, checkpoint=None):
    if checkpoint is not None:
        return load_scnet(model_cfg, checkpoint, device)
    return build_scnet(model_cfg).to(device).eval()


# --------------------------------------------------------------------------------------------------- measurement
def _bilinear_flops(*args, out_shape=None, **kwargs):
    return BILINEAR_FLOPS_PER_VALUE * math.prod(out_shape)


def _extension_ops():
    """resample2d's CUDA operator, when built: counted like grid_sample if FLOPs are ever counted on CUDA."""
    try:
        return (torch.ops.davss.resample2d_forward,)
    except (AttributeError, RuntimeError):
        return ()


def count_flops(fn):
    """FLOPs of ``fn()``: (flops_counted by FlopCounterMode, flops_hand for bilinear sampling, per-op dict)."""
    mapping = {}
    for packet in HAND_COUNTED_OPS + _extension_ops():
        mapping[packet] = _bilinear_flops
        mapping.update({getattr(packet, overload): _bilinear_flops for overload in packet.overloads()})
    per_op = flop_counts(fn, mapping)
    hand_names = {str(op) for op in HAND_COUNTED_OPS}
    hand = sum(n for name, n in per_op.items() if name in hand_names)
    return sum(per_op.values()) - hand, hand, per_op


# ------------------------------------------------------------------------------------------------------- inputs
def synthetic_clip(n_frames, size, seed, shift=(3, 2)):
    """A smooth random colour scene panning by ``shift`` (dx, dy) pixels per frame: video-like input with motion.

    Returns:
        list of ``n_frames`` tensors (1, 3, H, W) in [0, 1].
    """
    height, width = size
    dx, dy = shift
    canvas_h, canvas_w = height + dy * n_frames, width + dx * n_frames
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, canvas_h // 32 + 2, canvas_w // 32 + 2, generator=generator)
    fine = torch.rand(1, 3, canvas_h // 4 + 2, canvas_w // 4 + 2, generator=generator)
    canvas = (0.8 * F.interpolate(coarse, size=(canvas_h, canvas_w), mode='bicubic', align_corners=False)
              + 0.2 * F.interpolate(fine, size=(canvas_h, canvas_w), mode='bilinear', align_corners=False))
    canvas = canvas.clamp(0, 1)
    return [canvas[..., t * dy:t * dy + height, t * dx:t * dx + width].contiguous() for t in range(n_frames)]


# ----------------------------------------------------------------------------------------------------- workloads
def resize(x, scale, align_corners):
    return F.interpolate(x, scale_factor=scale, mode='bilinear', align_corners=align_corners)


def tail_full(propagated, distortion, correction, align_corners):
    """The original tail: upsample the three 1/4 maps x4, merge at full resolution, argmax -> (N, H, W)."""
    propagated = resize(propagated, 4, align_corners)  # (N, C, H, W)
    distortion = resize(distortion, 4, align_corners)  # (N, 1, H, W)
    correction = resize(correction, 4, align_corners)  # (N, C, H, W)
    return (propagated * (1 - distortion) + correction * distortion).argmax(1)


def tail_sparse(propagated, distortion, correction, align_corners):
    """The original tail's labels as the fast path computes them (fast.sparse_merge_argmax: the fused kernel on CPU,
    elsewhere full resolution only where the class can change)."""
    size = propagated.shape[-2] * 4, propagated.shape[-1] * 4
    return sparse_merge_argmax(propagated, distortion, correction, size, align_corners)


def tail_quarter_merge(propagated, distortion, correction, align_corners):
    """Merge at 1/4, upsample the merged logits once, argmax -> (N, H, W)."""
    merged = propagated * (1 - distortion) + correction * distortion  # (N, C, H/4, W/4)
    return resize(merged, 4, align_corners).argmax(1)


def tail_quarter_argmax(propagated, distortion, correction, align_corners):
    """Merge and argmax at 1/4, nearest upsample of the label map -> (N, H, W)."""
    merged = propagated * (1 - distortion) + correction * distortion
    size = merged.shape[-2] * 4, merged.shape[-1] * 4
    return upsample_labels(merged.argmax(1), size, align_corners)


TAILS = {'tail_full': tail_full, 'tail_sparse': tail_sparse, 'tail_quarter_merge': tail_quarter_merge,
         'tail_quarter_argmax': tail_quarter_argmax}


def original_non_key_step(net, state, cur, prev):
    """A non-key frame in the order of operations of the original evaluation script (its test_PDA.py): flow,
    warp logits and 1/4 key image one after the other, upsample propagated logits, distortion map and correction
    logits x4, merge at full resolution, argmax.  fp32, NCHW, under no_grad as there.

    Returns:
        labels (N, H, W) int64.
    """
    ac = net.align_corners
    with torch.no_grad():
        flow = net.flownet(torch.cat([cur, prev], 1))  # (N, 2, H/4, W/4)
        logits = net.warpnet(state.logits, flow)
        image_q = net.warpnet(state.image, flow)
        logits = resize(logits, 4, ac)  # (N, C, H, W)
        distortion = resize(net.dmnet(image_q, resize(cur, 0.25, ac)), 4, ac)  # (N, 1, H, W)
        correction = resize(net.cfnet(cur), 4, ac)  # (N, C, H, W)
        return (logits * (1 - distortion) + correction * distortion).argmax(1)


class Inputs:
    """The tensors every workload of one size reads: two frames and the states between them."""

    def __init__(self, runner, prev, cur):
        self.prev, self.cur = prev, cur
        self.key_state, self.key_labels = runner.key_step(prev)
        self.flow = runner.estimate_flow(cur, prev)
        self.state = runner.propagate(self.key_state, self.flow)
        with torch.inference_mode():
            self.cur_q = resize(cur, 0.25, runner.net.align_corners)
        # the three 1/4 maps the tails combine
        self.quarter = runner.correct(self.state, cur, full_resolution=False)


class FrameInputs:
    """What the frame rows of a backend path read: the two frames and its own key-frame state."""

    def __init__(self, runner, prev, cur):
        self.prev, self.cur = prev, cur
        with torch.inference_mode():
            self.key_state, self.key_labels = runner.key_step(prev)


def component_workloads(runner, inputs):
    """name -> (zero-argument callable, params, hand description) of each network component under ``runner``."""
    net = runner.net

    def in_context(fn):
        def call():
            with runner.context():
                return fn()
        return call

    ac = net.align_corners
    return collections.OrderedDict([
        ('deeplab', (in_context(lambda: net.deeplab(runner.prepare(inputs.prev))), count_params(net.deeplab))),
        ('resize_image', (in_context(lambda: resize(inputs.prev, 0.25, ac)), 0)),
        ('flownet', (lambda: runner.estimate_flow(inputs.cur, inputs.prev), count_params(net.flownet))),
        ('warp', (lambda: runner.propagate(inputs.key_state, inputs.flow), count_params(net.warpnet))),
        ('dmnet', (in_context(lambda: net.dmnet(inputs.state.image, inputs.cur_q)), count_params(net.dmnet))),
        ('cfnet', (in_context(lambda: net.cfnet(runner.prepare(inputs.cur))), count_params(net.cfnet))),
    ])


def tail_workloads(net, inputs):
    q = inputs.quarter
    ac = net.align_corners

    def tail_call(tail):
        def call():
            with torch.inference_mode():
                return tail(q['propagated'], q['distortion'], q['correction'], ac)
        return call
    return collections.OrderedDict((name, (tail_call(tail), 0)) for name, tail in TAILS.items())


def frame_workloads(runner, inputs):
    net = runner.net

    def call(fn):
        def run():
            with torch.inference_mode():
                return fn()
        return run
    return collections.OrderedDict([
        ('key_frame', (call(lambda: runner.key_step(inputs.prev)), count_params(net.deeplab))),
        ('non_key_frame', (call(lambda: runner.non_key_step(inputs.key_state, inputs.cur, inputs.prev)),
                           count_params(net.flownet, net.dmnet, net.cfnet, net.warpnet))),
    ])


def workload_table(runners, inputs_by_path):
    """Every row to measure, in order: [(name, kind, {path: (callable, params)})].

    Paths: ``exact`` and ``fast`` (one runner each), and ``original`` for the non-key frame done the original
    evaluation's way; the tails are plain fp32 tensor code, listed under ``exact``.  The backend paths
    (``compile``, ``onnxruntime``) have the frame rows only.
    """
    table = collections.OrderedDict()
    for path, runner in runners.items():
        if path not in COMPONENT_PATHS:
            continue
        for name, work in component_workloads(runner, inputs_by_path[path]).items():
            table.setdefault((name, 'component'), {})[path] = work
    exact, exact_inputs = runners['exact'], inputs_by_path['exact']
    for name, work in tail_workloads(exact.net, exact_inputs).items():
        table[(name, 'component')] = {'exact': work}
    for path, runner in runners.items():
        for name, work in frame_workloads(runner, inputs_by_path[path]).items():
            table.setdefault((name, 'frame'), {})[path] = work
    non_key = table[('non_key_frame', 'frame')]
    non_key['original'] = (lambda: original_non_key_step(exact.net, exact_inputs.key_state, exact_inputs.cur,
                                                         exact_inputs.prev), non_key['exact'][1])
    return [(name, kind, paths) for (name, kind), paths in table.items()]


def warp_traffic(n, channels, h, w, element_size=4):
    """Bytes of the warp under WARP_BYTES_MODEL."""
    return (2 * channels + 2) * n * h * w * element_size


# -------------------------------------------------------------------------------------------------- FLOP counting
def flops_on_meta(model_cfg, size, fast_config):
    """Per-row FLOPs at ``size`` counted on the meta device (shapes only, no compute), so 1024x2048 is free.

    Returns:
        {(path, name): (flops_counted, flops_hand)} for path in exact/fast (original rows under exact).
    """
    with torch.device('meta'):
        net = build_scnet(model_cfg).eval()
        frames = [torch.empty(1, 3, *size) for _ in range(2)]
    return count_row_flops(net, frames, fast_config)


def count_row_flops(net, frames, fast_config):
    """FLOPs of every row's workload on ``net`` with inputs ``frames`` (two (1, 3, H, W) tensors)."""
    counts = {}
    runners = {'exact': FastSCNet(net, EXACT)}
    if fast_config is not None:
        # FLOPs do not depend on dtype or layout; only the tail changes what is computed.
        runners['fast'] = FastSCNet(net, FastConfig(dtype='fp32', channels_last=False, tail=fast_config.tail))
    inputs = Inputs(runners['exact'], frames[0], frames[1])
    for name, _kind, paths in workload_table(runners, {path: inputs for path in runners}):
        for path, (fn, _params) in paths.items():
            counted, hand, _ = count_flops(fn)
            counts[(path, name)] = (counted, hand)
    return counts


# ------------------------------------------------------------------------------------------------------ one size
def make_row(name, kind, path, seconds, peak, memory_method, params, flops):
    median = statistics.median(seconds)
    counted, hand = flops if flops is not None else (None, None)
    total = None if counted is None else counted + hand
    return {
        'name': name, 'kind': kind, 'path': path,
        'latency_ms': median * 1e3, 'latency_ms_min': min(seconds) * 1e3, 'latency_ms_runs': [s * 1e3 for s in seconds],
        'flops': total, 'flops_counted': counted, 'flops_hand': hand,
        'params': params,
        'peak_memory_bytes': peak, 'peak_memory_method': memory_method,
        'achieved_gflops_per_s': None if not total else total / median / 1e9,
        'frames_per_second': 1.0 / median if kind == 'frame' else None,
    }


def average_row(key, non_key, k, path):
    """Per-frame average over a key interval k: one key frame and k-1 non-key frames."""
    def mix(field):
        a, b = key[field], non_key[field]
        return None if a is None or b is None else (a + (k - 1) * b) / k
    latency, flops = mix('latency_ms'), mix('flops')
    return {'name': f'average_k{k}', 'kind': 'derived', 'path': path, 'latency_ms': latency,
            'latency_ms_min': mix('latency_ms_min'), 'flops': flops,
            'achieved_gflops_per_s': None if not flops else flops / (latency / 1e3) / 1e9,
            'frames_per_second': 1e3 / latency}


def benchmark_size(net, size, args, device, fast_config, flops):
    """All rows of one frame size (the network ``net`` on ``device``)."""
    frames = [f.to(device) for f in synthetic_clip(1 + args.agreement_frames, size, args.seed)]
    runners = {'exact': FastSCNet(net, EXACT)}
    if fast_config is not None:
        runners['fast'] = FastSCNet(copy.deepcopy(net), fast_config)
    inputs_by_path = {path: Inputs(runner, frames[0], frames[1]) for path, runner in runners.items()}
    for path, runner in backend_runners(net, args, device, fast_config).items():
        _progress(f'{_size_key(size)} preparing {path} (compilation / export: the first call is slow)')
        runners[path] = runner
        inputs_by_path[path] = FrameInputs(runner, frames[0], frames[1])
    rows = []
    for name, kind, paths in workload_table(runners, inputs_by_path):
        _progress(f'{_size_key(size)} {name} ({", ".join(paths)})')
        timings = time_interleaved({path: fn for path, (fn, _) in paths.items()}, device, args.warmup, args.repeats,
                                   args.row_budget, args.max_repeats)
        for path, (_fn, params) in paths.items():
            seconds, peak, method = timings[path]
            # A backend path computes what the fast path does (the exact one without --fast): same FLOPs.
            row_flops = flops.get((path, name)) or flops.get(('fast' if fast_config is not None else 'exact', name))
            row = make_row(name, kind, path, seconds, peak, method, params, row_flops)
            if name == 'warp':
                state = inputs_by_path[path].key_state
                n, c, h, w = state.logits.shape
                row['bytes'] = warp_traffic(n, c + state.image.shape[1], h, w)
                row['achieved_gb_per_s'] = row['bytes'] / (row['latency_ms'] / 1e3) / 1e9
            rows.append(row)
    for path in runners:
        by_name = {r['name']: r for r in rows if r['path'] == path}
        rows += [average_row(by_name['key_frame'], by_name['non_key_frame'], k, path) for k in args.key_intervals]
    agreement = measure_agreement(runners, inputs_by_path, frames)
    return {'size': list(size), 'rows': rows, 'comparisons': comparisons(rows), 'agreement': agreement,
            'boundary_fraction': boundary_fraction(inputs_by_path['exact'].key_labels)}


def backend_runners(net, args, device, fast_config):
    """The optional backend paths: ``compile`` (the fast path under torch.compile with freezing) and
    ``onnxruntime`` (the two exported graphs, fp32, with the fast path's tail)."""
    runners = {}
    if args.compile_rows:
        runners['compile'] = FastSCNet(copy.deepcopy(net), dataclasses.replace(fast_config, compile=True))
    if args.onnxruntime:
        segmenter = build_segmenter(copy.deepcopy(net), FixedInterval(1), 'onnxruntime', fast_config, args.threads)
        runners['onnxruntime'] = segmenter.model
    return runners


def boundary_fraction(labels):
    """Fraction of 1/4-grid cells (2x2 source pixels) holding more than one class in a full-resolution label map,
    sampled every 4th pixel: the share of pixels on which the fast tail has to interpolate the logits."""
    quarter = labels[:, ::4, ::4]
    a, b, c, d = quarter[:, :-1, :-1], quarter[:, 1:, :-1], quarter[:, :-1, 1:], quarter[:, 1:, 1:]
    return 1.0 - ((a == b) & (a == c) & (a == d)).float().mean().item()


def comparisons(rows):
    """Ratios between rows of one size measured in this run."""
    get = {(r['path'], r['name']): r for r in rows}
    out = {}
    key, non_key = get[('exact', 'key_frame')], get[('exact', 'non_key_frame')]
    if key['flops'] and non_key['flops'] is not None:
        out['non_key_over_key_flops'] = non_key['flops'] / key['flops']
        out['non_key_over_key_flops_counted_only'] = non_key['flops_counted'] / key['flops_counted']
    out['non_key_over_key_latency'] = non_key['latency_ms'] / key['latency_ms']
    original = get[('original', 'non_key_frame')]
    out['exact_over_original_non_key_latency'] = non_key['latency_ms'] / original['latency_ms']
    # Minimum latencies: the least disturbed run of each, a steadier ratio on a loaded shared machine.
    out['exact_over_original_non_key_latency_min'] = non_key['latency_ms_min'] / original['latency_ms_min']
    averages = dict.fromkeys(r['name'] for r in rows if r['kind'] == 'derived')
    for name in ('key_frame', 'non_key_frame', *averages):
        if ('fast', name) in get and ('exact', name) in get:
            exact, fast = get[('exact', name)], get[('fast', name)]
            out[f'fast_speedup_{name}'] = exact['latency_ms'] / fast['latency_ms']
            out[f'fast_speedup_{name}_min'] = exact['latency_ms_min'] / fast['latency_ms_min']
    return out


def measure_agreement(runners, inputs_by_path, frames):
    """Argmax agreement (fraction of equal pixels) along one key frame and the following non-key frames.

    Compared: fast against exact at every frame (and the relative error of the propagated 1/4 logits); the exact
    path against the original order of operations at the first non-key frame; the cheaper tails alone (same fp32
    inputs) against the full-resolution tail.
    """
    exact = runners['exact']
    net = exact.net
    inputs = inputs_by_path['exact']
    result = {}
    with torch.inference_mode():
        original = original_non_key_step(net, inputs.key_state, inputs.cur, inputs.prev)
        _, exact_first = exact.non_key_step(inputs.key_state, inputs.cur, inputs.prev)
        result['exact_vs_original_non_key'] = _agree(exact_first, original)
        q = inputs.quarter
        reference = tail_full(q['propagated'], q['distortion'], q['correction'], net.align_corners)
        for name in ('tail_sparse', 'tail_quarter_merge', 'tail_quarter_argmax'):
            labels = TAILS[name](q['propagated'], q['distortion'], q['correction'], net.align_corners)
            result[f'{name}_vs_tail_full'] = _agree(labels, reference)
        result['exact_label_stats'] = _label_stats(exact_first)
        for path in runners:
            if path in COMPONENT_PATHS:
                continue
            extra = inputs_by_path[path]
            _, labels = runners[path].non_key_step(extra.key_state, inputs.cur, inputs.prev)
            result[f'{path}_vs_exact'] = {'key_frame': _agree(extra.key_labels, inputs.key_labels),
                                          'non_key_frame': _agree(labels, exact_first)}
        if 'fast' not in runners:
            return result
        fast = runners['fast']
        state_exact, state_fast = inputs.key_state, inputs_by_path['fast'].key_state
        chain = {'key_frame': _agree(inputs_by_path['fast'].key_labels, inputs.key_labels), 'non_key_frames': [],
                 'state_logits_rel_error': [_relative_error(state_fast.logits, state_exact.logits)]}
        for t in range(1, len(frames)):
            state_exact, labels_exact = exact.non_key_step(state_exact, frames[t], frames[t - 1])
            state_fast, labels_fast = fast.non_key_step(state_fast, frames[t], frames[t - 1])
            chain['non_key_frames'].append(_agree(labels_fast, labels_exact))
            chain['state_logits_rel_error'].append(_relative_error(state_fast.logits, state_exact.logits))
        chain['min'] = min([chain['key_frame']] + chain['non_key_frames'])
        result['fast_vs_exact'] = chain
    return result


def _agree(a, b):
    return (a == b).float().mean().item()


def _relative_error(approx, reference):
    """||approx - reference|| / ||reference||: precision loss that does not depend on how many classes a map has."""
    return ((approx - reference).norm() / reference.norm().clamp_min(1e-12)).item()


def _label_stats(labels):
    """How informative an agreement figure is: a map of one class agrees trivially."""
    counts = torch.bincount(labels.flatten().cpu())
    return {'classes_present': int((counts > 0).sum()), 'top_class_fraction': (counts.max() / counts.sum()).item()}


# ---------------------------------------------------------------------------------------------------- resample2d
def copy_bandwidth(device, args):
    """GB/s of ``dst.copy_(src)`` on a tensor far larger than the caches (bytes read + written)."""
    nbytes = (1 << 30) if device.type == 'cuda' else (256 << 20)
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    seconds = time_interleaved({'copy': lambda: dst.copy_(src)}, device, args.warmup, args.repeats, args.row_budget,
                               args.max_repeats)['copy'][0]
    median = statistics.median(seconds)
    return {'bytes': 2 * nbytes, 'latency_ms': median * 1e3, 'gb_per_s': 2 * nbytes / median / 1e9}


def resample_implementations(device):
    impls = {'grid_sample': resample2d_reference}
    available = getattr(lib.ops, 'cuda_extension_available', None)
    if device.type == 'cuda' and available is not None and available():
        impls['cuda_extension'] = lambda x, flow: resample2d(x, flow, impl='cuda')
    return impls


def smooth_flow(h, w, generator, amplitude=4.0):
    """(1, 2, h, w) a smooth random displacement field of up to ``amplitude`` pixels, like real optical flow."""
    coarse = torch.rand(1, 2, h // 16 + 2, w // 16 + 2, generator=generator) * 2 - 1
    return amplitude * F.interpolate(coarse, size=(h, w), mode='bilinear', align_corners=False)


def benchmark_resample(quarter_sizes, device, args, copy_gbps):
    """resample2d implementations, interleaved, at each 1/4-resolution size with 19 and 256 channels."""
    rows = []
    generator = torch.Generator().manual_seed(args.seed)
    impls = resample_implementations(device)
    for h, w in quarter_sizes:
        for channels in RESAMPLE_CHANNELS:
            x = torch.randn(1, channels, h, w, generator=generator).to(device)
            flow = smooth_flow(h, w, generator).to(device)
            _progress(f'resample2d C={channels} {h}x{w} ({", ".join(impls)})')
            with torch.inference_mode():
                timings = time_interleaved({impl: (lambda fn=fn: fn(x, flow)) for impl, fn in impls.items()},
                                           device, args.warmup, args.repeats, args.row_budget, args.max_repeats)
            nbytes = warp_traffic(1, channels, h, w, x.element_size())
            for impl, (seconds, peak, method) in timings.items():
                median = statistics.median(seconds)
                rows.append({'impl': impl, 'channels': channels, 'size': [h, w], 'latency_ms': median * 1e3,
                             'latency_ms_runs': [t * 1e3 for t in seconds],
                             'flops_hand': BILINEAR_FLOPS_PER_VALUE * channels * h * w, 'bytes': nbytes,
                             'achieved_gb_per_s': nbytes / median / 1e9,
                             'fraction_of_copy_bandwidth': nbytes / median / 1e9 / copy_gbps,
                             'peak_memory_bytes': peak, 'peak_memory_method': method})
    return rows


# ----------------------------------------------------------------------------------------------- convolution peak
def peak_dtypes(device):
    """{name: (dtype, allow_tf32)} of the peak rows: bf16 and fp32 everywhere, TF32 and fp16 on CUDA."""
    dtypes = {'bf16_conv': (torch.bfloat16, False), 'fp32_conv': (torch.float32, False)}
    if device.type == 'cuda':
        dtypes.update(tf32_conv=(torch.float32, True), fp16_conv=(torch.float16, False))
    return dtypes


def conv_peak(device, args):
    """GFLOP/s of dense 3x3 convolutions (channels_last, stride 1, :data:`PEAK_SHAPES`) in each dtype, measured
    like every row; the peak of a dtype is its best shape.  It is what this machine's convolution library reaches
    on the friendliest layers, the reference against which the network's rows are a fraction."""
    result = {}
    shapes = []
    generator = torch.Generator().manual_seed(args.seed)
    for name, (dtype, tf32) in peak_dtypes(device).items():
        best = 0.0
        for channels, h, w in PEAK_SHAPES:
            x = torch.randn(1, channels, h, w, generator=generator).to(device, dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            weight = (torch.randn(channels, channels, 3, 3, generator=generator) * 0.02).to(device, dtype)
            weight = weight.contiguous(memory_format=torch.channels_last)
            flops = 2 * channels * channels * 9 * h * w
            _progress(f'peak {name} conv3x3 C={channels} {h}x{w}')
            previous = torch.backends.cudnn.allow_tf32
            torch.backends.cudnn.allow_tf32 = tf32
            try:
                with torch.inference_mode():
                    seconds = time_interleaved({'conv': lambda: F.conv2d(x, weight, padding=1)}, device, args.warmup,
                                               args.repeats, args.row_budget, args.max_repeats)['conv'][0]
            finally:
                torch.backends.cudnn.allow_tf32 = previous
            gflops = flops / statistics.median(seconds) / 1e9
            shapes.append({'dtype': name, 'channels': channels, 'size': [h, w], 'gflops_per_s': gflops,
                           'gflops_per_s_best_run': flops / min(seconds) / 1e9})
            best = max(best, gflops)
        result[name] = best
    return result, shapes


def best_run_peaks(shapes):
    """{dtype name: best single-run GFLOP/s over the peak shapes}: the peak the least disturbed runs reach."""
    out = {}
    for shape in shapes:
        out[shape['dtype']] = max(out.get(shape['dtype'], 0.0), shape['gflops_per_s_best_run'])
    return out


def fraction_of_peak(entry, peaks, fast_dtype, best_peaks):
    """Achieved GFLOP/s of each path's key and non-key frame rows over the peak of the dtype that path runs in
    (medians over medians); ``*_best_run``: the fastest run of each row over the peak's fastest run, the steadier
    figure on a machine whose load changes during the run (on an idle machine both agree)."""
    out = {}
    for path in sorted({r['path'] for r in entry['rows']}):
        peak_name = {None: 'fp32_conv', torch.bfloat16: 'bf16_conv', torch.float16: 'fp16_conv'}.get(
            fast_dtype if path in ('fast', 'compile') else None, 'fp32_conv')
        if peak_name not in peaks:
            peak_name = 'fp32_conv'
        rows = {r['name']: r for r in entry['rows'] if r['path'] == path}
        rates = {name: r.get('achieved_gflops_per_s') for name, r in rows.items()}
        if rates.get('key_frame') is None or rates.get('non_key_frame') is None:
            continue
        best = {name: rows[name]['flops'] / (rows[name]['latency_ms_min'] / 1e3) / 1e9
                for name in ('key_frame', 'non_key_frame')}
        out[path] = {'key_frame': rates['key_frame'] / peaks[peak_name],
                     'non_key_frame': rates['non_key_frame'] / peaks[peak_name], 'peak': peak_name,
                     'key_frame_best_run': best['key_frame'] / best_peaks[peak_name],
                     'non_key_frame_best_run': best['non_key_frame'] / best_peaks[peak_name],
                     'key_frame_of_fp32_peak': rates['key_frame'] / peaks['fp32_conv'],
                     'non_key_frame_of_fp32_peak': rates['non_key_frame'] / peaks['fp32_conv']}
    return out


# -------------------------------------------------------------------------------------------- trained agreement
def trained_agreement(args, device, fast_config):
    """Fast against exact argmax agreement with trained weights on real frames, along key-frame intervals.

    Both paths run ``StreamingSegmenter`` (key frame every ``--agreement-interval`` frames, as the PDA distances);
    per frame the fraction of equal pixels, summarised per key-frame distance d.
    """
    cfg = load_config(args.agreement_config)
    net = load_scnet(cfg['model'], args.agreement_checkpoint, device)
    source = open_frame_source(args.agreement_input)
    paths = {'exact': build_segmenter(net, FixedInterval(args.agreement_interval), 'torch', None),
             'fast': build_segmenter(net, FixedInterval(args.agreement_interval), 'torch', fast_config)}
    by_distance = collections.defaultdict(list)
    boundaries = []
    for index, frame in enumerate(source):
        if args.agreement_max_frames is not None and index >= args.agreement_max_frames:
            break
        image, _ = frame_to_tensor(frame, device=device)
        labels = {path: segmenter.step(image)[0] for path, segmenter in paths.items()}
        by_distance[index % args.agreement_interval].append(_agree(labels['fast'], labels['exact']))
        boundaries.append(boundary_fraction(labels['exact']))
    every = [a for values in by_distance.values() for a in values]
    return {'config': args.agreement_config, 'checkpoint': args.agreement_checkpoint, 'input': args.agreement_input,
            'frames': len(every), 'frame_size': list(image.shape[-2:]), 'interval': args.agreement_interval,
            'min': min(every), 'mean': statistics.mean(every),
            'per_distance_mean': {d: statistics.mean(v) for d, v in sorted(by_distance.items())},
            'per_distance_min': {d: min(v) for d, v in sorted(by_distance.items())},
            'boundary_fraction_mean': statistics.mean(boundaries)}


def _size_key(size):
    return f'{size[0]}x{size[1]}'


# ------------------------------------------------------------------------------------------------------ reporting
def machine_description(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            match = re.search(r'^model name\s*:\s*(.+)$', f.read(), re.MULTILINE)
        name = match.group(1).strip() if match else name
    except OSError:
        pass
    return f'{name}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads'


def markdown(result):
    lines = [f'# Benchmark: {result["device"]} ({result["machine"]})', '',
             f'torch {result["torch"]}, fp32 exact path; fast path: {result["fast_config"]}; median of at least '
             f'{result["repeats"]} runs (up to {result["max_repeats"]} for rows under {result["row_budget_s"]} s) '
             f'after {result["warmup"]} warm-up, paths interleaved; weights: '
             f'{result["weights"]}; inputs: {result["inputs"]}; load average at start/end: '
             f'{result["load_average_start"]} / {result["load_average_end"]}.', '',
             f'FLOPs: {result["flop_convention"]}', '']
    for entry in result['sizes']:
        lines += [f'## {_size_key(entry["size"])}', '',
                  '| row | kind | path | median ms | min ms | GFLOPs (counted + hand) | params M | peak MiB | GFLOP/s '
                  '| GB/s |', '|---|---|---|---:|---:|---:|---:|---:|---:|---:|']
        for r in entry['rows']:
            cells = [r['name'], r['kind'], r['path'], _fmt(r['latency_ms'], 1), _fmt(r['latency_ms_min'], 1),
                     _gflops(r), _fmt_scaled(r.get('params'), 1e6, 2),
                     _fmt_scaled(r.get('peak_memory_bytes'), 2 ** 20, 0), _fmt(r.get('achieved_gflops_per_s'), 1),
                     _fmt(r.get('achieved_gb_per_s'), 1)]
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines += ['', 'Comparisons: ' + ', '.join(f'{k} = {_fmt(v, 3)}' for k, v in entry['comparisons'].items()), '',
                  'Argmax agreement: ' + json.dumps(entry['agreement'], default=_round), '']
    lines += ['## Convolution peak (same run)', '',
              'Dense 3x3 convolutions, channels_last, best of ' + ', '.join(f'C={c} {h}x{w}' for c, h, w in PEAK_SHAPES)
              + ': ' + ', '.join(f'{k} {v:.1f} GFLOP/s' for k, v in result['peak_gflops'].items()), '']
    for entry in result['sizes']:
        lines += [f'Fraction of peak at {_size_key(entry["size"])} (boundary cells of the exact key labels: '
                  f'{entry["boundary_fraction"]:.3f}):', '', '| path | peak | key frame | non-key frame | key (best runs) '
                  '| non-key (best runs) | key of fp32 peak | non-key of fp32 peak |',
                  '|---|---|---:|---:|---:|---:|---:|---:|']
        for path, f in entry['fraction_of_peak'].items():
            lines.append(f'| {path} | {f["peak"]} | {f["key_frame"]:.3f} | {f["non_key_frame"]:.3f} | '
                         f'{f["key_frame_best_run"]:.3f} | {f["non_key_frame_best_run"]:.3f} | '
                         f'{f["key_frame_of_fp32_peak"]:.3f} | {f["non_key_frame_of_fp32_peak"]:.3f} |')
        lines.append('')
    if result.get('agreement_trained'):
        t = result['agreement_trained']
        lines += [f'Trained weights ({t["checkpoint"]}, {t["frames"]} frames of {t["input"]} at '
                  f'{_size_key(t["frame_size"])}, key every {t["interval"]}): fast vs exact agreement min '
                  f'{t["min"]:.5f}, mean {t["mean"]:.5f}; per distance (mean) '
                  + ', '.join(f'{d}: {v:.5f}' for d, v in t['per_distance_mean'].items()), '']
    if result['flops_only']:
        lines += ['## FLOPs per frame', '', '| size | key GFLOPs | non-key GFLOPs | ratio |', '|---|---:|---:|---:|']
        for size, f in result['flops_only'].items():
            lines.append(f'| {size} | {_fmt_scaled(f["key_frame"], 1e9, 1)} | '
                         f'{_fmt_scaled(f["non_key_frame"], 1e9, 1)} | {_fmt(f["non_key_over_key_flops"], 4)} |')
        lines.append('')
    lines += [f'## resample2d (copy bandwidth {result["copy_bandwidth"]["gb_per_s"]:.1f} GB/s)', '',
              f'Bytes: {WARP_BYTES_MODEL}.', '',
              '| impl | C | size | latency ms | GB/s | of copy |', '|---|---:|---|---:|---:|---:|']
    for r in result['resample2d']:
        lines.append(f'| {r["impl"]} | {r["channels"]} | {_size_key(r["size"])} | {r["latency_ms"]:.3f} | '
                     f'{r["achieved_gb_per_s"]:.1f} | {r["fraction_of_copy_bandwidth"]:.2f} |')
    return '\n'.join(lines) + '\n'


def _round(value):
    return round(value, 4) if isinstance(value, float) else str(value)


def _fmt(value, digits):
    return '-' if value is None else f'{value:.{digits}f}'


def _fmt_scaled(value, scale, digits):
    return '-' if value is None else f'{value / scale:.{digits}f}'


def _gflops(row):
    if row.get('flops') is None:
        return '-'
    if row.get('flops_counted') is None:
        return f'{row["flops"] / 1e9:.2f}'
    return f'{row["flops_counted"] / 1e9:.2f} + {row["flops_hand"] / 1e9:.2f}'


def _load_average():
    """1/5/15-minute load averages: on a shared machine they say how much the latencies can be trusted."""
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def _progress(text):
    print(f'[benchmark] {text}', file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------- main
def benchmark(args):
    """Measure what ``args`` (:func:`parse_args`) asks for; writes the JSON and Markdown reports and returns the
    result.  Bad options raise ValueError."""
    device = resolve_device(args.device)
    if args.sizes is None:
        args.sizes = [(512, 1024)] if device.type == 'cpu' else [(512, 1024), FULL_SIZE]
    if args.repeats is None:
        args.repeats = 3 if device.type == 'cpu' else 20
    if args.warmup is None:
        args.warmup = 1 if device.type == 'cpu' else 5
    if args.row_budget is None:
        args.row_budget = 1.5 if device.type == 'cpu' else 2.0
    if args.max_repeats is None:
        args.max_repeats = 25 if device.type == 'cpu' else 200
    args.max_repeats = max(args.max_repeats, args.repeats)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    fast_config = config_from_args(args)
    if fast_config is not None and fast_config.cuda_graphs and device.type != 'cuda':
        raise UserError('--fast-cuda-graphs: needs --device cuda')
    if args.onnxruntime and device.type != 'cpu':
        raise UserError('--onnxruntime: the onnxruntime backend runs on the CPU (use --device cpu)')
    if device.type == 'cuda':
        # Fixed shapes: let cuDNN pick its fastest algorithms, for every path alike; fp32 means fp32 unless --tf32.
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    model_cfg = model_config(args)
    torch.manual_seed(args.seed)
    net = build_model(model_cfg, device, args.checkpoint)

    result = run_header(args, device, model_cfg, fast_config)
    result['peak_gflops'], result['peak_shapes'] = conv_peak(device, args)
    fast_dtype = None if fast_config is None else resolve_dtype(fast_config.dtype, device.type)
    for size in args.sizes:
        flops = _flops_for(model_cfg, size, net, device, fast_config, args.seed)
        entry = benchmark_size(net, size, args, device, fast_config, flops)
        entry['fraction_of_peak'] = fraction_of_peak(entry, result['peak_gflops'], fast_dtype,
                                                     best_run_peaks(result['peak_shapes']))
        result['sizes'].append(entry)
    first = result['sizes'][0]
    if 'fast' in first['fraction_of_peak']:
        result['fraction_of_peak'] = dict(first['fraction_of_peak']['fast'], size=_size_key(first['size']))
    if args.agreement_config is not None and fast_config is not None:
        _progress(f'agreement with trained weights on {args.agreement_input}')
        result['agreement_trained'] = trained_agreement(args, device, fast_config)
    result['flops_only'] = frame_flops_table(result['sizes'], args.flops_sizes, model_cfg, fast_config)
    result['copy_bandwidth'] = copy_bandwidth(device, args)
    resample_sizes = args.resample_sizes if args.resample_sizes is not None else list(args.sizes) + [FULL_SIZE]
    quarter_sizes = sorted({(h // 4, w // 4) for h, w in resample_sizes})
    result['resample2d'] = benchmark_resample(quarter_sizes, device, args, result['copy_bandwidth']['gb_per_s'])
    result['load_average_end'] = _load_average()

    out = args.out or os.path.join(REPO_ROOT, DEFAULT_OUT)
    write_json(out, result, indent=2, default=str)
    write_text(os.path.splitext(out)[0] + '.md', markdown(result))
    _progress(f'wrote {out}')
    return result


def main(args):
    benchmark(args)
    return 0


def run_header(args, device, model_cfg, fast_config):
    """The run's settings: what was measured, how, and on what."""
    return {
        'device': device.type, 'machine': machine_description(device), 'torch': torch.__version__,
        'threads': torch.get_num_threads(), 'load_average_start': _load_average(), 'dtype': 'fp32',
        'tf32': bool(args.tf32 and device.type == 'cuda'),
        'fast_config': None if fast_config is None else dataclasses.asdict(fast_config) | {
            'autocast_dtype': str(resolve_dtype(fast_config.dtype, device.type))},
        'repeats': args.repeats, 'warmup': args.warmup, 'row_budget_s': args.row_budget,
        'max_repeats': args.max_repeats, 'key_intervals': args.key_intervals,
        'weights': args.checkpoint or f'random initialisation (seed {args.seed})',
        'inputs': 'synthetic panning clip (smooth random colour field moving 3 px right, 2 px down per frame)',
        'model': model_cfg, 'flop_convention': FLOP_CONVENTION, 'warp_bytes_model': WARP_BYTES_MODEL,
        'sizes': [], 'flops_only': {}, 'resample2d': [], 'copy_bandwidth': None,
    }


def frame_flops_table(size_entries, flops_sizes, model_cfg, fast_config):
    """Key and non-key FLOPs per size: the benchmarked sizes, plus ``flops_sizes`` counted on the meta device."""
    table = {}
    for entry in size_entries:
        get = {(r['path'], r['name']): r for r in entry['rows']}
        table[_size_key(entry['size'])] = {
            'key_frame': get[('exact', 'key_frame')]['flops'],
            'non_key_frame': get[('exact', 'non_key_frame')]['flops'],
            'non_key_over_key_flops': entry['comparisons'].get('non_key_over_key_flops')}
    for size in flops_sizes:
        table.setdefault(_size_key(size), _flops_summary(model_cfg, size, fast_config))
    return table


def _flops_for(model_cfg, size, net, device, fast_config, seed):
    """Row FLOPs at ``size``: on the meta device when the model supports it, else by running on ``device``."""
    try:
        return flops_on_meta(model_cfg, size, fast_config)
    except (NotImplementedError, RuntimeError) as err:
        _progress(f'meta-device FLOP count failed ({err.__class__.__name__}); counting on {device.type}')
        frames = [f.to(device) for f in synthetic_clip(2, size, seed)]
        return count_row_flops(net, frames, fast_config)


def _flops_summary(model_cfg, size, fast_config):
    counts = flops_on_meta(model_cfg, size, fast_config)
    key, non_key = sum(counts[('exact', 'key_frame')]), sum(counts[('exact', 'non_key_frame')])
    return {'key_frame': key, 'non_key_frame': non_key, 'non_key_over_key_flops': non_key / key,
            'non_key_over_key_flops_counted_only': counts[('exact', 'non_key_frame')][0]
            / counts[('exact', 'key_frame')][0],
            'non_key_fast_tail': sum(counts[('fast', 'non_key_frame')]) if fast_config is not None else None,
            'components': {name: sum(v) for (path, name), v in counts.items() if path == 'exact'}}


if __name__ == '__main__':
    cli.run(main, parse_args())
