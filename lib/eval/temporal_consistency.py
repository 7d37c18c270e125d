"""Temporal consistency (TC) of a segmented video: how much the labels of frame t-1, carried to frame t by optical
flow, agree with the labels of frame t.

Definition (Liu et al., "Efficient Semantic Video Segmentation with Per-frame Inference", ECCV 2020, their
``tool/eval_tc.py``): the flow warping error of Lai et al. (ECCV 2018) with mIoU for the squared error, over ONE
confusion matrix summed over every pair of every snippet.  Here:

    counted(p) = carried(p) and valid(p) and cur[p] != 255 and prev[src(p)] != 255
    src(p)     = (floor(x + dx + 1/2), floor(y + dy + 1/2))        NEAREST pixel, so class ids never mix
    carried(p) = src(p) lies inside the frame (a source outside it is not clamped to the border)
    TC         = mIoU of the matrix of (cur[p], prev[src(p)]) over the counted pixels, classes present only
    agreement  = fraction of counted pixels with cur[p] == prev[src(p)] (the matrix's pixel accuracy)

Unlike the ETC code: nearest, not bilinear, warping of class ids (bilinear invents classes at every boundary);
sources outside the frame and pixels not ``valid`` (occluded in t-1) are excluded; backward flow, ``cur[y, x] ~
prev[y + dy, x + dx]``; classes absent from both maps are left out of the mean, not counted as 0.

The synthetic ground truth under its own flow stays just below TC = 1 (``valid``: the same surface, not the same
label).  :func:`dis_flow` (OpenCV DIS) is independent of the model under test (its own FlowNetS would make propagated
labels consistent by construction) but has no occlusion mask: compare rows under the same flow only.
"""
import os

import cv2
import numpy as np
import torch

from lib.dataset import io
from lib.dataset import synthetic_layout as layout
from lib.utils.metrics import IGNORE_INDEX, ConfusionMatrix


class NearestSources:
    """The pixel of frame t-1 that each pixel of frame t reads its label from, nearest to the source position of the
    backward ``flow`` (N, 2, H, W) (halves rounded up); computed once per clip, applied to every row of labels.
    ``valid``: optional (N, H, W) bool, False where the point seen in t was not visible in t-1.  Attributes:
    ``index`` (N, H * W) int64 ``round(y + dy) * W + round(x + dx)``; ``carried`` (N, H, W) bool, False where the
    source is outside the frame, the flow not finite or not ``valid``."""

    def __init__(self, flow, valid=None):
        if flow.dim() != 4 or flow.shape[1] != 2 or (valid is not None and valid.shape != flow[:, 0].shape):
            raise ValueError(f'NearestSources: expected flow (N, 2, H, W) and valid (N, H, W), got '
                             f'{tuple(flow.shape)} and {None if valid is None else tuple(valid.shape)}')
        n, _, h, w = flow.shape
        # float64 positions: x + dx is then exact for any float32 flow, so the rounding is the one a reader expects.
        flow = flow.double()
        x = torch.arange(w, device=flow.device, dtype=torch.float64).view(1, 1, w) + flow[:, 0]
        y = torch.arange(h, device=flow.device, dtype=torch.float64).view(1, h, 1) + flow[:, 1]
        finite = torch.isfinite(x) & torch.isfinite(y)
        col = torch.floor(torch.where(finite, x, -1.0) + 0.5)
        row = torch.floor(torch.where(finite, y, -1.0) + 0.5)
        self.carried = finite & (col >= 0) & (col <= w - 1) & (row >= 0) & (row <= h - 1)
        if valid is not None:
            self.carried &= valid.to(device=flow.device, dtype=torch.bool)
        self.index = (row.clamp(0, h - 1).long() * w + col.clamp(0, w - 1).long()).view(n, h * w)

    def warp(self, labels):
        """(N, H, W) integer labels of frame t-1 -> (N, H, W) int64 carried to t, ``IGNORE_INDEX`` where not carried."""
        if labels.shape != self.carried.shape:
            raise ValueError(f'NearestSources.warp: expected labels {tuple(self.carried.shape)}, got '
                             f'{tuple(labels.shape)}')
        warped = labels.long().view(len(labels), -1).gather(1, self.index).view_as(labels)
        return torch.where(self.carried, warped, IGNORE_INDEX)


