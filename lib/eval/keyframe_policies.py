"""Accuracy against cost of key-frame policies (``tools/eval_keyframe_policies.py`` is its command line and says
what is measured): every policy streams every clip with the frame-wise networks' outputs replayed; ``distortion:tau``
policies are compared with the ``fixed:k`` curve (also propagation-only, the DFF-style curve) at equal cost."""
import itertools
import os
from dataclasses import dataclass, field
from functools import partial
from typing import List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from lib.dataset import build_dataset, num_classes, read_frame, synthetic_layout
from lib.dataset.build import list_path_of
from lib.dataset.frame_list import read_list
from lib.dataset.video import snippet_offsets
from lib.eval.jobs import claim_results, default_result_dir
from lib.eval.temporal_consistency import FLOWS, ConsistencyByFlow, NearestSources, dis_flow, read_clip_motion
from lib.infer.backends import build_segmenter
from lib.infer.fast import EXACT, FastConfig, FastSCNet
from lib.infer.keyframe_policy import DistortionTriggered, FixedInterval, PerFrame
from lib.infer.labels import logits_to_labels
from lib.infer.streaming import StreamingSegmenter
from lib.infer.video_io import pad_to_multiple
from lib.model import load_scnet
from lib.utils.atomic import write_json
from lib.utils.config import load_config, resolve_path
from lib.utils.distributed import pick_device
from lib.utils.errors import UserError, one_line
from lib.utils.metrics import ConfusionMatrix
from lib.utils.profiling import count_flops, median_ms
from lib.utils.visualize import error_rate, plot_tradeoff

DEFAULT_INTERVALS = (2, 3, 4, 5, 6, 8, 10)
DEFAULT_QUANTILES = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9)


@dataclass
class KeyframeRun:
    """What to evaluate (the options of ``tools/eval_keyframe_policies.py``)."""
    config: str
    checkpoint: str
    opts: Sequence[str] = field(default_factory=list)
    split: Optional[str] = None  # None: eval.split
    max_clips: Optional[int] = None
    max_frames: Optional[int] = None
    timing_repeats: int = 5
    intervals: Sequence[int] = DEFAULT_INTERVALS
    thresholds: Optional[List[float]] = None  # None: quantiles of the scores seen under fixed:max_interval
    max_interval: int = 10
    stat: str = 'mean'
    out: Optional[str] = None  # None: <eval.result_root>/<experiment>
    name: str = 'keyframe_policies'  # <out>/<name>.json and <name>.png
    mark: Optional[str] = None  # a fixed:k policy to mark on the picture (the demo marks the paper's setting)
    paths: Sequence[str] = ()  # inference paths (PATHS) timed against the exact one; the fastest faithful is chosen
    device: Optional[str] = None  # None: the config's device
    progress: bool = True


def synthetic_clips(cfg, split, n_classes):
    """Whole synthetic snippets ``(frames (T, 3, H, W), labels [T x (H, W) int64], motion)``, every frame labelled;
    ``motion['ground_truth']`` is the set's flow (T-1, 2, H, W) and validity mask (T-1, H, W)."""
    root = resolve_path(cfg['data']['root'])
    offsets = snippet_offsets(synthetic_layout.read_meta(root))
    for entry in read_list(list_path_of(cfg['data'], split), 'synthetic'):
        relatives = [entry.frame(offset) for offset in offsets]
        frames = torch.stack([read_frame(os.path.join(root, rel)) for rel in relatives])
        labels, flow, valid = read_clip_motion(root, relatives, n_classes)
        yield frames, list(labels), {'ground_truth': (flow, valid)}


def pda_clips(cfg, split):
    """PDA clips ``(frames (10, 3, H, W), [None x 9, label (H, W)], {})``: only the last frame is labelled."""
    dataset = build_dataset(cfg['data'], split, 'pda')
    for index in range(len(dataset)):
        frames, label = dataset[index]
        yield frames, [None] * (len(frames) - 1) + [label], {}


