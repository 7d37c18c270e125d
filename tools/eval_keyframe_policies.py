"""Accuracy against cost of key-frame policies: which ``fixed:k`` or ``distortion:tau`` to run a video with.

    python3 tools/eval_keyframe_policies.py exp/<experiment>/config.yaml --checkpoint saved_model/<experiment>/best.pth

Every policy streams every clip of the split from its first frame (a key frame for all policies).  On the synthetic
set every frame has a label and every frame counts; on Cityscapes / CamVid the clips are the PDA clips (10 frames)
and only the labelled last frame counts.

Cost of a policy = (n_key * cost_key + n_nonkey * cost_nonkey) / n_frames, with the costs of one key step (DeepLab)
and one non-key step (flow, warp, DMNet, CFNet, merge) measured once at the clips' resolution: FLOPs with
``torch.utils.flop_counter`` (convolutions and matrix products; the warp's grid sampling and the resizes are not
counted, they are small) and wall-clock milliseconds.  The distortion policy's decision is a mean over a map that the
merge computes anyway, so it adds nothing.  The frame-wise networks (DeepLab, FlowNet, CFNet) do not depend on the
policy, so their outputs are computed once per clip and replayed for every policy: the predictions are those of
``tools/infer_video.py``, the evaluation just does not pay for them once per policy.

Writes ``<out>/keyframe_policies.json`` and ``<out>/keyframe_policies.png`` (mIoU against GFLOPs per frame).
"""
import argparse
import os
import sys
import time

import matplotlib
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from lib.dataset import DatasetError, build_dataset, num_classes, read_frame, read_label, synthetic_layout
from lib.dataset.build import list_path_of
from lib.dataset.frame_list import read_list
from lib.dataset.video import snippet_offsets
from lib.engine.keyframe import DistortionTriggered, FixedInterval, PerFrame, PolicyError
from lib.engine.fast import logits_to_labels
from lib.engine.video import StreamingSegmenter, load_model, pad_to_multiple, set_threads
from lib.utils.atomic import atomic_path, write_json
from lib.utils.config import ConfigError, load_config, resolve_path
from lib.utils.distributed import pick_device
from lib.utils.metrics import ConfusionMatrix

PROG = 'eval_keyframe_policies'
DEFAULT_INTERVALS = (2, 3, 4, 5, 6, 8, 10)
DEFAULT_QUANTILES = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('config', help='experiment YAML')
    parser.add_argument('--checkpoint', required=True, help='trained SCNet weights (.pth)')
    parser.add_argument('--split', default=None, help='train | val | test (default: the config\'s eval.split)')
    parser.add_argument('--max-clips', type=int, default=None, help='evaluate only the first N clips')
    parser.add_argument('--max-frames', type=int, default=None,
                        help='stream only the first N frames of each clip (synthetic snippets have 30)')
    parser.add_argument('--timing-repeats', type=int, default=5, help='timed runs of each step (median is kept)')
    parser.add_argument('--intervals', type=int, nargs='+', default=list(DEFAULT_INTERVALS),
                        help='k of the fixed:k policies (per-frame is always included)')
    parser.add_argument('--thresholds', type=float, nargs='+', default=None,
                        help='tau of the distortion:tau policies (default: quantiles of the distortion scores seen '
                             'under fixed:MAX, so the sweep covers the model\'s own range)')
    parser.add_argument('--max-interval', type=int, default=10, help='max=N of the distortion policies')
    parser.add_argument('--stat', default='mean', help='distortion score: mean or a percentile pNN')
    parser.add_argument('--out', default=None, help='output folder (default: <eval.result_root>/<experiment>)')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads for torch (default: torch\'s choice; 1 is much faster on a shared, '
                             'oversubscribed CPU)')
    parser.add_argument('--device', default=None, help='cpu | cuda (default: the config\'s device)')
    parser.add_argument('--opts', nargs='*', action='extend', default=[], help='config overrides key.sub=value')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    args = parser.parse_args(argv)
    for name in ('max_clips', 'max_frames', 'timing_repeats', 'max_interval'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} {value}: expected a positive integer')
    if args.max_frames is not None and args.max_frames < 2:
        parser.error(f'--max-frames {args.max_frames}: a clip needs at least 2 frames to have a non-key frame')
    return args


# ---------------------------------------------------------------------------------------------------- clips