class TemporalConsistency:
    """Accumulates TC and label agreement over consecutive frame pairs (see the module docstring): :meth:`update`
    with every pair of every clip (one per batch element), then :meth:`result`; ``matrix[cur, warped prev]``."""

    def __init__(self, n_classes, device=None):
        self.confusion = ConfusionMatrix(n_classes, device=device)
        self.pairs = 0
        self.not_carried = 0  # labelled pixels of the current frames that the flow cannot carry

    def update(self, labels_prev, labels_cur, flow, valid=None):
        """Add pairs (t-1, t): ``labels_prev``, ``labels_cur`` (N, H, W) or (H, W) integer labels (255 = ignore);
        ``flow`` (N, 2, H, W) or (2, H, W) backward flow, ``cur[y, x] ~ prev[y + dy, x + dx]``, or the
        :class:`NearestSources` of a flow and its ``valid``; ``valid`` optional (N, H, W) or (H, W) bool."""
        device = self.confusion.device
        labels_prev, labels_cur = labels_prev.to(device), labels_cur.to(device)
        if labels_cur.dim() == 2:
            labels_prev, labels_cur, flow = labels_prev[None], labels_cur[None], flow[None]
            valid = None if valid is None else valid[None]
        if labels_prev.shape != labels_cur.shape:
            raise ValueError(f'TemporalConsistency.update: labels_prev {tuple(labels_prev.shape)} and labels_cur '
                             f'{tuple(labels_cur.shape)} differ')
        n = self.confusion.n_classes
        for labels in (labels_prev, labels_cur):
            if labels.numel() and (labels.min() < 0 or labels.max() >= n) and bool(
                    ((labels < 0) | (labels >= n) & (labels != IGNORE_INDEX)).any()):
                raise ValueError(f'TemporalConsistency.update: labels must be in [0, {n}) or {IGNORE_INDEX}')
        sources = flow if isinstance(flow, NearestSources) else NearestSources(flow.to(device), valid)
        warped, carried = sources.warp(labels_prev), sources.carried
        labelled = labels_cur != IGNORE_INDEX
        counted = labelled & carried & (warped != IGNORE_INDEX)
        # matrix[cur, warped prev] by one bincount over every pixel, those not counted in an extra bin n * n: no
        # boolean indexing, which costs more than the rest together (every row of every clip comes through here).
        pair = torch.where(counted, labels_cur.long() * n + warped, n * n)
        self.confusion.matrix += torch.bincount(pair.view(-1), minlength=n * n + 1)[:n * n].view(n, n)
        self.pairs += labels_cur.shape[0]
        self.not_carried += int((labelled & ~carried).sum())
        return self

    def result(self):
        """dict: ``tc`` (mIoU), ``agreement`` (fraction unchanged), ``iou`` (per class, NaN if absent), ``pairs``,
        ``counted`` (pixels compared) and ``not_carried`` (labelled pixels excluded because the flow cannot carry
        them); ``tc`` and ``agreement`` are NaN when nothing was counted."""
        return {'tc': self.confusion.miou(), 'agreement': self.confusion.pixel_accuracy(),
                'iou': self.confusion.iou().tolist(), 'pairs': self.pairs,
                'counted': int(self.confusion.matrix.sum()), 'not_carried': self.not_carried}


def read_clip_motion(root, relatives, n_classes):
    """Ground-truth ``labels`` (T, H, W) int64, ``flow`` (T-1, 2, H, W) float32 and ``valid`` (T-1, H, W) bool of
    consecutive frames ``relatives`` (paths relative to the synthetic set ``root``, first frame first), in
    :class:`TemporalConsistency`'s convention: pair i carries frame i onto frame i + 1 (the later frame's flow file)."""
    if len(relatives) < 2:
        raise ValueError(f'read_clip_motion: expected at least 2 consecutive frames, got {list(relatives)}')
    labels = torch.stack([io.read_label(os.path.join(root, layout.sequence_label_path(rel)), n_classes)
                          for rel in relatives])
    motion = [io.read_flow(os.path.join(root, layout.flow_path(rel)), labels.shape[1:]) for rel in relatives[1:]]
    return labels, torch.stack([f for f, _ in motion]), torch.stack([v for _, v in motion])


# What the flows of :class:`ConsistencyByFlow` are, as reports state it.
FLOWS = {'ground_truth': "the synthetic set's own flow, its occlusion mask excluding what t-1 did not show",
         'dis': 'OpenCV DIS (preset MEDIUM) on the frames: an estimate independent of the model, every carried '
                'pixel counted'}


class ConsistencyByFlow(dict):
    """TC of one row of labels under several flows, ``{flow name: TemporalConsistency}``, filled clip by clip."""

    def __init__(self, n_classes):
        super().__init__()
        self.n_classes = n_classes

    def add_clip(self, labels, motion):
        """Every consecutive pair of one clip: ``labels`` (T, H, W) integer labels of its frames, ``motion``
        ``{flow name: NearestSources}`` of its T-1 pairs, pair i = frames (i, i+1)."""
        for name, sources in motion.items():
            if name not in self:
                self[name] = TemporalConsistency(self.n_classes, device=labels.device)
            self[name].update(labels[:-1], labels[1:], sources)
        return self

    def summary(self):
        """``{flow name: {tc, agreement, pairs, counted}}`` (None where nothing was counted), for a JSON report."""
        return {name: {key: None if value != value else value for key, value in tc.result().items() if key in
                       ('tc', 'agreement', 'pairs', 'counted')} for name, tc in self.items()}


def dis_flow(prev_rgb, cur_rgb):
    """(3, H, W) float RGB frames in [0, 1] -> (2, H, W) float32 CPU backward flow (dx, dy), ``cur[y, x] ~
    prev[y + dy, x + dx]``, estimated independently of the segmentation model: OpenCV's DIS, preset MEDIUM."""
    if prev_rgb.dim() != 3 or prev_rgb.shape[0] != 3 or prev_rgb.shape != cur_rgb.shape:
        raise ValueError(f'dis_flow: expected two (3, H, W) frames, got {tuple(prev_rgb.shape)} and '
                         f'{tuple(cur_rgb.shape)}')
    prev_gray, cur_gray = _gray_uint8(prev_rgb), _gray_uint8(cur_rgb)
    # DIS computes I0(p) ~ I1(p + flow(p)) on I0's grid: the current frame as I0 gives the backward flow.
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(cur_gray, prev_gray, None)  # (H, W, 2)
    return torch.from_numpy(flow).permute(2, 0, 1).contiguous()


def _gray_uint8(rgb):
    """(3, H, W) float RGB in [0, 1] -> (H, W) uint8 luma (DIS works on 8-bit single-channel images)."""
    hwc = (rgb.detach().float().cpu().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return cv2.cvtColor(np.ascontiguousarray(hwc), cv2.COLOR_RGB2GRAY)
