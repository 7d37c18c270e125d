"""Reading and writing model weights, including the published DAVSS checkpoints: the one low-level home (read a
file safely, strip wrapper prefixes, compare with a network, describe what does not fit, save atomically).
``lib.model.load_scnet`` builds the whole SCNet of a config from a file; ``lib.engine.checkpointing`` adds what a
training run needs (RNG states, the ``init:`` sub-networks).

Published files (see docs/models.md):
- ``<stage>_<dataset>/best.pth``: a whole SCNet saved from DistributedDataParallel (keys prefixed ``module.``);
- the DMNet stage output: ``net.module.dmnet.state_dict()`` (DMNet keys, no prefix);
- ``pretrained/pretrained_<dataset>.pth``: DeepLabv3+ and FlowNetS, loaded non-strictly (its exact keys are not
  documented).

Every file is read with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
"""
import os
import re
from collections import Counter
from typing import List, NamedTuple, Tuple

import torch

from lib.utils.atomic import save_torch
from lib.utils.errors import UserError

# Wrappers that prefix parameter names: DistributedDataParallel / DataParallel and torch.compile.
WRAPPER_PREFIXES = ('module.', '_orig_mod.')
# Keys under which training scripts commonly nest the weights next to optimizer state etc.
NESTED_STATE_KEYS = ('model', 'state_dict')


class LoadReport(NamedTuple):
    target: str  # the module that received the weights: 'model' or the name of a sub-network ('dmnet', ...)
    loaded: List[str]  # keys of the target that were loaded
    missing: List[str]  # keys of the target absent from the file
    unexpected: List[str]  # keys of the file absent from the target
    mismatched: List[Tuple[str, tuple, tuple]]  # (key, shape in file, shape in target)

    def summary(self):
        """One line: what was loaded and what was not, grouped by top-level module."""
        return (f'loaded {len(self.loaded)}/{len(self.loaded) + len(self.missing) + len(self.mismatched)} tensors '
                f'into {self.target}; missing: {_group(self.missing)}; unexpected: {_group(self.unexpected)}; '
                f'shape mismatches: {_group([k for k, _, _ in self.mismatched])}')

    def fits(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, shown=5):
        """What does not fit, in one line: the missing, unexpected and differently shaped keys (first ``shown``)."""
        def listed(keys):
            return ', '.join(keys[:shown]) + (', ...' if len(keys) > shown else '')
        parts = []
        if self.missing:
            parts.append(f'{len(self.missing)} missing ({listed(self.missing)})')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} unexpected ({listed(self.unexpected)})')
        if self.mismatched:
            shapes = [f'{k}: file {list(a)} vs model {list(b)}' for k, a, b in self.mismatched]
            parts.append(f'{len(self.mismatched)} with another shape ({listed(shapes)})')
        return '; '.join(parts)


def _group(keys):
    if not keys:
        return 'none'
    counts = Counter(k.split('.', 1)[0] for k in keys)
    return ', '.join(f'{module}.* ({n})' for module, n in counts.items())


def _is_state_dict(obj):
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def describe_load_error(path, err):
    """One line for a file ``torch.load(weights_only=True)`` refused: torch's reason and how to look safely."""
    text = re.sub(r'\x1b\[[0-9;]*m', '', str(err))
    match = re.search(r'WeightsUnpickler error: ([^\n]*?\.)(?: |$)', text, re.MULTILINE)
    if match is None:
        first = text.strip().splitlines()[0] if text.strip() else ''
        return (f'{path}: not a PyTorch checkpoint readable with weights_only=True ({type(err).__name__}'
                + (f': {first[:200]}' if first else '') + ')')
    return (f'{path}: refused by torch.load(weights_only=True): {match.group(1)} The file needs code to load; '
            f'list what it needs without running it: python -c "import torch; print(torch.serialization.'
            f'get_unsafe_globals_in_checkpoint({path!r}))", and allow only what you trust '
            f'(torch.serialization.add_safe_globals)')


def read_checkpoint(path, what=None):
    """The object saved at ``path`` (a training checkpoint or a bare state dict), read on the CPU.

    Raises UserError (one line naming the file, after ``what``, the option or config key the path came
    from, when given) for a missing file or one torch cannot read with ``weights_only=True``.
    """
    prefix = f'{what}: ' if what else ''
    if path is None or not os.path.isfile(path):
        raise UserError(f'{prefix}{path}: checkpoint file not found')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, unsupported global) for a bad file
        raise UserError(prefix + describe_load_error(path, err)) from None


