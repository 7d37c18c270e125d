"""Confusion-matrix segmentation metrics (per-class IoU, mIoU), accumulated on the device of the predictions."""
import torch

from lib.utils import distributed

IGNORE_INDEX = 255  # the label value of pixels that no loss and no metric counts (every dataset's "void")


class ConfusionMatrix:
    """``matrix[g, p]`` counts pixels of ground-truth class ``g`` (``ignore_index`` skipped) predicted as ``p``;
    a class absent from both has IoU NaN, which ``miou`` leaves out (a val set without trains is not punished)."""

    def __init__(self, n_classes, ignore_index=IGNORE_INDEX, device=None):
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)

    @property
    def device(self):
        return self.matrix.device

    def update(self, pred, gt):
        """Add a batch: ``pred`` and ``gt`` integer label maps of the same shape (tensors or numpy arrays)."""
        pred, gt = (torch.as_tensor(x, dtype=torch.int64, device=self.device).reshape(-1) for x in (pred, gt))
        if pred.shape != gt.shape:
            raise ValueError(f'ConfusionMatrix.update: pred has {pred.numel()} pixels but gt has {gt.numel()}')
        keep = gt != self.ignore_index
        pred, gt = pred[keep], gt[keep]
        n = self.n_classes
        if gt.numel() and (gt.min() < 0 or gt.max() >= n):
            raise ValueError(f'ConfusionMatrix.update: ground truth values must be in [0, {n}) or '
                             f'{self.ignore_index}, found {int(gt.min())}..{int(gt.max())}')
        if pred.numel() and (pred.min() < 0 or pred.max() >= n):
            raise ValueError(f'ConfusionMatrix.update: predictions must be in [0, {n}), '
                             f'found {int(pred.min())}..{int(pred.max())}')
        self.matrix += torch.bincount(gt * n + pred, minlength=n * n).view(n, n)
        return self

    def iou(self):
        """Per-class IoU, float64 tensor ``(n_classes,)``; NaN for classes absent from both gt and pred."""
        m = self.matrix.double()
        true_positive = m.diag()
        union = m.sum(0) + m.sum(1) - true_positive
        return true_positive / union  # 0 / 0 -> NaN by design

    def miou(self):
        """Mean IoU over the classes with a defined IoU (a Python float; NaN if the matrix is empty)."""
        return float(torch.nanmean(self.iou()))

    def pixel_accuracy(self):
        total = self.matrix.sum()
        return float(self.matrix.diag().sum().double() / total) if total > 0 else float('nan')

    def all_reduce(self):
        """Sum the matrices of all processes (no-op unless torch.distributed is initialised)."""
        distributed.all_reduce_sum(self.matrix)
        return self
