"""Optimiser and learning-rate schedule of the paper's training scripts.

Adam over the trainable sub-networks only (frozen ones never enter the optimiser), and a single step decay: the
learning rate is multiplied by ``lr_decay`` (0.1) once more than ``lr_decay_at`` (half) of the iterations are
done.  The schedule is a pure function of the iteration, so a resumed run needs no scheduler state.

``train.param_lists`` chooses the parameter lists: ``unique`` (each tensor once, ``torch.optim.Adam``) or
``original``, the lists of the paper's code (:func:`original_param_list`) stepped by :class:`LoopAdam`.
"""
import torch

from lib.engine.loop_adam import LoopAdam
from lib.utils.errors import UserError

PARAM_LISTS = ('unique', 'original')


def original_param_list(module):
    """The list ``[p for m in module.modules() for p in m.parameters()]`` of the paper's training scripts.

    Every tensor appears once per module that encloses it (its own module and each ancestor up to ``module``), in
    the order of that double loop.  It is rebuilt from the parameter names, which spell the module tree of the
    published checkpoints, so the list stays the original's even if the Python classes are nested differently.
    """
    named = list(module.named_parameters())  # pre-order, as module.modules(); registration order within a module
    paths = ['']  # '' is ``module`` itself
    for name, _ in named:
        parts = name.split('.')[:-1]
        for depth in range(1, len(parts) + 1):
            path = '.'.join(parts[:depth])
            if path not in paths:
                paths.append(path)
    return [p for path in paths for name, p in named if path == '' or name.startswith(path + '.')]


def parameter_list(module, param_lists):
    """The parameters of ``module`` for its optimiser group under ``train.param_lists``."""
    if param_lists == 'unique':
        return list(module.parameters())
    if param_lists == 'original':
        return original_param_list(module)
    raise UserError(f'train.param_lists: expected one of {" | ".join(PARAM_LISTS)}, got "{param_lists}"')


def build_optimizer(param_groups, train_cfg):
    """Adam over ``param_groups`` (dicts with ``params``, ``lr`` and a ``name``).

    Every group remembers its configured rate as ``base_lr``; :func:`apply_lr` scales from it.  With
    ``train.param_lists: original`` the groups may repeat tensors and :class:`LoopAdam` steps them.
    """
    original = train_cfg.get('param_lists', 'unique') == 'original'
    if original and train_cfg.get('amp') == 'fp16':
        # GradScaler unscales every listed gradient: a tensor listed k times would be divided k times.
        raise UserError('train.amp: fp16 cannot be combined with train.param_lists: original (the gradient '
                        'scaler would unscale repeated tensors several times); use bf16 or null')
    groups = []
    for group in param_groups:
        params = [p for p in group['params'] if p.requires_grad]
        if not params:
            raise ValueError(f'optimizer: parameter group "{group["name"]}" has no trainable parameters')
        groups.append({'params': params, 'lr': group['lr'], 'base_lr': group['lr'], 'name': group['name']})
    if original:
        return LoopAdam(groups, betas=tuple(train_cfg['betas']), weight_decay=train_cfg['weight_decay'])
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
