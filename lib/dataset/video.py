"""Datasets over labelled video frames (:mod:`lib.dataset.frame_list`): training triplets, PDA clips, single images
and flow pairs.  Frames are float32 RGB ``(3, H, W)`` in [0, 1]; labels int64 ``(H, W)`` with 255 = ignore.  Random
choices use torch's RNG inside ``__getitem__``, except the paper's fixed triplet list (its own ``random.Random``)."""
import os
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.dataset import synthetic_layout
from lib.dataset.io import check_multiple_of_4, decode_frame, read_flow, read_frame, read_label
from lib.dataset.pseudo_labels import mask_path
from lib.dataset.transforms import random_crop
from lib.utils.errors import UserError


class _LabelledVideo(Dataset):
    """Shared loading of a list of :class:`LabelledFrame` under one dataset root."""

    def __init__(self, root, frames, n_classes, augment=None, pixel_scaling='multiply'):
        self.root = root
        self.frames = frames
        self.n_classes = n_classes
        self.augment = augment
        self.pixel_scaling = pixel_scaling

    def __len__(self):
        return len(self.frames)

    def _path(self, relative):
        return os.path.join(self.root, relative)

    def load_clip(self, entry, offsets):
        """Frames ``t + offset`` for each offset, stacked to ``(len(offsets), 3, H, W)``; all one size."""
        clip = [decode_frame(self._path(entry.frame(offset)), self.pixel_scaling) for offset in offsets]
        size = clip[-1].shape
        for offset, frame in zip(offsets, clip):
            if frame.shape != size:
                raise UserError(f'{self._path(entry.frame(offset))}: frame is {frame.shape[1]}x{frame.shape[2]}'
                                f' but frame t of the clip is {size[1]}x{size[2]}')
        return torch.from_numpy(np.stack(clip))  # numpy: see decode_frame

    def finish(self, frames, label, entry=None):
        if self.augment is not None:
            frames, label = self.augment(frames, label)
        if entry is not None:  # frames that go through FlowNetS and the warp
            check_multiple_of_4(self._path(entry.image), *frames.shape[-2:])
        return frames, label


INTERMEDIATE_MODES = ('resample', 'original')


def original_intermediates(n_lines, gaps, seed):
    """The offsets ``i`` of the paper's triplet list: ``random.seed(seed)``, then ``random.randint(1, j - 1)`` for
    each list line and each gap ``j`` (line-major), once for the whole training."""
    rng = random.Random(seed)  # the same stream as the module-level functions after random.seed(seed)
    return [rng.randint(1, gap - 1) for _ in range(n_lines) for gap in gaps]