def synthetic_clips(cfg, split, n_classes):
    """Whole synthetic snippets: ``(frames (T, 3, H, W), labels [T x (H, W) int64 or None])``, every frame labelled."""
    root = resolve_path(cfg['data']['root'])
    offsets = snippet_offsets(synthetic_layout.read_meta(root))
    for entry in read_list(list_path_of(cfg['data'], split), 'synthetic'):
        relatives = [entry.frame(offset) for offset in offsets]
        frames = torch.stack([read_frame(os.path.join(root, rel)) for rel in relatives])
        labels = []
        for offset, rel in zip(offsets, relatives):
            path = os.path.join(root, synthetic_layout.sequence_label_path(rel))
            if os.path.isfile(path):
                labels.append(read_label(path, n_classes, frames.shape[-2:]))
            else:
                labels.append(read_label(os.path.join(root, entry.label), n_classes) if offset == 0 else None)
        yield frames, labels


def pda_clips(cfg, split):
    """PDA clips ``(frames (10, 3, H, W), [None x 9, label (H, W)])``: only the last frame is labelled."""
    dataset = build_dataset(cfg['data'], split, 'pda')
    for index in range(len(dataset)):
        frames, label = dataset[index]
        yield frames, [None] * (len(frames) - 1) + [label]


def load_clips(cfg, split, n_classes, max_clips=None, max_frames=None):
    clips = synthetic_clips(cfg, split, n_classes) if cfg['data']['name'] == 'synthetic' else pda_clips(cfg, split)
    for index, (frames, labels) in enumerate(clips):
        if max_clips is not None and index >= max_clips:
            return
        if max_frames is not None:
            frames, labels = frames[:max_frames], labels[:max_frames]
        yield frames, labels


# ---------------------------------------------------------------------------------------------------- replay

class ReplaySegmenter(StreamingSegmenter):
    """The streaming segmenter with the frame-wise networks' outputs memoised per frame of the current clip."""

    def start_clip(self):
        self.cache = {'key': {}, 'flow': {}, 'correction': {}}
        self.reset()

    def _memo(self, kind, compute):
        store = self.cache[kind]
        if self.index not in store:
            store[self.index] = compute()
        return store[self.index]

    def key_frame(self, image):
        return self._memo('key', lambda: self.model.key_frame(image))

    def flow(self, image, previous):
        return self._memo('flow', lambda: self.model.estimate_flow(image, previous))

    def correction(self, image):
        return self._memo('correction', lambda: self.model.cfnet(image))


class PolicyTally:
    """Key / non-key frame counts, the confusion matrix, and the distortion scores of one policy."""

    def __init__(self, policy, n_classes, device):
        self.policy = policy
        self.n_key = 0
        self.n_frames = 0
        self.confusion = ConfusionMatrix(n_classes, device=device)
        self.scores = []

    def summary(self, costs):
        n_nonkey = self.n_frames - self.n_key
        per_frame = {name: (self.n_key * costs['key'][name] + n_nonkey * costs['nonkey'][name]) / self.n_frames
                     for name in ('gflops', 'ms')}
        return {'policy': self.policy.name, 'frames': self.n_frames, 'key_frames': self.n_key,
                'key_fraction': self.n_key / self.n_frames, 'gflops_per_frame': per_frame['gflops'],
                'ms_per_frame': per_frame['ms'], 'miou': float(self.confusion.miou()),
                'mean_distortion_score': float(np.mean(self.scores)) if self.scores else None}


def run_clip(segmenter, frames, truth, tallies, device):
    """Stream one clip through every policy of ``tallies`` (sharing the memoised frame-wise networks)."""
    padded, (height, width) = pad_to_multiple(frames.to(device))  # (T, 3, H', W')
    segmenter.start_clip()
    for tally in tallies:
        segmenter.policy = tally.policy
        segmenter.reset()
        for t in range(len(padded)):
            labels, is_key, _ = segmenter.step(padded[t:t + 1])  # (1, H', W')
            tally.n_frames += 1
            tally.n_key += int(is_key)
            score = getattr(tally.policy, 'last_score', None)
            if not is_key and score is not None:
                tally.scores.append(score)
            if truth[t] is not None:
                tally.confusion.update(labels[:, :height, :width], truth[t].to(device).unsqueeze(0))