def load_clips(cfg, split, n_classes, max_clips=None, max_frames=None):
    clips = synthetic_clips(cfg, split, n_classes) if cfg['data']['name'] == 'synthetic' else pda_clips(cfg, split)
    for frames, labels, motion in itertools.islice(clips, max_clips):
        if max_frames is not None:
            frames, labels = frames[:max_frames], labels[:max_frames]
            motion = {name: (flow[:max_frames - 1], None if valid is None else valid[:max_frames - 1])
                      for name, (flow, valid) in motion.items()}
        yield frames, labels, motion


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
    """Key / non-key frame counts, the confusion matrix, the temporal consistency and the distortion scores of one
    policy in one row: ``'davss'`` (non-key frames corrected, SCNet.correct) or ``'propagation'`` (propagated only)."""

    def __init__(self, policy, n_classes, device, row='davss'):
        self.policy, self.row = policy, row
        self.n_key = self.n_frames = 0
        self.confusion = ConfusionMatrix(n_classes, device=device)
        self.tc = ConsistencyByFlow(n_classes)
        self.scores = []
        self.errors = {}  # (clip, t) -> share of the labelled pixels of frame t that are wrong
        self.scored = {}  # (clip, t) -> (frames since the key frame, distortion score) of a non-key frame

    def summary(self, costs):
        """The policy's point: counts, key-frame fraction, average GFLOPs and ms per frame, mIoU, TC per flow."""
        n_nonkey = self.n_frames - self.n_key
        nonkey = costs['nonkey' if self.row == 'davss' else 'propagation']
        per_frame = {name: (self.n_key * costs['key'][name] + n_nonkey * nonkey[name]) / self.n_frames
                     for name in ('gflops', 'ms')}
        return {'policy': self.policy.name, 'row': self.row, 'frames': self.n_frames, 'key_frames': self.n_key,
                'key_fraction': self.n_key / self.n_frames, 'gflops_per_frame': per_frame['gflops'],
                'ms_per_frame': per_frame['ms'], 'miou': float(self.confusion.miou()), 'tc': self.tc.summary(),
                'mean_distortion_score': float(np.mean(self.scores)) if self.scores else None}


def run_clip(segmenter, frames, truth, tallies, device, clip, motion):
    """Stream one clip (number ``clip``) through every policy of ``tallies`` (sharing the memoised frame-wise
    networks); the TC of each row under every flow of ``motion`` ({name: NearestSources})."""
    padded, (height, width) = pad_to_multiple(frames.to(device))  # (T, 3, H', W')
    segmenter.start_clip()
    for tally in tallies:
        segmenter.policy = tally.policy
        segmenter.correct = tally.row == 'davss'
        segmenter.reset()
        predictions = []
        for t in range(len(padded)):
            labels, is_key, _ = segmenter.step(padded[t:t + 1])  # (1, H', W')
            tally.n_frames += 1
            tally.n_key += int(is_key)
            score = getattr(tally.policy, 'last_score', None)
            if not is_key and score is not None:
                tally.scores.append(score)
                tally.scored[clip, t] = (tally.policy.since_key, score)
            prediction = labels[:, :height, :width]
            predictions.append(prediction)
            if truth[t] is not None:
                target = truth[t].to(device).unsqueeze(0)
                tally.confusion.update(prediction, target)
                tally.errors[clip, t] = error_rate(prediction, target)
        tally.tc.add_clip(torch.cat(predictions), motion)


def evaluate_policies(model, clips, tallies, device, progress, desc, truth_tc=None):
    """Stream every clip through every tally's policy (updated in place; returns them), TC under the clips' own flow
    where the dataset has it and under DIS flow, an estimate independent of the model, always (so the two can be set
    side by side); ``truth_tc`` (a :class:`ConsistencyByFlow`) gets that of every clip labelled at every frame."""
    segmenter = ReplaySegmenter(model, tallies[0].policy)
    for clip, (frames, labels, motion) in enumerate(tqdm(clips, desc=desc, unit='clip', disable=not progress)):
        dis = torch.stack([dis_flow(a, b) for a, b in zip(frames[:-1], frames[1:])])
        motion = {**(motion or {}), 'dis': (dis, None)}
        motion = {name: NearestSources(flow.to(device), valid) for name, (flow, valid) in motion.items()}
        run_clip(segmenter, frames, labels, tallies, device, clip, motion)
        if truth_tc is not None and all(label is not None for label in labels):
            truth_tc.add_clip(torch.stack(labels).to(device), motion)
    return tallies


