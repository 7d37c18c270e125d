"""Joint random crop / flip / rescale of frames and their label (one draw, from torch's generator, per sample)."""
import torch
import torch.nn.functional as F

from lib.dataset.io import IGNORE_INDEX


def random_crop(frames, label, crop_size):
    """Crop ``frames (T, 3, H, W)`` and ``label (H, W)`` (or ``(K, H, W)``) at one random window of ``crop_size``,
    padding a smaller frame on the bottom/right (frames with 0, label with ignore) first."""
    crop_h, crop_w = crop_size
    height, width = label.shape[-2:]
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    if pad_h or pad_w:
        frames = F.pad(frames, (0, pad_w, 0, pad_h), value=0.0)
        label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        height, width = label.shape[-2:]
    top = int(torch.randint(0, height - crop_h + 1, ()).item())
    left = int(torch.randint(0, width - crop_w + 1, ()).item())
    return (frames[..., top:top + crop_h, left:left + crop_w], label[..., top:top + crop_h, left:left + crop_w])


def random_rescale(frames, label, scale_range):
    """Resize by one factor drawn uniformly from ``scale_range``: frames bilinear, label nearest."""
    low, high = scale_range
    if low == high == 1.0:
        return frames, label
    scale = low + (high - low) * torch.rand(()).item()
    height, width = label.shape
    size = (max(int(round(height * scale)), 1), max(int(round(width * scale)), 1))
    frames = F.interpolate(frames, size=size, mode='bilinear', align_corners=False).clamp_(0.0, 1.0)
    label = F.interpolate(label[None, None].float(), size=size, mode='nearest')[0, 0].long()
    return frames, label


class JointAugment:
    """The training augmentation of one sample: optional rescale, then crop, then horizontal flip."""

    def __init__(self, crop_size=None, hflip=False, scale_range=(1.0, 1.0)):
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.hflip = hflip
        self.scale_range = tuple(scale_range) if scale_range is not None else (1.0, 1.0)

    def __call__(self, frames, label):
        """(T, 3, H, W) frames and an (H, W) label, or (K, H, W) label maps (no rescale then) -> the same, cropped."""
        frames, label = random_rescale(frames, label, self.scale_range)
        if self.crop_size is not None:
            frames, label = random_crop(frames, label, self.crop_size)
        if self.hflip and torch.rand(()).item() < 0.5:
            frames, label = frames.flip(-1), label.flip(-1)
        return frames.contiguous(), label.contiguous()