def evaluate_policies(model, clips, policies, n_classes, device, progress, desc):
    segmenter = ReplaySegmenter(model, policies[0])
    tallies = [PolicyTally(policy, n_classes, device) for policy in policies]
    for frames, labels in tqdm(clips, desc=desc, unit='clip', disable=not progress):
        run_clip(segmenter, frames, labels, tallies, device)
    return tallies


# ---------------------------------------------------------------------------------------------------- costs

def _count_flops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _median_ms(fn, repeats, device):
    times = []
    for _ in range(repeats + 1):  # the first call warms up (allocations, cudnn autotuning)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append(1000.0 * (time.perf_counter() - start))
    return float(np.median(times[1:]))


@torch.no_grad()
def measure_step_costs(model, image, previous, repeats=3):
    """GFLOPs and milliseconds of one key step and one non-key step on ``image`` (1, 3, H, W)."""
    state = model.key_frame(previous)
    size = image.shape[-2:]

    def key_step():
        return logits_to_labels(model.key_frame(image).logits, size, model.align_corners)

    def nonkey_step():
        propagated = model.propagate(state, model.estimate_flow(image, previous))
        return logits_to_labels(model.correct(propagated, image)['merged'], size, model.align_corners)

    return {name: {'gflops': _count_flops(step) / 1e9, 'ms': _median_ms(step, repeats, image.device)}
            for name, step in (('key', key_step), ('nonkey', nonkey_step))}


# ---------------------------------------------------------------------------------------------------- report

def fixed_curve_at(fixed, key_fraction):
    """mIoU of the fixed-interval curve linearly interpolated at ``key_fraction`` (None outside its range)."""
    points = sorted((r['key_fraction'], r['miou']) for r in fixed)
    fractions = [f for f, _ in points]
    if not fractions[0] <= key_fraction <= fractions[-1]:
        return None
    return float(np.interp(key_fraction, fractions, [m for _, m in points]))


def compare_at_equal_cost(fixed, distortion):
    """For each distortion policy: its mIoU minus the fixed curve's at the same average cost.

    The average cost ``nonkey + key_fraction * (key - nonkey)`` is affine in the key-frame fraction, so "equal cost"
    is "equal key-frame fraction" whatever the two step costs are (FLOPs or ms, this model or the full-size one);
    the comparison is made on the fraction, which also stays defined when both steps cost about the same.
    """
    rows = []
    for result in distortion:
        reference = fixed_curve_at(fixed, result['key_fraction'])
        rows.append({'policy': result['policy'], 'key_fraction': result['key_fraction'],
                     'gflops_per_frame': result['gflops_per_frame'], 'miou': result['miou'],
                     'fixed_miou_at_equal_cost': reference,
                     'delta_miou': None if reference is None else result['miou'] - reference})
    deltas = [row['delta_miou'] for row in rows if row['delta_miou'] is not None]
    verdict = {'compared': len(deltas), 'better': sum(d > 0 for d in deltas), 'worse': sum(d < 0 for d in deltas),
               'mean_delta_miou': float(np.mean(deltas)) if deltas else None,
               'best_delta_miou': float(max(deltas)) if deltas else None}
    return rows, verdict


def _short_name(policy_name):
    return policy_name.split(',')[0].replace('distortion:', 'τ=')


def plot_curve(fixed, distortion, costs, path, title):
    """mIoU against the key-frame fraction (bottom axis) and the average GFLOPs per frame (top axis)."""
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    for results, style, label, offset in ((fixed, 'o-', 'fixed interval', (3, 4)),
                                          (distortion, 's--', 'distortion-triggered', (3, -10))):
        results = sorted(results, key=lambda r: r['key_fraction'])
        ax.plot([100 * r['key_fraction'] for r in results], [100 * r['miou'] for r in results], style, label=label)
        for r in results:
            ax.annotate(_short_name(r['policy']), (100 * r['key_fraction'], 100 * r['miou']),
                        textcoords='offset points', xytext=offset, fontsize=7)
    ax.set_xlabel('key frames (% of frames)')
    ax.set_ylabel('mIoU (%)')
    key, nonkey = costs['key']['gflops'], costs['nonkey']['gflops']
    if abs(key - nonkey) > 1e-3 * max(key, nonkey):
        top = ax.secondary_xaxis('top', functions=(lambda pct: nonkey + pct / 100 * (key - nonkey),
                                                   lambda g: 100 * (g - nonkey) / (key - nonkey)))
        top.set_xlabel(f'GFLOPs per frame (key {key:.3g}, non-key {nonkey:.3g})')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- main