def average_ranks(values):
    """Ranks 0..n-1 of ``values``, tied values sharing the mean of their ranks (Spearman's convention)."""
    values = np.asarray(values, dtype=np.float64)
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind='stable')] = np.arange(len(values))
    _, group = np.unique(values, return_inverse=True)
    return (np.bincount(group, weights=ranks) / np.bincount(group))[group]


def spearman(x, y):
    """Spearman's rank correlation of two sequences (None when fewer than 3 pairs or one side is constant)."""
    if len(x) < 3:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    return None if rx.std() == 0 or ry.std() == 0 else float(np.corrcoef(rx, ry)[0, 1])


def score_against_loss(per_frame, reference):
    """How well DMNet's distortion score predicts what propagation costs a frame (all a distortion policy can use):
    over the labelled non-key frames of ``reference`` (never triggers: ``fixed:max_interval``), the rank correlation of
    the score with the loss = error rate of the DAVSS labels minus that of the key network (``per_frame``); also within
    each distance d, since both grow with d, which a fixed interval already knows."""
    pairs = {}
    for frame, (distance, score) in reference.scored.items():
        if frame in reference.errors and frame in per_frame.errors:
            pairs.setdefault(distance, []).append((score, reference.errors[frame] - per_frame.errors[frame]))
    every = [pair for group in pairs.values() for pair in group]
    within = {str(d): spearman(*zip(*group)) for d, group in sorted(pairs.items()) if len(group) >= 3}  # JSON keys
    measured = [rho for rho in within.values() if rho is not None]
    return {'frames': len(every), 'spearman_all': spearman(*zip(*every)) if every else None,
            'spearman_within_distance': within,
            'mean_spearman_within_distance': float(np.mean(measured)) if measured else None}


@torch.no_grad()
def measure_step_costs(model, image, previous, repeats=3):
    """GFLOPs and milliseconds of one key step, one non-key step and one propagation-only step (flow and warp, no
    correction) on ``image`` (1, 3, H, W), each ending in the frame's labels."""
    state = model.key_frame(previous)
    size, align_corners = image.shape[-2:], model.align_corners

    def propagated():
        return model.propagate(state, model.estimate_flow(image, previous))

    steps = {'key': lambda: logits_to_labels(model.key_frame(image).logits, size, align_corners),
             'nonkey': lambda: logits_to_labels(model.correct(propagated(), image)['merged'], size, align_corners),
             'propagation': lambda: logits_to_labels(propagated().logits, size, align_corners)}
    return {name: {'gflops': count_flops(step) / 1e9, 'ms': median_ms(step, repeats, image.device)}
            for name, step in steps.items()}


AGREEMENT_BAR = 0.995  # the least share of pixels a deployed path must label as the exact path does
# The paths a user may deploy, built from lib.infer's current defaults, so that their improvements count here.
PATHS = {'fast': lambda net: FastSCNet(net, FastConfig()),
         'compile': lambda net: FastSCNet(net, FastConfig(compile=True)),
         'onnxruntime': lambda net: build_segmenter(net, PerFrame(), 'onnxruntime', FastConfig()).model}


@torch.no_grad()
def stream_labels(runner, frames, interval):
    """Labels (T, H, W) of ``frames`` (T, 3, H, W) under ``runner`` (``key_step`` and ``non_key_step`` as
    lib.infer.fast.FastSCNet), a key frame every ``interval`` frames."""
    labels = []
    for t in range(len(frames)):
        if t % interval == 0:
            state, out = runner.key_step(frames[t:t + 1])
        else:
            state, out = runner.non_key_step(state, frames[t:t + 1], frames[t - 1:t])
        labels.append(out.to(frames.device))
    return torch.cat(labels)