class TripletDataset(_LabelledVideo):
    """Training triplets ``[t - j, t - i, t]`` with the label of ``t``, one item per list line and gap ``j`` in
    ``[min_gap, max_gap]`` (line-major); ``intermediate='resample'`` draws ``i ~ U{1, ..., j - 1}`` at every
    ``__getitem__``, ``'original'`` fixes it per item as the paper's dataset did (``original_intermediates``)."""

    def __init__(self, root, frames, n_classes, min_gap=2, max_gap=10, augment=None, intermediate='resample',
                 seed=None, pixel_scaling='multiply', pseudo_label_root=None):
        super().__init__(root, frames, n_classes, augment, pixel_scaling)
        self.pseudo_label_root = pseudo_label_root
        if not 2 <= min_gap <= max_gap:
            raise UserError(f'data.min_gap/max_gap: expected 2 <= min_gap <= max_gap, got {min_gap}, {max_gap}')
        if intermediate not in INTERMEDIATE_MODES:
            raise UserError(f'data.intermediate: expected one of {" | ".join(INTERMEDIATE_MODES)}, '
                            f'got "{intermediate}"')
        self.gaps = list(range(min_gap, max_gap + 1))
        self.intermediates = None
        if intermediate == 'original':
            if seed is None:
                raise UserError('data.intermediate: "original" needs the run\'s seed to draw the triplet list')
            self.intermediates = original_intermediates(len(frames), self.gaps, seed)

    def __len__(self):
        return len(self.frames) * len(self.gaps)

    def load_pseudo_label(self, entry, offset, size):
        path = mask_path(self.pseudo_label_root, entry.frame(offset))
        if not os.path.isfile(path):
            raise UserError(f'{path}: pseudo label not found (data.pseudo_labels: precomputed); write the '
                            f'missing masks with tools/make_pseudo_labels.py')
        return read_label(path, self.n_classes, size)

    def __getitem__(self, idx):
        """
        Returns:
            frames: (3, 3, H, W) float32 [key t-j, intermediate t-i, target t].
            label: (H, W) int64 label of t.
            pseudo_labels (only with ``pseudo_label_root``): (2, H, W) int64 DeepLab masks of [t-i, t].
        """
        entry = self.frames[idx // len(self.gaps)]
        gap = self.gaps[idx % len(self.gaps)]
        intermediate = int(torch.randint(1, gap, ()).item()) if self.intermediates is None else self.intermediates[idx]
        frames = self.load_clip(entry, (-gap, -intermediate, 0))  # (3, 3, H, W)
        label = read_label(self._path(entry.label), self.n_classes, frames.shape[-2:])
        if self.pseudo_label_root is None:
            return self.finish(frames, label, entry)
        masks = [self.load_pseudo_label(entry, offset, frames.shape[-2:]) for offset in (-intermediate, 0)]
        # One stack, so the augmentation's single draw crops and flips the masks exactly as the frames and label.
        frames, labels = self.finish(frames, torch.stack([label] + masks), entry)
        return frames, labels[0], labels[1:]


class ClipDataset(_LabelledVideo):
    """PDA clips: the ``length`` frames ``t - length + 1, ..., t`` and the label of ``t``."""

    def __init__(self, root, frames, n_classes, length=10, augment=None, pixel_scaling='multiply'):
        super().__init__(root, frames, n_classes, augment, pixel_scaling)
        self.offsets = tuple(range(1 - length, 1))

    def __getitem__(self, idx):
        """
        Returns:
            frames: (length, 3, H, W) float32, oldest first, frame t last.
            label: (H, W) int64 label of t.
        """
        entry = self.frames[idx]
        frames = self.load_clip(entry, self.offsets)
        return self.finish(frames, read_label(self._path(entry.label), self.n_classes, frames.shape[-2:]), entry)


class ImageDataset(_LabelledVideo):
    """Single labelled frames (the key-frame network's training set); its ``frames`` are ``(frame path, label path)``
    pairs relative to the root (see :func:`synthetic_image_items`)."""

    def __getitem__(self, idx):
        """
        Returns:
            image: (3, H, W) float32.
            label: (H, W) int64.
        """
        image_rel, label_rel = self.frames[idx]
        image = read_frame(self._path(image_rel), self.pixel_scaling)
        frames, label = self.finish(image[None], read_label(self._path(label_rel), self.n_classes, image.shape[-2:]))
        return frames[0], label


class FlowPairDataset(_LabelledVideo):
    """Consecutive synthetic frames with their ground-truth backward flow; ``items`` are ``(labelled frame, offset)``:
    the pair ``(t + offset - 1, t + offset)`` of that snippet."""

    def __init__(self, root, items, crop_size=None, hflip=False, pixel_scaling='multiply'):
        super().__init__(root, items, n_classes=None, pixel_scaling=pixel_scaling)
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.hflip = hflip

    def _augment(self, frames, flow):
        if self.crop_size is not None:
            height, width = flow.shape[-2:]
            if self.crop_size[0] > height or self.crop_size[1] > width:
                raise UserError(f'data.crop_size: {self.crop_size} is larger than the {height}x{width} frames')
            frames, flow = random_crop(frames, flow, self.crop_size)
        if self.hflip and torch.rand(()).item() < 0.5:
            frames = frames.flip(-1)
            flow = flow.flip(-1) * torch.tensor([-1.0, 1.0]).view(2, 1, 1)  # mirrored motion: dx changes sign
        return frames.contiguous(), flow.contiguous()

    def __getitem__(self, idx):
        """
        Returns:
            frames: (2, 3, H, W) float32 [t-1, t].
            flow: (2, H, W) float32 backward flow (dx, dy) in pixels: ``resample2d(frames[0], flow) ~ frames[1]``.
        """
        entry, offset = self.frames[idx]
        frames = self.load_clip(entry, (offset - 1, offset))
        flow, _ = read_flow(self._path(synthetic_layout.flow_path(entry.frame(offset))), frames.shape[-2:])
        frames, flow = self._augment(frames, flow)
        check_multiple_of_4(self._path(entry.frame(offset)), *frames.shape[-2:])
        return frames, flow


def snippet_offsets(meta):
    """Offsets from the labelled frame to every frame of its synthetic snippet, first frame first."""
    labelled = int(meta['labelled_frame'])
    return [k - labelled for k in range(int(meta['n_frames']))]


def synthetic_image_items(meta, frames):
    """Every frame of every listed synthetic snippet with its every-frame label."""
    images = [entry.frame(offset) for entry in frames for offset in snippet_offsets(meta)]
    return [(image, synthetic_layout.sequence_label_path(image)) for image in images]


def synthetic_flow_items(meta, frames):
    """Every consecutive pair of every listed synthetic snippet."""
    return [(entry, offset) for entry in frames for offset in snippet_offsets(meta)[1:]]
