"""Reading checkpoints: the one place a weight file is opened (``torch.load(weights_only=True)``), checked and loaded.

Files hold state dicts in the SCNet key layout (``deeplab.*``, ``flownet.*``, ``dmnet.*``, ``cfnet.*``; the published
``dmnet_<dataset>``: bare DMNet keys), possibly under a ``model`` / ``state_dict`` entry and with the ``module.`` /
``_orig_mod.`` prefixes of DistributedDataParallel and torch.compile (docs/models.md lists the files)."""
import os
import re
from collections import Counter
from typing import List, NamedTuple, Tuple

import torch

from lib.model.scnet import build_scnet
from lib.utils.errors import UserError

WRAPPER_PREFIXES = ('module.', '_orig_mod.')  # DistributedDataParallel / DataParallel, torch.compile
NESTED_STATE_KEYS = ('model', 'state_dict')  # where training scripts keep the weights next to the optimiser etc.
SUB_NETWORKS = ('deeplab', 'flownet', 'cfnet', 'dmnet')
PRETRAINED = ('deeplab', 'flownet')  # what a published pretrained_<dataset>.pth holds


def read_checkpoint(path, what=None):
    """The object saved at ``path``, read on the CPU; one-line :class:`UserError` (after ``what``, the option or
    config key the path came from) for a missing, unreadable or unsafe file."""
    prefix = f'{what}: ' if what else ''
    if path is None or not os.path.lexists(path):
        raise UserError(f'{prefix}{path}: checkpoint file not found')
    if os.path.isdir(path):
        raise UserError(f'{prefix}{path}: is a folder, not a checkpoint file')
    if not os.path.exists(path):
        raise UserError(f'{prefix}{path}: is a symbolic link to nothing (or a loop of links)')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises many types (pickle, zip, unsupported global) for a bad file
        raise UserError(prefix + _refusal(path, err)) from None


def _refusal(path, err):
    """Why torch.load(weights_only=True) refused ``path``, in one line, with the safe way to look closer."""
    text = re.sub(r'\x1b\[[0-9;]*m', '', str(err))
    found = re.search(r'GLOBAL ([\w.]+)', text)
    if found is None:
        first = text.strip().splitlines()[0] if text.strip() else ''
        return (f'{path}: not a PyTorch checkpoint readable with weights_only=True ({type(err).__name__}'
                + (f': {first}' if first else '') + ')')
    return (f'{path}: refused by torch.load(weights_only=True): loading it would run {found.group(1)}, and a '
            f'checkpoint must be data only; list everything it needs without running it: python -c "import '
            f'torch; print(torch.serialization.get_unsafe_globals_in_checkpoint({path!r}))"')


def state_dict_of(obj):
    """The ``{name: tensor}`` mapping in a loaded file and where it sat (``'top level'`` or the entry's name);
    ``(None, None)`` for anything else."""
    def is_state(value):
        return isinstance(value, dict) and value and all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in value.items())
    if is_state(obj):
        return obj, 'top level'
    if isinstance(obj, dict):
        for key in NESTED_STATE_KEYS:
            if is_state(obj.get(key)):
                return obj[key], f"'{key}' entry"
    return None, None


def strip_wrapper_prefixes(state_dict):
    """Drop leading ``module.`` / ``_orig_mod.`` from every key (files saved from DDP or torch.compile)."""
    return {re.sub(r'^(module\.|_orig_mod\.)+', '', key): value for key, value in state_dict.items()}


