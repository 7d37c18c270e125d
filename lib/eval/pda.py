"""PDA evaluation: mIoU as a function of the distance d between the key frame and the labelled frame.

Protocol (the paper's test script): a ``'pda'`` clip ``[t-9, ..., t]`` is labelled at ``t``; DeepLab's 1/4 logits
and 1/4 image of key frame ``t-d`` are carried to ``t`` by FlowNet + warp, corrected at ``t`` by DMNet and CFNet, and
the argmax goes into one confusion matrix per d.  Reference rows: the key network on ``t`` (``per_frame``, an upper
bound) and the uncorrected propagation (``propagation_only``, the DFF-style baseline).

Exact and fast: the pair flows and CFNet on ``t`` run once per clip, the key states of all distances are warped as
one batch, and every network call keeps the batch size of a loop over distances (a larger batch may round
differently; ``batched=True`` gives that up for speed).  Several ``align_corners`` conventions (the original's test
scripts disagree) share one pass of the networks that ignore it.
"""
import copy
import math
import time

import torch
from tqdm import tqdm

from lib.dataset.build import PDA_CLIP_LENGTH
from lib.utils import distributed
from lib.utils.errors import UserError
from lib.utils.metrics import ConfusionMatrix


def check_distances(distances):
    """Sorted unique distances, each in ``1 .. PDA_CLIP_LENGTH - 1``."""
    distances = sorted({int(d) for d in distances})
    if not distances or distances[0] < 1 or distances[-1] > PDA_CLIP_LENGTH - 1:
        raise UserError(f'distances must lie in 1..{PDA_CLIP_LENGTH - 1}, got {distances}')
    return distances


def _cat_states(states):
    return type(states[0])(*(torch.cat(parts, 0) for parts in zip(*states)))


def _split_state(state, chunks):
    parts = [torch.chunk(field, chunks, 0) for field in state]
    return [type(state)(*fields) for fields in zip(*parts)]


def _pair_flows(model, frames, first, batched):
    """Flows carrying frame j onto frame j+1 for j = first .. T-2, each (N, 2, h, w)."""
    last = frames.shape[1] - 1
    if not batched:
        return [model.estimate_flow(frames[:, j + 1], frames[:, j]) for j in range(first, last)]
    n = frames.shape[0]
    cur = frames[:, first + 1:last + 1].transpose(0, 1).flatten(0, 1)  # (P*N, 3, H, W), pair-major
    prev = frames[:, first:last].transpose(0, 1).flatten(0, 1)
    return list(model.estimate_flow(cur, prev).split(n, 0))


def _with_images(state, image, others):
    """``state`` whose 1/4 image also holds the 1/4 ``image`` of each model in ``others`` (3 channels each, after
    the model's own): the warp treats channels alike, so one warp per step carries every convention's key image."""
    if not others:
        return state
    quarters = [state.image] + [other.to_quarter_resolution(image) for other in others]
    return state._replace(image=torch.cat(quarters, 1))


def _key_states(model, frames, distances, per_frame, batched, others=()):
    """DeepLab states of the key frames t-d (dict d -> state) and, if asked, of frame t itself (or None)."""
    last = frames.shape[1] - 1
    indices = [last - d for d in distances] + ([last] if per_frame else [])
    if batched:
        stacked = frames[:, indices].transpose(0, 1).flatten(0, 1)  # (K*N, 3, H, W), key-major
        states = _split_state(_with_images(model.key_frame(stacked), stacked, others), len(indices))
    else:
        states = [_with_images(model.key_frame(frames[:, i]), frames[:, i], others) for i in indices]
    keys = dict(zip(distances, states))
    return keys, (states[-1] if per_frame else None)


def _propagate_to_target(model, keys, flows):
    """Carry every key state to the last frame; dict d -> state at t.  ``flows[s]`` carries frame ``t - len(flows) + s``
    one step, so distance ``d`` joins the batch (ordered by joining) before step ``len(flows) - d``."""
    joined, batch = [], None
    for step, flow in enumerate(flows):
        distance = len(flows) - step
        if distance in keys:
            batch = keys[distance] if batch is None else _cat_states([batch, keys[distance]])
            joined.append(distance)
        batch = model.propagate(batch, flow.repeat(len(joined), 1, 1, 1))
    return dict(zip(joined, _split_state(batch, len(joined))))


def _labels(model, logits, size):
    """(N, C, h, w) -> (N, H, W) argmax at the frame size; maps a model merged at 1/4 resolution are upsampled
    first (a wrapper such as ``lib.infer.fast.FastSCNet`` may do so; SCNet already returns full resolution)."""
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = model.to_full_resolution(logits)
    return logits.argmax(1)


