"""Training wrappers of the two networks that are pretrained alone: DeepLab (segmentation) and FlowNetS (flow).

Each wrapper holds its network under the attribute name SCNet uses (``deeplab``, ``flownet``), so its state dict
has the SCNet key layout (``deeplab.*``, ``flownet.*``) and a checkpoint of the stage is directly the
``init.deeplab`` / ``init.flownet`` of the later stages.  ``forward`` returns the loss by name, as SCNet's does,
which lets DistributedDataParallel and the training engine treat every stage alike.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.model.deeplabv3plus import DeepLabV3Plus
from lib.model.flownet import FlowNetS
from lib.utils.metrics import IGNORE_INDEX


def set_bn_momentum(module, momentum):
    """Give every BatchNorm2d of ``module`` this momentum (config ``train.bn_momentum``); returns ``module``."""
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.momentum = momentum
    return module


def upsample_to(x, size, align_corners):
    """(N, C, h, w) -> (N, C, *size), bilinear."""
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=align_corners)


class SegmentationStageNet(nn.Module):
    """The key-frame network trained per frame with cross-entropy (255 = ignore) at full resolution.

    Args:
        n_classes: number of classes.
        align_corners: the x4 resize of the 1/4-resolution logits to the label size.
        deeplab: keyword arguments of :class:`DeepLabV3Plus`.
    """

    def __init__(self, n_classes, align_corners=True, deeplab=None):
        super().__init__()
        self.align_corners = align_corners
        self.deeplab = DeepLabV3Plus(n_classes, **(deeplab or {}))

    def predict(self, image):
        """(N, 3, H, W) -> (N, C, H, W) logits upsampled to the frame size."""
        return upsample_to(self.deeplab(image), image.shape[-2:], self.align_corners)

    def forward(self, image, label):
        """
        Args:
            image: (N, 3, H, W) RGB in [0, 1].
            label: (N, H, W) int64, 255 = ignore.
        Returns:
            ``{'loss_ce': 0-dim}``: mean cross-entropy over the labelled pixels.
        """
        return {'loss_ce': F.cross_entropy(self.predict(image), label, ignore_index=IGNORE_INDEX)}


def quarter_resolution_flow(flow, size, align_corners):
    """Ground-truth flow (N, 2, H, W) in full-resolution pixels -> (N, 2, *size) in 1/4-resolution pixels.

    The flow field is resized like an image (the same bilinear resize the model applies to frames) and its
    values divided by 4, because a displacement of 4 full-resolution pixels is one pixel of the 1/4 grid.
    """
    return upsample_to(flow, size, align_corners) / 4.0


def end_point_error(pred, target):
    """(N, 2, h, w) x 2 -> (N, h, w) Euclidean distance between flow vectors."""
    return torch.linalg.vector_norm(pred - target, dim=1)


class FlowStageNet(nn.Module):
    """FlowNetS trained on ground-truth flow with the end-point error at the resolution it predicts (1/4).

    The loss lives on the 1/4 grid because that is where the flow is used (it warps 1/4-resolution logits);
    the ground truth is brought there by :func:`quarter_resolution_flow`, so the loss is in 1/4-resolution
    pixels.  Validation also reports the usual full-resolution EPE (prediction upsampled x4 and multiplied by 4).

    Args:
        align_corners: the resize convention of the ground-truth downsampling.
        flownet: keyword arguments of :class:`FlowNetS`.
    """

    def __init__(self, align_corners=True, flownet=None):
        super().__init__()
        self.align_corners = align_corners
        self.flownet = FlowNetS(**(flownet or {}))

    def predict(self, frames):
        """(N, 2, 3, H, W) [previous, current] -> (N, 2, H/4, W/4) backward flow in 1/4-resolution pixels."""
        previous, current = frames.unbind(1)
        return self.flownet(torch.cat((current, previous), dim=1))

    def forward(self, frames, flow):
        """
        Args:
            frames: (N, 2, 3, H, W) [t-1, t], RGB in [0, 1].
            flow: (N, 2, H, W) ground-truth backward flow (dx, dy) in full-resolution pixels.
        Returns:
            ``{'loss_epe': 0-dim}``: mean end-point error on the 1/4 grid, in 1/4-resolution pixels.
        """
        pred = self.predict(frames)  # (N, 2, H/4, W/4)
        target = quarter_resolution_flow(flow, pred.shape[-2:], self.align_corners)
        return {'loss_epe': end_point_error(pred, target).mean()}
