"""Training checkpoints (``now.pth`` / ``best.pth`` / ``final.pth``): dicts that ``torch.load(..., weights_only=True)``
accepts, read by :mod:`lib.model.checkpoint` (their ``model`` entry is what ``init:`` and ``tools/test_pda.py`` load)::

    model       state dict in the SCNet key layout (``deeplab.*``, ``flownet.*``, ``dmnet.*``, ``cfnet.*``)
    optimizer   Adam state;  scaler: GradScaler state (fp16) or None
    progress    :class:`Progress`;  iteration, epoch: copies of its entries, for a quick look
    rng         per-rank RNG states (python, numpy, torch, cuda) as plain lists and tensors
    config      the resolved config;  stage: its stage name;  layout: :func:`data_layout`
"""
import itertools
import os
import random
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from lib.model.checkpoint import read_checkpoint, strip_wrapper_prefixes
from lib.utils import distributed
from lib.utils.atomic import save_torch
from lib.utils.errors import UserError, one_line
from lib.utils.runtime import seed_everything


def capture_rng_state():
    """This process's RNG states in types ``weights_only`` loading accepts (no numpy arrays, no tuples of them)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {'python': [py_version, list(py_internal), py_gauss],
            'numpy': [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
            'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_state(state):
    py_version, py_internal, py_gauss = state['python']
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state['numpy']
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""
    iteration: int = 0  # optimiser steps done
    epoch: int = 0  # epoch in progress (or just completed, if epoch_complete)
    batches_done: int = 0  # batches of that epoch consumed
    epoch_complete: bool = False
    best_score: Optional[float] = None


def epoch_seed(seed, rank, epoch):
    """The seed of a loader's worker RNGs in one epoch on one rank (independent of the global RNG)."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


def data_layout(cfg, loader):
    """What fixes the position of a batch in an epoch; a resume must see the same, or it skips or repeats data."""
    return {'batch_size': cfg['train']['batch_size'], 'accumulate': cfg['train']['accumulate'],
            'world_size': distributed.get_world_size(), 'dataset_length': len(loader.dataset)}


def check_layout(path, checkpoint, layout, restart_epoch):
    """Refuse a resume whose data layout differs from the checkpoint's (unless the open epoch is restarted)."""
    saved = checkpoint['layout']
    changed = [f'{key} {saved.get(key)} -> {layout[key]}' for key in layout if saved.get(key) != layout[key]]
    if changed and not restart_epoch:
        raise UserError(f'--resume: {path} was written with another data layout ({", ".join(changed)}): the rest of '
                        f'its epoch cannot be found again; resume with the same settings, or pass --restart-epoch to '
                        f'train that epoch again from its first batch')
    return changed


# Keys a resumed run may change: how long it runs, how often it logs and validates, where it reads and writes.
RESUME_FREE = ('experiment', 'device', 'deterministic', 'init.', 'eval.', 'data.root', 'data.num_workers',
               'data.pin_memory', 'train.epochs', 'train.max_iters', 'train.log_every', 'train.val_every',
               'train.checkpoint_every', 'train.val_max_clips', 'train.val_batch_size', 'train.save_root',
               'train.tblog_root')


def _flat(tree, prefix=''):
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value, f'{prefix}{key}.') if isinstance(value, dict) else {f'{prefix}{key}': value})
    return flat


def check_config_changes(path, saved_cfg, cfg, restart_epoch):
    """Refuse a resume under another config than the run's, naming old and new (batch size and accumulation are
    :func:`check_layout`'s); ``--restart-epoch`` accepts all but the model's shape.  Returns the accepted changes."""
    old, new = _flat(saved_cfg), _flat(cfg)
    changed = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)
               and not key.startswith(RESUME_FREE) and key not in ('train.batch_size', 'train.accumulate')]
    shown = [f'{key} {old.get(key)!r} -> {new.get(key)!r}' for key in changed]
    model = [s for key, s in zip(changed, shown) if key.startswith('model.')]
    if model:
        raise UserError(f'--resume: {path} holds another network than this config ({", ".join(model)}); resume '
                        f'with the config the run was started with')
    if shown and not restart_epoch:
        raise UserError(f'--resume: this config differs from the run\'s ({", ".join(shown)}); resume with the '
                        f'run\'s config ({os.path.join(os.path.dirname(path), "config.yaml")}), or pass '
                        f'--restart-epoch to go on from the start of the open epoch with the new settings')
    return shown


def load_training_state(path, net, optimizer, scaler, cfg, layout, restart_epoch=False):
    checkpoint = read_checkpoint(path, '--resume')
    if not isinstance(checkpoint, dict) or checkpoint.get('stage') != cfg['stage']:
        found = checkpoint.get('stage') if isinstance(checkpoint, dict) else None
        raise UserError(f'--resume: {path} is not a training checkpoint of the "{cfg["stage"]}" stage '
                        f'(stage: {found})')
    changes = check_config_changes(path, checkpoint['config'], cfg, restart_epoch)
    try:
        net.load_state_dict(strip_wrapper_prefixes(checkpoint['model']), strict=True)
        optimizer.load_state_dict(checkpoint['optimizer'])
        if checkpoint['scaler'] is not None and scaler.is_enabled():
            scaler.load_state_dict(checkpoint['scaler'])
        progress = Progress(**checkpoint['progress'])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise UserError(f'--resume: {path} does not fit this config ({one_line(err)})') from None
    check_layout(path, checkpoint, layout, restart_epoch)
    if restart_epoch and not progress.epoch_complete:
        progress.batches_done = 0  # the open epoch runs again from its first batch
    rng = checkpoint['rng']
    rank = distributed.get_rank()
    if len(rng) == distributed.get_world_size():
        restore_rng_state(rng[rank])
    else:  # another number of processes (--restart-epoch): same weights and position, fresh augmentation streams
        seed_everything(cfg['seed'] + rank + 1000 * progress.iteration)
    return progress, changes


def save_checkpoint(run, names):
    """Write the run's state to each of ``names`` in the save folder (all ranks call it; rank 0 writes)."""
    rng = distributed.all_gather_object(capture_rng_state())  # a collective
    if not distributed.is_main_process():
        return
    checkpoint = {'model': run.net.state_dict(), 'optimizer': run.optimizer.state_dict(),
                  'scaler': run.scaler.state_dict() if run.scaler.is_enabled() else None,
                  'progress': asdict(run.progress), 'iteration': run.progress.iteration, 'epoch': run.progress.epoch,
                  'rng': rng, 'config': run.cfg, 'stage': run.stage.name, 'layout': data_layout(run.cfg, run.loader)}
    for name in names:  # now.pth last: what a resume reads never runs ahead of the files it implies
        save_torch(checkpoint, os.path.join(run.save_dir, name))


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose next epoch skips its first ``skip`` indices (set with :meth:`set_epoch`).
    ``order``: ``'run'`` shuffles with ``seed + epoch``; ``'epoch_only'`` with the epoch alone, as torch 1.5's did."""

    def __init__(self, dataset, num_replicas, rank, seed, order='run'):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=0 if order == 'epoch_only' else seed)
        self.skip = 0

    def set_epoch(self, epoch, skip=0):
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self):
        return self.num_samples - self.skip