def choose_path(builders, clips, sample, interval, repeats, bar=AGREEMENT_BAR):
    """The fastest of ``builders`` ({name: zero-argument builder of a runner with ``key_step`` / ``non_key_step``},
    the reference first) whose labels agree with the reference's on >= ``bar`` of the pixels of ``clips`` ((padded
    frames (T, 3, H', W'), (H, W))), a key frame every ``interval``; speed from medians of ``repeats`` steps on
    ``sample`` (2, 3, H', W').  Returns {bar, interval, deployed, paths}; a path that cannot run here is reported."""
    runners, paths = {}, {}
    for name, build in builders.items():
        try:
            runners[name] = build()
            stream_labels(runners[name], sample, interval)  # what a path builds on first use (compile, export)
        except (UserError, RuntimeError, ImportError, OSError) as err:
            runners.pop(name, None)
            paths[name] = {'error': one_line(err)}
    reference = next(iter(builders))
    same, total = dict.fromkeys(runners, 0), 0
    for frames, (height, width) in clips:
        labels = {name: stream_labels(runner, frames, interval)[:, :height, :width]
                  for name, runner in runners.items()}
        for name in runners:
            same[name] += int((labels[name] == labels[reference]).sum())
        total += labels[reference].numel()
    previous, current = sample[:1], sample[1:]
    for name, runner in runners.items():
        state, _ = runner.key_step(previous)
        key = median_ms(lambda r=runner: r.key_step(current), repeats, current.device)
        nonkey = median_ms(lambda r=runner, s=state: r.non_key_step(s, current, previous), repeats, current.device)
        paths[name] = {'agreement': same[name] / total, 'key_ms': key, 'nonkey_ms': nonkey,
                       'non_key_over_key_ms': nonkey / key, 'ms_per_frame': (key + (interval - 1) * nonkey) / interval}
    faithful = [name for name in runners if paths[name]['agreement'] >= bar]
    return {'bar': bar, 'interval': interval, 'deployed': min(faithful, key=lambda name: paths[name]['ms_per_frame']),
            'paths': {name: paths[name] for name in builders}}


def compare_at_equal_cost(fixed, distortion):
    """For each distortion policy: its mIoU minus the fixed curve's at the same average cost.  That cost,
    ``nonkey + key_fraction * (key - nonkey)``, is affine in the key-frame fraction, so the comparison is made on the
    fraction: it holds for FLOPs and ms alike and stays defined when both steps cost about the same."""
    fractions, mious = zip(*sorted((r['key_fraction'], r['miou']) for r in fixed))  # the fixed curve
    rows = []
    for result in distortion:
        f = result['key_fraction']  # the curve linearly interpolated there, None outside its range
        reference = float(np.interp(f, fractions, mious)) if fractions[0] <= f <= fractions[-1] else None
        rows.append({'policy': result['policy'], 'key_fraction': result['key_fraction'],
                     'gflops_per_frame': result['gflops_per_frame'], 'miou': result['miou'],
                     'fixed_miou_at_equal_cost': reference,
                     'delta_miou': None if reference is None else result['miou'] - reference})
    deltas = [row['delta_miou'] for row in rows if row['delta_miou'] is not None]
    verdict = {'compared': len(deltas), 'better': sum(d > 0 for d in deltas), 'worse': sum(d < 0 for d in deltas),
               'mean_delta_miou': float(np.mean(deltas)) if deltas else None,
               'best_delta_miou': float(max(deltas)) if deltas else None}
    return rows, verdict


def auto_thresholds(scores, quantiles=DEFAULT_QUANTILES):
    """Thresholds at quantiles of the observed distortion scores, rounded and deduplicated."""
    if not scores:
        raise UserError('no distortion scores were observed (clips of a single frame?); pass --thresholds')
    return sorted({round(float(np.quantile(scores, q)), 4) for q in quantiles})