def _rows(model, states, current, correction, distances, target_state, propagation_only, batched):
    """The PDA rows of one resize convention (the model's) from the states carried to frame t."""
    size = current.shape[-2:]
    davss, propagated = {}, {}
    if batched:
        k = len(distances)
        out = model.correct(_cat_states([states[d] for d in distances]), current.repeat(k, 1, 1, 1),
                            correction=correction.repeat(k, 1, 1, 1))
        davss = dict(zip(distances, _labels(model, out['merged'], size).chunk(k, 0)))  # d -> (N, H, W)
        propagated = dict(zip(distances, _labels(model, out['propagated'], size).chunk(k, 0)))
    else:
        for d in distances:
            out = model.correct(states[d], current, correction=correction)
            davss[d] = _labels(model, out['merged'], size)  # (N, H, W)
            propagated[d] = _labels(model, out['propagated'], size)
    per_frame = _labels(model, target_state.logits, size) if target_state is not None else None
    return {'davss': davss, 'propagation_only': propagated if propagation_only else None, 'per_frame': per_frame}


@torch.no_grad()
def predict_conventions(model, frames, distances, conventions, per_frame=True, propagation_only=True,
                        batched=False):
    """Full-resolution predictions of every PDA row for a batch of clips under each resize convention (DeepLab,
    FlowNetS, the logit warps and CFNet run once for all).

    Args:
        model: an ``SCNet`` in eval mode; frames: (N, T, 3, H, W) clips ``[t-T+1, ..., t]`` on its device.
        distances: sorted, in ``1 .. T-1``; conventions: ``align_corners`` values; the flags: as :func:`evaluate_pda`.
    Returns:
        per convention, ``{'davss', 'propagation_only': {d: (N, H, W) int64} or None, 'per_frame': (N, H, W) int64
        or None}``.
    """
    # Another convention is a shallow copy of ``model``: it shares every sub-network and weight.
    views = [model if ac == model.align_corners else copy.copy(model) for ac in conventions]
    for view, ac in zip(views, conventions):
        view.align_corners = ac
    model, others = views[0], views[1:]
    current = frames[:, -1]  # (N, 3, H, W)
    first = frames.shape[1] - 1 - max(distances)
    keys, target_state = _key_states(model, frames, distances, per_frame, batched, others)
    flows = _pair_flows(model, frames, first, batched)
    states = _propagate_to_target(model, keys, flows)
    correction = model.cfnet(current)  # (N, C, h, w): one CFNet pass serves every distance and convention
    rows = []
    for k, view in enumerate(views):
        own = {d: s._replace(image=s.image[:, 3 * k:3 * k + 3].contiguous()) for d, s in states.items()}
        rows.append(_rows(view, own, current, correction, distances, target_state, propagation_only, batched))
    return rows


def _meters(n_classes, distances, per_frame, propagation_only, device):
    per_distance = lambda: [ConfusionMatrix(n_classes, device=device) for _ in distances]  # noqa: E731
    return {'davss': per_distance(), 'propagation_only': per_distance() if propagation_only else None,
            'per_frame': [ConfusionMatrix(n_classes, device=device)] if per_frame else None}


def _update(meters, preds, label, distances):
    for i, d in enumerate(distances):
        meters['davss'][i].update(preds['davss'][d], label)
        if meters['propagation_only']:
            meters['propagation_only'][i].update(preds['propagation_only'][d], label)
    if meters['per_frame']:
        meters['per_frame'][0].update(preds['per_frame'], label)


def _reduce(meters):
    """Rows and confusion matrices of one convention, summed over the processes."""
    rows = {'confusion': {}}
    for name, row in meters.items():
        if row is None:
            rows[name] = None
            continue
        for meter in row:
            meter.all_reduce()
        miou = [float(m.miou()) for m in row]
        rows[name] = {'miou': miou, 'iou': [m.iou().tolist() for m in row], 'mean_miou': float(sum(miou) / len(miou))}
        rows['confusion'][name] = [m.matrix.cpu().tolist() for m in row]
    if rows['per_frame']:
        rows['per_frame'] = {'miou': rows['per_frame']['miou'][0], 'iou': rows['per_frame']['iou'][0]}
    return rows