def non_finite(state_dict):
    """Names of the floating-point tensors holding NaN or infinity (a diverged run's weights)."""
    return [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def load_state_dict(path, what=None):
    """The state dict of the file at ``path`` (prefixes stripped); one-line :class:`UserError` for a file that
    holds none, or whose weights are not all finite (argmax of NaN logits is class 0: a normal-looking table)."""
    state, _ = state_dict_of(read_checkpoint(path, what))
    prefix = f'{what}: ' if what else ''
    if state is None:
        raise UserError(f'{prefix}{path}: holds no state_dict (a mapping of parameter names to tensors)')
    bad = non_finite(state)
    if bad:
        raise UserError(f'{prefix}{path}: {len(bad)} tensor(s) hold NaN or infinite values (first: {bad[0]}); the '
                        f'run that wrote it diverged')
    return strip_wrapper_prefixes(state)


class LoadReport(NamedTuple):
    """How a state dict fits a module, by name and shape."""
    loaded: List[str]  # keys of the module found with the right shape
    missing: List[str]  # keys of the module absent from the file
    unexpected: List[str]  # keys of the file absent from the module
    mismatched: List[Tuple[str, tuple, tuple]]  # (key, shape in file, shape in module)

    def fits(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self, shown=5):
        """What does not fit, in one line: the missing, unexpected and differently shaped keys (first ``shown``)."""
        shapes = [f'{k}: file {list(a)} vs model {list(b)}' for k, a, b in self.mismatched]
        parts = ((self.missing, 'missing'), (self.unexpected, 'unexpected'), (shapes, 'with another shape'))
        return '; '.join(f'{len(keys)} {what} ({", ".join(keys[:shown])}{", ..." if len(keys) > shown else ""})'
                         for keys, what in parts if keys)


def compare(module, state_dict):
    """A :class:`LoadReport` of how ``state_dict`` fits ``module`` (by name and shape), loading nothing."""
    expected = {key: tuple(tensor.shape) for key, tensor in module.state_dict().items()}
    found = {key: tuple(tensor.shape) for key, tensor in state_dict.items()}
    return LoadReport([key for key, shape in expected.items() if found.get(key) == shape],
                      [key for key in expected if key not in found], [key for key in found if key not in expected],
                      [(key, found[key], shape) for key, shape in expected.items() if found.get(key, shape) != shape])


def submodule_weights(state, name):
    """Weights of sub-network ``name`` from a state dict in the SCNet layout (``name.*`` keys), or from a file
    that holds only that sub-network (bare keys, as the published DMNet file)."""
    prefix = f'{name}.'
    selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return selected if selected else state


def is_dmnet_only(net, state_dict):
    """The published stage-1 file: every key is a DMNet key (``conv1.0.depthwise.weight``), none a key of ``net``."""
    dmnet_keys, net_keys = set(net.dmnet.state_dict()), set(net.state_dict())
    return all(k in dmnet_keys and k not in net_keys for k in state_dict)


def load_scnet(model_cfg, path, device='cpu'):
    """The ``SCNet`` of ``model_cfg`` with the weights of the whole-SCNet file ``path``, in eval mode on ``device``;
    a file of another dataset, stage or widths is refused in one line before anything is loaded."""
    model = build_scnet(model_cfg, stage='correction')
    state = load_state_dict(path)
    report = compare(model, state)
    for key, file_shape, model_shape in report.mismatched:
        if model_shape[0] == model.n_classes and file_shape[0] != model.n_classes and file_shape[1:] == model_shape[1:]:
            raise UserError(f'{path}: checkpoint predicts {file_shape[0]} classes ({key}) but the config has '
                            f'model.n_classes={model.n_classes}; use the config of the dataset it was trained on')
    if is_dmnet_only(model, state):
        raise UserError(f'{path}: holds only the dmnet weights; inference needs a whole SCNet (the correction '
                        f'stage output)')
    if not report.fits():
        raise UserError(f'{path}: does not fit SCNet: not a whole SCNet of this config (model widths, stage?): '
                        f'{report.problems()}')
    model.load_state_dict(state)
    return model.to(device).eval()


def load_part(module, name, path, what, weights=None):
    """Load ``module`` strictly from the weights of sub-network ``name`` in ``path`` (``name.*`` keys of the
    SCNet layout, or the file's bare keys); ``weights``: the file's state dict when already read."""
    part = submodule_weights(load_state_dict(path, what) if weights is None else weights, name)
    report = compare(module, part)
    if not report.fits():
        raise UserError(f'{what}: {path} does not fit {name} ({type(module).__name__}) of this config: '
                        f'{report.problems()}')
    module.load_state_dict(part, strict=True)


def load_pretrained(net, path, what, required=PRETRAINED):
    """Load a file in the SCNet layout (a published ``pretrained_<dataset>.pth``) into the sub-networks of ``net``
    it covers; returns their names.  Non-strict across sub-networks as the paper's load, but each one loaded must fit
    completely and every name in ``required`` must be present."""
    weights = load_state_dict(path, what)
    present = Counter(key.split('.', 1)[0] for key in weights)
    loaded = [name for name in SUB_NETWORKS if name in present and getattr(net, name, None) is not None]
    absent = [name for name in required if name not in loaded]
    if absent:
        raise UserError(f'{what}: {path} holds no weights for {", ".join(absent)} '
                        f'(top-level names in the file: {", ".join(sorted(present)) or "none"})')
    for name in loaded:
        load_part(getattr(net, name), name, path, what, weights)
    return loaded
