"""``build_dataset`` / ``build_eval_loader``: datasets and the evaluation loader from the ``data:`` section of a
config (the training loader is the engine's, lib/train/engine.py)."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader

from lib.dataset import pseudo_labels, synthetic_layout
from lib.dataset.frame_list import read_list
from lib.dataset.transforms import JointAugment
from lib.dataset.video import (ClipDataset, FlowPairDataset, ImageDataset, TripletDataset, synthetic_flow_items,
                               synthetic_image_items)
from lib.utils import distributed
from lib.utils.config import DATASET_CLASSES, PDA_CLIP_LENGTH, resolve_path
from lib.utils.errors import UserError

SPLITS = ('train', 'val', 'test')
MODES = ('triplet', 'pda', 'image', 'flow')


def num_classes(dataset_name):
    if dataset_name not in DATASET_CLASSES:
        raise UserError(f'data.name: expected one of {sorted(DATASET_CLASSES)}, got "{dataset_name}"')
    return DATASET_CLASSES[dataset_name]


def list_path_of(data_cfg, split):
    if split not in SPLITS:
        raise UserError(f'split: expected one of {SPLITS}, got "{split}"')
    path = resolve_path(data_cfg.get(f'{split}_list'))
    if path is None:
        raise UserError(f'data.{split}_list: not set, but the {split} split was requested')
    return path


def _training_augment(data_cfg, with_scale):
    return JointAugment(crop_size=data_cfg.get('crop_size'), hflip=bool(data_cfg.get('hflip', False)),
                        scale_range=data_cfg.get('scale_range') if with_scale else None)


def build_dataset(data_cfg, split, mode, seed=None):
    """A dataset of one ``split`` (``train | val | test``; only ``train`` is augmented and gets precomputed pseudo
    labels) in one ``mode`` (``triplet | pda | image | flow``, synthetic only; docs/design.md, "Data"); ``seed``: the
    run's, for ``data.intermediate: original``."""
    if mode not in MODES:
        raise UserError(f'mode: expected one of {MODES}, got "{mode}"')
    scaling = data_cfg.get('pixel_scaling', 'multiply')
    name = data_cfg.get('name')
    n_classes = num_classes(name)
    root = resolve_path(data_cfg.get('root'))
    if root is None:
        raise UserError('data.root: not set')
    frames = read_list(list_path_of(data_cfg, split), name)
    train = split == 'train'

    if mode == 'triplet':
        mask_root = None
        if data_cfg.get('pseudo_labels', 'online') == 'precomputed' and train:
            mask_root = resolve_path(data_cfg.get('pseudo_label_root'))
            if mask_root is None:
                raise UserError('data.pseudo_label_root: not set, but data.pseudo_labels is "precomputed"')
            pseudo_labels.read_marker(mask_root)  # the masks must exist before training starts
        return TripletDataset(root, frames, n_classes, min_gap=int(data_cfg.get('min_gap', 2)),
                              max_gap=int(data_cfg.get('max_gap', 10)),
                              augment=_training_augment(data_cfg, with_scale=False) if train else None,
                              intermediate=data_cfg.get('intermediate', 'resample'), seed=seed,
                              pixel_scaling=scaling, pseudo_label_root=mask_root)
    if mode == 'pda':
        return ClipDataset(root, frames, n_classes, length=PDA_CLIP_LENGTH, pixel_scaling=scaling)
    if mode == 'image':
        if name == 'synthetic' and train:
            # The synthetic set labels every frame, so the key-frame network may train on all of them.
            items = synthetic_image_items(synthetic_layout.read_meta(root), frames)
        else:
            items = [(entry.image, entry.label) for entry in frames]
        return ImageDataset(root, items, n_classes,
                            augment=_training_augment(data_cfg, with_scale=True) if train else None,
                            pixel_scaling=scaling)
    if name != 'synthetic':
        raise UserError(f'mode "flow": needs ground-truth flow, which only data.name=synthetic has (got "{name}")')
    items = synthetic_flow_items(synthetic_layout.read_meta(root), frames)
    return FlowPairDataset(root, items, crop_size=data_cfg.get('crop_size') if train else None,
                           hflip=bool(data_cfg.get('hflip', False)) and train, pixel_scaling=scaling)


def seed_worker(worker_id):
    """DataLoader ``worker_init_fn``: numpy and ``random`` seeded from the worker's torch seed, for any transform."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def build_eval_loader(dataset, batch_size=1, num_workers=0, max_items=None, pin_memory=True):
    """The loader an evaluation iterates: the first ``max_items`` samples (all by default), in order, every
    world_size-th on each rank without :class:`DistributedSampler`'s padding (a padded sample would count twice);
    ``loader.sampler`` is the list of this rank's dataset indices."""
    total = len(dataset) if max_items is None else min(len(dataset), max_items)
    indices = list(range(total))[distributed.get_rank()::distributed.get_world_size()]
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=num_workers,
                      pin_memory=pin_memory and torch.cuda.is_available(), worker_init_fn=seed_worker)