def load_checkpoint(path, what=None):
    """Read a state_dict (``{name: tensor}``) from ``path`` on the CPU (errors as :func:`read_checkpoint`).

    A file holding ``{'model': state_dict, ...}`` or ``{'state_dict': state_dict, ...}`` gives the nested one;
    content that is not a mapping of names to tensors is a UserError.
    """
    obj = read_checkpoint(path, what)
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in NESTED_STATE_KEYS:
            if _is_state_dict(obj.get(key)):
                return obj[key]
    raise UserError(f'{f"{what}: " if what else ""}{path}: expected a state_dict (a mapping of parameter '
                    f'names to tensors), got {type(obj).__name__}')


def strip_wrapper_prefixes(state_dict):
    """Drop leading ``module.`` / ``_orig_mod.`` from every key (files saved from DDP or torch.compile)."""
    stripped = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split('.', 1)[1]
        stripped[key] = value
    return stripped


def submodule_weights(state, name):
    """Weights of sub-network ``name`` from a state dict in the SCNet layout (``name.*`` keys), or from a file
    that holds only that sub-network (the published DMNet file has bare keys)."""
    prefix = f'{name}.'
    selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return selected if selected else state


def save_checkpoint(obj, path):
    """``torch.save`` to a temporary name, then an atomic rename: a crash never leaves a truncated file."""
    save_torch(obj, path)


def compare(module, state_dict, target='model'):
    """A LoadReport of how ``state_dict`` fits ``module`` (by name and shape), without loading anything."""
    expected = module.state_dict()
    loaded, missing, mismatched = [], [], []
    for key, tensor in expected.items():
        if key not in state_dict:
            missing.append(key)
        elif tuple(state_dict[key].shape) != tuple(tensor.shape):
            mismatched.append((key, tuple(state_dict[key].shape), tuple(tensor.shape)))
        else:
            loaded.append(key)
    unexpected = [key for key in state_dict if key not in expected]
    return LoadReport(target, loaded, missing, unexpected, mismatched)


def _submodule(net, target):
    return net if target == 'model' else getattr(net, target)


def is_dmnet_only(net, state_dict):
    """The stage-1 file: every key is a DMNet key (``conv1.0.depthwise.weight``) and none is a key of ``net``."""
    dmnet = getattr(net, 'dmnet', None)
    if dmnet is None:
        return False
    dmnet_keys, net_keys = set(dmnet.state_dict()), set(net.state_dict())
    return all(k in dmnet_keys and k not in net_keys for k in state_dict)


def _mismatch_message(path, net, report):
    where = type(net).__name__ + ('' if report.target == 'model' else f'.{report.target}')
    return f'{path}: does not fit {where}: {report.problems()}'


def _load_matching(module, state_dict, report):
    module.load_state_dict({k: state_dict[k] for k in report.loaded}, strict=False)


def load_published(net, path, strict=True):
    """Load a published (or our own) checkpoint into ``net``.

    ``module.`` prefixes are stripped; a DMNet-only file goes into ``net.dmnet``. With ``strict=True`` any
    missing, unexpected or differently shaped key raises one UserError listing them; with ``strict=False``
    the tensors that match by name and shape are loaded (an error if none does).

    Returns:
        LoadReport (``report.summary()`` is a one-line description).
    """
    state_dict = strip_wrapper_prefixes(load_checkpoint(path))
    target = 'dmnet' if is_dmnet_only(net, state_dict) else 'model'
    module = _submodule(net, target)
    report = compare(module, state_dict, target)
    if strict and not report.fits():
        raise UserError(_mismatch_message(path, net, report))
    if not report.loaded:
        raise UserError(f'{path}: no tensor matches {type(net).__name__} by name and shape')
    _load_matching(module, state_dict, report)
    return report


def load_pretrained(net, path):
    """Non-strict load of ``pretrained_<dataset>.pth`` (DeepLabv3+ and FlowNetS, keys not documented).

    The file's keys are matched by name and shape against ``net`` itself and against each of its sub-networks
    (a file of bare DeepLab keys fills ``net.deeplab``); the placement matching the most tensors wins. Raises
    UserError if no tensor matches anywhere.

    Returns:
        LoadReport of the chosen placement.
    """
    state_dict = strip_wrapper_prefixes(load_checkpoint(path))
    candidates = ['model'] + [name for name, _ in net.named_children()]
    reports = [compare(_submodule(net, target), state_dict, target) for target in candidates]
    best = max(reports, key=lambda report: len(report.loaded))
    if not best.loaded:
        raise UserError(f'{path}: no tensor matches {type(net).__name__} or its sub-networks by name and '
                        f'shape (first keys in the file: {", ".join(list(state_dict)[:3])})')
    _load_matching(_submodule(net, best.target), state_dict, best)
    return best