def run_keyframe_policies(run):
    """Evaluate the policies of ``run`` (a :class:`KeyframeRun`); writes ``keyframe_policies.json`` and ``.png`` into
    its folder and returns ``(report, folder)``.  Bad input raises :class:`UserError`."""
    cfg = load_config(run.config, run.opts)
    split = run.split or cfg['eval']['split']
    n_classes = num_classes(cfg['data']['name'])
    device = pick_device(run.device or cfg['device'])
    model = load_scnet(cfg['model'], run.checkpoint, device)
    intervals = sorted({k for k in run.intervals if k > 1})
    if run.mark is not None and run.mark not in [f'fixed:{k}' for k in intervals]:
        raise UserError(f'mark "{run.mark}": expected one of the evaluated fixed:k policies (--intervals)')
    if set(run.paths) - set(PATHS):
        raise UserError(f'paths {sorted(set(run.paths) - set(PATHS))}: expected some of {sorted(PATHS)}')
    out = run.out or default_result_dir(cfg, run.checkpoint)
    folder = claim_results(out, [f'{run.name}.json', f'{run.name}.png'])
    try:
        report = evaluate_all(run, cfg, split, n_classes, device, model, intervals, run.progress)
        write_json(folder.file(f'{run.name}.json'), report, indent=2)
        counted = 'every frame' if report['every_frame_labelled'] else 'labelled frames'
        plot_tradeoff(report, folder.file(f'{run.name}.png'), f'{cfg["experiment"]}: {split}, {counted}, '
                      f'{report["frame_size"][0]}x{report["frame_size"][1]}')
        folder.drop_aside()
    finally:
        folder.release()
    return report, out


def evaluate_all(run, cfg, split, n_classes, device, model, intervals, progress):
    """Every policy of ``run`` over the clips: the report."""

    def fixed_tallies(row):
        return [PolicyTally(policy, n_classes, device, row) for policy in
                [PerFrame()] + [FixedInterval(k) for k in intervals]]

    clips = partial(load_clips, cfg, split, n_classes, run.max_clips, run.max_frames)
    reference = PolicyTally(DistortionTriggered(1.0, max_interval=run.max_interval, stat=run.stat), n_classes,
                            device)  # never triggers: the scores seen under fixed:max_interval
    truth_tc = ConsistencyByFlow(n_classes)
    tallies = evaluate_policies(model, clips(), fixed_tallies('davss') + fixed_tallies('propagation') + [reference],
                                device, progress, 'fixed intervals', truth_tc)
    thresholds = run.thresholds or auto_thresholds(reference.scores)
    score_loss = score_against_loss(tallies[0], reference)
    tallies = tallies[:-1] + evaluate_policies(
        model, clips(), [PolicyTally(DistortionTriggered(tau, max_interval=run.max_interval, stat=run.stat),
                                     n_classes, device) for tau in thresholds], device, progress,
        'distortion policies')

    frames, _, _ = next(iter(clips()))
    padded, _ = pad_to_multiple(frames[:2].to(device))
    costs = measure_step_costs(model, padded[1:2], padded[0:1], repeats=run.timing_repeats)
    paths = None
    if run.paths:
        builders = {'exact': partial(FastSCNet, model, EXACT)}
        builders.update((name, partial(PATHS[name], model)) for name in run.paths)
        paths = choose_path(builders, (pad_to_multiple(f.to(device)) for f, _, _ in clips()), padded,
                            max(intervals, default=1), run.timing_repeats)
    results = [tally.summary(costs) for tally in tallies]
    n_fixed = 1 + len(intervals)
    fixed, propagation, distortion = results[:n_fixed], results[n_fixed:2 * n_fixed], results[2 * n_fixed:]
    rows, verdict = compare_at_equal_cost(fixed, distortion)

    return {'config': run.config, 'checkpoint': run.checkpoint, 'split': split, 'device': str(device),
              'threads': torch.get_num_threads(), 'frame_size': list(frames.shape[-2:]), 'step_costs': costs,
              'non_key_over_key_flops': costs['nonkey']['gflops'] / costs['key']['gflops'],
              'non_key_over_key_ms': costs['nonkey']['ms'] / costs['key']['ms'],
              'every_frame_labelled': cfg['data']['name'] == 'synthetic', 'fixed': fixed,
              'propagation': propagation, 'distortion': distortion, 'marked': run.mark,
              'equal_cost_comparison': rows, 'verdict': verdict, 'score_vs_loss': score_loss,
              'tc_flows': {name: FLOWS[name] for name in results[0]['tc']},
              'ground_truth_tc': truth_tc.summary() or None, 'paths': paths}