def auto_thresholds(scores, quantiles=DEFAULT_QUANTILES):
    """Thresholds at quantiles of the observed distortion scores, rounded and deduplicated."""
    if not scores:
        raise ValueError('no distortion scores were observed (clips of a single frame?); pass --thresholds')
    return sorted({round(float(np.quantile(scores, q)), 4) for q in quantiles})


def run(args):
    cfg = load_config(args.config, args.opts)
    split = args.split or cfg['eval']['split']
    n_classes = num_classes(cfg['data']['name'])
    set_threads(args.threads)
    device = pick_device(args.device or cfg['device'])
    model = load_model(cfg, args.checkpoint, device)
    fixed_policies = [PerFrame()] + [FixedInterval(k) for k in sorted(set(args.intervals)) if k > 1]
    reference = DistortionTriggered(1.0, max_interval=args.max_interval, stat=args.stat)  # never triggers
    progress = not args.no_progress

    def clips():
        return load_clips(cfg, split, n_classes, args.max_clips, args.max_frames)

    tallies = evaluate_policies(model, clips(), fixed_policies + [reference], n_classes, device, progress,
                                'fixed intervals')
    thresholds = args.thresholds or auto_thresholds(tallies[-1].scores)
    distortion_policies = [DistortionTriggered(tau, max_interval=args.max_interval, stat=args.stat)
                           for tau in thresholds]
    tallies = tallies[:-1] + evaluate_policies(model, clips(), distortion_policies, n_classes, device, progress,
                                               'distortion policies')

    frames, _ = next(iter(clips()))
    padded, _ = pad_to_multiple(frames[:2].to(device))
    costs = measure_step_costs(model, padded[1:2], padded[0:1], repeats=args.timing_repeats)
    results = [tally.summary(costs) for tally in tallies]
    fixed = results[:len(fixed_policies)]
    distortion = results[len(fixed_policies):]
    rows, verdict = compare_at_equal_cost(fixed, distortion)

    out = args.out or os.path.join(resolve_path(cfg['eval']['result_root']), cfg['experiment'] or 'default')
    os.makedirs(out, exist_ok=True)
    report = {'config': args.config, 'checkpoint': args.checkpoint, 'split': split, 'device': str(device),
              'frame_size': list(frames.shape[-2:]), 'step_costs': costs,
              'every_frame_labelled': cfg['data']['name'] == 'synthetic', 'fixed': fixed, 'distortion': distortion,
              'equal_cost_comparison': rows, 'verdict': verdict}
    write_json(os.path.join(out, 'keyframe_policies.json'), report, indent=2)
    plot_curve(fixed, distortion, costs, os.path.join(out, 'keyframe_policies.png'),
               f'{cfg["experiment"] or os.path.basename(args.config)}: {split}, '
               f'{"every frame" if report["every_frame_labelled"] else "labelled frames"}')
    return report, out


def print_table(report):
    print(f'{"policy":32s} {"key%":>6s} {"GFLOPs/f":>9s} {"ms/f":>8s} {"mIoU":>7s}')
    for r in report['fixed'] + report['distortion']:
        print(f'{r["policy"]:32s} {100 * r["key_fraction"]:6.1f} {r["gflops_per_frame"]:9.3f} '
              f'{r["ms_per_frame"]:8.2f} {100 * r["miou"]:7.2f}')
    verdict = report['verdict']
    if verdict['compared']:
        print(f'distortion vs fixed at equal cost: better in {verdict["better"]}, worse in {verdict["worse"]} of '
              f'{verdict["compared"]} settings; delta mIoU mean {100 * verdict["mean_delta_miou"]:+.2f}, best '
              f'{100 * verdict["best_delta_miou"]:+.2f} points')
    else:
        print('distortion vs fixed: no distortion setting fell inside the fixed curve\'s cost range')


def main(argv=None):
    args = parse_args(argv)
    try:
        report, out = run(args)
    except (ConfigError, DatasetError, PolicyError, ValueError, OSError) as err:
        print(f'{PROG}: error: {err}', file=sys.stderr)
        return 2
    print_table(report)
    print(f'{PROG}: wrote {out}/keyframe_policies.json and keyframe_policies.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
