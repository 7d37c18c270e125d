"""Optimiser and learning-rate schedule of the paper's training scripts: Adam over the trainable sub-networks, the
rate multiplied by ``lr_decay`` once more than ``lr_decay_at`` of the iterations are done (a pure function of the
iteration: a resumed run needs no scheduler state).  ``train.param_lists``: ``unique`` (each tensor once,
``torch.optim.Adam``) or ``original``, the paper's lists (:func:`original_param_list`) stepped by :class:`LoopAdam`.
"""
import math

import torch
from torch.optim import Optimizer

from lib.utils.errors import UserError

PARAM_LISTS = ('unique', 'original')


def original_param_list(module):
    """The list ``[p for m in module.modules() for p in m.parameters()]`` of the paper's training scripts (each
    tensor once per enclosing module), rebuilt from the parameter names, which spell the published checkpoints'
    module tree: the list stays the original's even if the Python classes are nested differently."""
    named = list(module.named_parameters())  # pre-order, as module.modules(); registration order within a module
    enclosing = ['.'.join(name.split('.')[:depth]) for name, _ in named for depth in range(1, name.count('.') + 1)]
    paths = dict.fromkeys([''] + enclosing)  # every enclosing module once, in pre-order; '' is ``module`` itself
    return [p for path in paths for name, p in named if path == '' or name.startswith(path + '.')]


def parameter_list(module, param_lists):
    """The parameters of ``module`` for its optimiser group under ``train.param_lists``."""
    if param_lists == 'unique':
        return list(module.parameters())
    if param_lists == 'original':
        return original_param_list(module)
    raise UserError(f'train.param_lists: expected one of {" | ".join(PARAM_LISTS)}, got "{param_lists}"')


def build_optimizer(param_groups, train_cfg):
    """Adam (:class:`LoopAdam` for ``train.param_lists: original``) over ``param_groups`` (dicts with ``params``,
    ``lr`` and a ``name``); each group keeps its rate as ``base_lr``, which :func:`apply_lr` scales."""
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
    """Multiplier of the base rate at optimiser step ``iteration`` (0-based) of ``total_iters``; as the original's
    ``itr > max_itr / 2``, the step exactly at the half still uses the full rate."""
    return decay if iteration > decay_at * total_iters else 1.0


def apply_lr(optimizer, iteration, total_iters, train_cfg):
    """Set every group's rate for step ``iteration``; returns ``{group name: lr}`` for logging."""
    factor = lr_factor(iteration, total_iters, train_cfg['lr_decay_at'], train_cfg['lr_decay'])
    rates = {}
    for group in optimizer.param_groups:
        group['lr'] = group['base_lr'] * factor
        rates[group['name']] = group['lr']
    return rates


class LoopAdam(Optimizer):
    """``torch.optim.Adam`` (no amsgrad, L2 penalty added to the gradient) as torch 1.5 ran it; a tensor listed more
    than once in a group is stepped once per appearance."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def add_param_group(self, param_group):
        # torch.optim warns on (and later versions refuse) repeated tensors; here they are the point, so the
        # group is registered without them and the full list, repeats included, is put back afterwards.
        params = list(param_group['params'])
        unique = list({id(p): p for p in params}.values())
        super().add_param_group(dict(param_group, params=unique))
        self.param_groups[-1]['params'] = params

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group['betas']
            for p in group['params']:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state['step'] = 0
                    state['exp_avg'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state['exp_avg_sq'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                state['step'] += 1
                bias_correction1 = 1 - beta1 ** state['step']
                bias_correction2 = 1 - beta2 ** state['step']
                if group['weight_decay'] != 0:
                    grad = grad.add(p, alpha=group['weight_decay'])
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(group['eps'])
                p.addcdiv_(exp_avg, denom, value=-group['lr'] / bias_correction1)
