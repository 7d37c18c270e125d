"""Validation of each training stage on a held-out split; every function returns totals over all ranks.

- segmentation: per-frame mIoU of DeepLab (``'image'`` loader);
- flow: end-point error of FlowNetS (``'flow'`` loader);
- dmnet: the paper's DMNet check, the L1 distance between the upsampled distortion map and the mask of pixels
  where the propagated prediction disagrees with DeepLab's prediction on the same frame, per key distance;
- correction: the PDA mIoU per key distance (``lib.engine.pda.evaluate_pda``).

Each function iterates the loader it is given (``lib.dataset.build_eval_loader``: under torch.distributed each
rank's share, without padding, so nothing is counted twice) and all-reduces the sums.
"""
import torch
from tqdm import tqdm

from lib.engine.pda import evaluate_pda
from lib.engine.stage_nets import end_point_error, quarter_resolution_flow, upsample_to
from lib.utils import distributed
from lib.utils.metrics import ConfusionMatrix


def _progress(loader, desc, enabled):
    return tqdm(loader, desc=desc, leave=False, disable=not (enabled and distributed.is_main_process()))


@torch.no_grad()
def validate_segmentation(net, loader, n_classes, device, progress=True):
    """Per-frame mIoU of ``net.deeplab`` at full resolution; returns ``{'miou', 'iou'}``."""
    net.eval()
    meter = ConfusionMatrix(n_classes, device=device)
    for image, label in _progress(loader, 'val', progress):
        image, label = image.to(device), label.to(device)
        meter.update(net.predict(image).argmax(1), label)
    meter.all_reduce()
    return {'miou': float(meter.miou()), 'iou': meter.iou().tolist()}


@torch.no_grad()
def validate_flow(net, loader, device, progress=True):
    """End-point errors of ``net.flownet``: ``epe`` on the 1/4 grid in 1/4-resolution pixels (the training loss)
    and ``epe_full`` at full resolution in full-resolution pixels (prediction upsampled x4, values x4)."""
    net.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # quarter EPE sum, pixels, full EPE sum, pixels
    for frames, flow in _progress(loader, 'val', progress):
        frames, flow = frames.to(device), flow.to(device)
        pred = net.predict(frames)  # (N, 2, H/4, W/4)
        quarter = end_point_error(pred, quarter_resolution_flow(flow, pred.shape[-2:], net.align_corners))
        full = end_point_error(upsample_to(pred, flow.shape[-2:], net.align_corners) * 4.0, flow)
        sums += torch.tensor([quarter.sum().item(), quarter.numel(), full.sum().item(), full.numel()],
                             dtype=torch.float64, device=device)
    distributed.all_reduce_sum(sums)
    return {'epe': (sums[0] / sums[1]).item(), 'epe_full': (sums[2] / sums[3]).item()}


def _distortion_l1(net, frames, distance):
    """Mean |distortion - disagreement| at the last frame of ``frames`` (N, T, 3, H, W), key at T-1-distance."""
    last = frames.shape[1] - 1
    state = net.key_frame(frames[:, last - distance])
    for j in range(last - distance, last):
        state = net.propagate(state, net.estimate_flow(frames[:, j + 1], frames[:, j]))
    current = frames[:, last]
    distortion = net.to_full_resolution(net.distortion(state, current))  # (N, 1, H, W)
    disagree = net.to_full_resolution(state.logits).argmax(1) != net.segment(current)  # (N, H, W)
    return (distortion[:, 0] - disagree.float()).abs()  # (N, H, W)


@torch.no_grad()
def validate_distortion(net, loader, distances, device, progress=True):
    """DMNet check on a ``'pda'`` loader: ``{'l1_d<d>': ..., 'l1': mean over distances}`` (lower is better)."""
    net.eval()
    sums = torch.zeros(len(distances), 2, dtype=torch.float64, device=device)  # per distance: error sum, pixels
    for frames, _ in _progress(loader, 'val', progress):
        frames = frames.to(device)
        for i, d in enumerate(distances):
            error = _distortion_l1(net, frames, d)
            sums[i, 0] += error.sum().item()
            sums[i, 1] += error.numel()
    distributed.all_reduce_sum(sums)
    per_distance = (sums[:, 0] / sums[:, 1]).tolist()
    result = {f'l1_d{d}': value for d, value in zip(distances, per_distance)}
    result['l1'] = sum(per_distance) / len(per_distance)
    return result


def validate_pda(net, loader, n_classes, distances, device, progress=True):
    """PDA mIoU of the corrected predictions: ``{'miou_d<d>': ..., 'miou': mean over distances}``."""
    out = evaluate_pda(net, loader, n_classes, distances=distances, device=device, per_frame=False,
                       propagation_only=False, progress=progress)
    result = {f'miou_d{d}': value for d, value in zip(out['distances'], out['davss']['miou'])}
    result['miou'] = out['davss']['mean_miou']
    return result
