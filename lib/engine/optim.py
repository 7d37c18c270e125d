"""Optimiser and learning-rate schedule of the paper's training scripts.

Adam over the trainable sub-networks only (frozen ones never enter the optimiser), and a single step decay: the
learning rate is multiplied by ``lr_decay`` (0.1) once more than ``lr_decay_at`` (half) of the iterations are
done.  The schedule is a pure function of the iteration, so a resumed run needs no scheduler state.
"""
import torch


def build_optimizer(param_groups, train_cfg):
    """Adam over ``param_groups`` (dicts with ``params``, ``lr`` and a ``name``).

    Every group remembers its configured rate as ``base_lr``; :func:`apply_lr` scales from it.
    """
    groups = []
    for group in param_groups:
        params = [p for p in group['params'] if p.requires_grad]
        if not params:
            raise ValueError(f'optimizer: parameter group "{group["name"]}" has no trainable parameters')
        groups.append({'params': params, 'lr': group['lr'], 'base_lr': group['lr'], 'name': group['name']})
    return torch.optim.Adam(groups, betas=tuple(train_cfg['betas']), weight_decay=train_cfg['weight_decay'])


def lr_factor(iteration, total_iters, decay_at=0.5, decay=0.1):
    """Multiplier of the base rate at optimiser step ``iteration`` (0-based) of ``total_iters``.

    The original compares ``itr > max_itr / 2``: the step exactly at the half still uses the full rate.
    """
    return decay if iteration > decay_at * total_iters else 1.0


def apply_lr(optimizer, iteration, total_iters, train_cfg):
    """Set every group's rate for step ``iteration``; returns ``{group name: lr}`` for logging."""
    factor = lr_factor(iteration, total_iters, train_cfg['lr_decay_at'], train_cfg['lr_decay'])
    rates = {}
    for group in optimizer.param_groups:
        group['lr'] = group['base_lr'] * factor
        rates[group['name']] = group['lr']
    return rates
