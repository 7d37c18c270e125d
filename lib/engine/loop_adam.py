"""Adam stepped one tensor at a time, in list order, with the arithmetic of torch 1.5's ``torch.optim.Adam``.

The published DAVSS weights were trained with parameter lists that hold a tensor several times (see
:func:`lib.engine.optim.original_param_list`).  torch 1.5's Adam looped over the list and gave every appearance a
full update: the step count, both moments and the weight move once per appearance, each reading what the previous
appearance left.  Today's ``torch.optim.Adam`` is not a safe way to replay that: its multi-tensor (foreach) and
fused kernels update the appearances of one tensor in parallel, and its single-tensor path uses ``lerp`` for the
first moment (other rounding).  This class is that loop, written out, so the recipe does not depend on the
installed torch's defaults.
"""
import math

import torch
from torch.optim import Optimizer


class LoopAdam(Optimizer):
    """``torch.optim.Adam`` (no amsgrad) as torch 1.5 ran it; accepts a tensor more than once in a group.

    Args:
        params: tensors or param-group dicts, as for any optimiser; repeated tensors are stepped once per
            appearance.
        lr, betas, eps, weight_decay: as ``torch.optim.Adam`` (L2 penalty added to the gradient).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0.0 or eps < 0.0 or weight_decay < 0.0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f'LoopAdam: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}')
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def add_param_group(self, param_group):
        # torch.optim warns on (and later versions refuse) repeated tensors; here they are the point, so the
        # group is registered without them and the full list, repeats included, is put back afterwards.
        params = param_group['params']
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        unique = list({id(p): p for p in params}.values())
        super().add_param_group(dict(param_group, params=unique))
        self.param_groups[-1]['params'] = params

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group['betas']
            for p in group['params']:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError('LoopAdam does not support sparse gradients')
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
        return loss