def evaluate_pda(model, loader, n_classes, distances=range(1, PDA_CLIP_LENGTH), device='cpu', per_frame=True,
                 propagation_only=True, progress=True, batched=False, on_predictions=None, conventions=None):
    """Run the PDA protocol over a ``'pda'`` loader; every rank returns the totals (matrices all-reduced).

    Args:
        model: an ``SCNet`` (left in eval mode); device: where it lives (clips are moved there).
        loader: ``(frames (N, 10, 3, H, W), label (N, H, W))`` batches (:func:`lib.dataset.build_eval_loader`).
        n_classes: classes of the labels (255 ignored); distances: key-frame distances to report.
        per_frame, propagation_only: the two reference rows; progress: a tqdm bar (main process only).
        batched: each sub-network once over all distances (faster, may flip a few pixels).
        on_predictions: optional ``f(clip_indices, preds)`` per batch, with the first convention's predictions.
        conventions: ``align_corners`` values to report, the headline first; None: the model's own.
    Returns:
        ``{'distances', 'align_corners' (the headline), 'davss': {'miou': [per d], 'iou': [[per class] per d],
        'mean_miou'}, 'propagation_only': same or None, 'per_frame': {'miou', 'iou'} or None, 'confusion': {row:
        matrices}, 'other_protocols': [the same per further convention], 'n_clips', 'seconds'}``; a class absent
        from prediction and labels has IoU NaN, left out of the mean.
    """
    distances = check_distances(distances)
    conventions = [model.align_corners] if conventions is None else list(conventions)
    indices = list(loader.sampler)  # the dataset index of every clip the loader visits, in its order
    model.eval()
    meters = [_meters(n_classes, distances, per_frame, propagation_only, device) for _ in conventions]
    start = time.perf_counter()
    bar = tqdm(total=len(indices), unit='clip', desc='PDA', disable=not (progress and distributed.is_main_process()))
    done = 0
    for frames, label in loader:
        frames = frames.to(device, non_blocking=True)
        label = label.to(device, non_blocking=True)
        preds = predict_conventions(model, frames, distances, conventions, per_frame, propagation_only, batched)
        if on_predictions is not None:  # the loader visits this rank's clips in the order of ``indices``
            on_predictions(indices[done:done + frames.shape[0]], preds[0])
        done += frames.shape[0]
        for convention_meters, convention_preds in zip(meters, preds):
            _update(convention_meters, convention_preds, label, distances)
        bar.update(frames.shape[0])
    bar.close()
    rows = [_reduce(m) for m in meters]
    n_clips = int(distributed.all_reduce_sum(torch.tensor([done], dtype=torch.int64, device=device)).item())
    others = [{'align_corners': ac, **r} for ac, r in zip(conventions[1:], rows[1:])]
    return {'distances': distances, 'n_clips': n_clips, 'seconds': time.perf_counter() - start,
            'align_corners': conventions[0], **rows[0], 'other_protocols': others}


# The original test script each resize convention of a dataset comes from, recorded with the numbers.
TEST_SCRIPTS = {
    ('cityscapes', False): 'jfzhuang/DAVSS 148b579 test_PDA.py (the last version: the resize defaults)',
    ('cityscapes', True): 'jfzhuang/DAVSS a03c1ea test_PDA.py (the code of the published weights)',
    ('camvid', True): 'jfzhuang/DAVSS test_PDA.py of CamVid (every version)',
}


def eval_conventions(cfg):
    """The resize conventions (``align_corners``) a PDA run reports, the headline first: ``eval.align_corners``
    (one value or a list), or ``model.align_corners`` when that is null."""
    chosen = cfg['eval']['align_corners']
    if chosen is None:
        return [cfg['model']['align_corners']]
    return list(chosen) if isinstance(chosen, list) else [chosen]


def protocol(cfg, align_corners, batched):
    """What the evaluation did under one convention, in words and flags, for ``pda.json`` / ``pda.md``."""
    ac = bool(align_corners)
    key = 'model.align_corners' if cfg['eval']['align_corners'] is None else 'eval.align_corners'
    return {'align_corners': ac, 'source': TEST_SCRIPTS.get((cfg['data']['name'], ac), key),
            'tf32': bool(cfg['eval']['tf32']), 'batched': bool(batched),
            'flow': 'flownet(cat[frame j+1, frame j]) for j = t-d .. t-1, warping the logits and the 1/4 key image',
            'resizes': f'bilinear, align_corners={ac}: key image and frame t to 1/4; logits, distortion and '
                       f'correction x4 to full resolution',
            'merge': 'argmax of propagated * (1 - distortion) + correction * distortion at full resolution'}


def _percent(value):
    return '-' if value is None or math.isnan(value) else f'{100 * value:.2f}'


def format_markdown(result, class_names=None):
    """The result of :func:`evaluate_pda` as two Markdown tables: mIoU per distance, then IoU per class."""
    distances = result['distances']
    davss, prop, per_frame = result['davss'], result['propagation_only'], result['per_frame']
    header = ['distance', 'DAVSS mIoU'] + (['propagation only mIoU'] if prop else [])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---:|' * len(header)]
    for i, d in enumerate(distances):
        cells = [str(d), _percent(davss['miou'][i])] + ([_percent(prop['miou'][i])] if prop else [])
        lines.append('| ' + ' | '.join(cells) + ' |')
    mean = ['mean', _percent(davss['mean_miou'])] + ([_percent(prop['mean_miou'])] if prop else [])
    lines.append('| ' + ' | '.join(mean) + ' |')
    if per_frame:
        lines += ['', f'Per-frame key network on frame t (upper bound): mIoU {_percent(per_frame["miou"])}']

    n_classes = len(davss['iou'][0])
    names = list(class_names) if class_names else [str(c) for c in range(n_classes)]
    header = ['class'] + [f'd={d}' for d in distances] + (['per frame'] if per_frame else [])
    lines += ['', 'DAVSS IoU per class and distance:', '',
              '| ' + ' | '.join(header) + ' |', '|---|' + '---:|' * (len(header) - 1)]
    for c in range(n_classes):
        cells = [names[c]] + [_percent(davss['iou'][i][c]) for i in range(len(distances))]
        cells += [_percent(per_frame['iou'][c])] if per_frame else []
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'