def tc_columns(tc, flows):
    """``{flow: {'tc': ...}}`` -> TC in % per flow, 10 characters each."""
    values = [tc.get(flow, {}).get('tc') for flow in flows]
    return ''.join(f' {"-":>9s}' if value is None else f' {100 * value:9.2f}' for value in values)


def path_lines(paths):
    """The deployed inference path against the exact one and the other candidates: agreement and milliseconds."""
    lines = [f'inference path deployed: {paths["deployed"]}, the fastest whose labels agree with the exact path\'s on '
             f'>= {100 * paths["bar"]:.1f}% of the pixels (key frame every {paths["interval"]})',
             f'{"path":14s}{"agreement (%)":>14s}{"key ms":>9s}{"non-key ms":>12s}{"non-key/key":>13s}'
             f'{"ms/frame":>10s}']
    for name, p in paths['paths'].items():
        lines.append(f'{name:14s}  not run here: {p["error"]}' if 'error' in p else
                     f'{name:14s}{100 * p["agreement"]:14.2f}{p["key_ms"]:9.1f}{p["nonkey_ms"]:12.1f}'
                     f'{100 * p["non_key_over_key_ms"]:12.1f}%{p["ms_per_frame"]:10.1f}')
    return lines


def format_table(report):
    """The report as a text table (TC in % per flow), the deployed path and a one-line verdict."""
    flows = list(report['tc_flows'])
    lines = [f'{"policy":32s} {"key%":>6s} {"GFLOPs/f":>9s} {"ms/f":>8s} {"mIoU":>7s}' +
             ''.join(f' {"TC " + flow[:6]:>9s}' for flow in flows)]
    for r in report['fixed'] + report['propagation'][1:] + report['distortion']:
        name = r['policy'] + (' (propagation only)' if r['row'] == 'propagation' else '')
        lines.append(f'{name:32s} {100 * r["key_fraction"]:6.1f} {r["gflops_per_frame"]:9.3f} '
                     f'{r["ms_per_frame"]:8.2f} {100 * r["miou"]:7.2f}' + tc_columns(r['tc'], flows))
    if report['ground_truth_tc']:
        lines.append(f'{"ground truth (TC ceiling)":66s}' + tc_columns(report['ground_truth_tc'], flows))
    lines += [f'TC flow {flow}: {text}' for flow, text in report['tc_flows'].items()]
    if report['paths']:
        lines += path_lines(report['paths'])
    verdict = report['verdict']
    if verdict['compared']:
        lines.append(f'distortion vs fixed at equal cost: better in {verdict["better"]}, worse in {verdict["worse"]} '
                     f'of {verdict["compared"]} settings; delta mIoU mean {100 * verdict["mean_delta_miou"]:+.2f}, '
                     f'best {100 * verdict["best_delta_miou"]:+.2f} points')
    else:
        lines.append('distortion vs fixed: no distortion setting fell inside the fixed curve\'s cost range')
    tracking = report['score_vs_loss']
    if tracking['mean_spearman_within_distance'] is not None:
        lines.append(f'distortion score vs the frame\'s loss to the key network ({tracking["frames"]} frames): '
                     f'Spearman {tracking["spearman_all"]:+.2f} over all, '
                     f'{tracking["mean_spearman_within_distance"]:+.2f} within a distance d (mean over d)')
    return '\n'.join(lines)
