"""Training checkpoints (``now.pth`` / ``best.pth`` / ``final.pth``) and the ``init:`` weights of a stage.

A training checkpoint is a dict that ``torch.load(..., weights_only=True)`` accepts::

    model       state dict in the SCNet key layout (``deeplab.*``, ``flownet.*``, ``dmnet.*``, ``cfnet.*``)
    optimizer   Adam state;  scaler: GradScaler state (fp16) or None
    progress    iteration, epoch, batches_done, epoch_complete, best_score (see lib/engine/train.py)
    iteration, epoch   copies of the progress entries, for a quick look
    rng         per-rank RNG states (python, numpy, torch, cuda) as plain lists and tensors
    config      the resolved config;  stage: its stage name

Files are read by ``lib.utils.checkpoint`` (the one reader); its ``load_checkpoint`` returns the ``model`` entry of
such a file (``init:`` files are read through it), so every stage's output can be the ``init:`` of the next one and ``final.pth`` of the correction
stage is what ``tools/test_pda.py`` loads.
"""
import random

import numpy as np
import torch

from lib.utils import distributed
from lib.utils.checkpoint import compare, load_checkpoint, strip_wrapper_prefixes, submodule_weights
from lib.utils.errors import UserError


def capture_rng_state():
    """This process's RNG states in types ``weights_only`` loading accepts (no numpy arrays, no tuples of them)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        'python': [py_version, list(py_internal), py_gauss],
        'numpy': [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state):
    py_version, py_internal, py_gauss = state['python']
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state['numpy']
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def gather_rng_states():
    """Every rank's RNG state, rank-ordered (a collective: all ranks must call it together)."""
    return distributed.all_gather_object(capture_rng_state())


def model_state(checkpoint):
    """The model state dict inside a loaded training checkpoint, wrapper prefixes (``module.``) dropped."""
    return strip_wrapper_prefixes(checkpoint['model'])


def _load_part(net, name, weights, path, what):
    """Load ``net.<name>`` strictly from ``weights`` (its keys or the SCNet layout); a mismatch is one line."""
    module = getattr(net, name)
    part = submodule_weights(weights, name)
    report = compare(module, part, name)
    if not report.fits():
        raise UserError(f'{what}: {path} does not fit {name} ({type(module).__name__}) of this config: '
                        f'{report.problems()}')
    module.load_state_dict(part, strict=True)


def load_submodule(net, name, path, what):
    """Load sub-network ``net.<name>`` strictly from ``path``; a missing file or a mismatch is one-line error
    after ``what``, the config key the path came from."""
    _load_part(net, name, strip_wrapper_prefixes(load_checkpoint(path, what)), path, what)


SUB_NETWORKS = ('deeplab', 'flownet', 'cfnet', 'dmnet')


def load_init_pretrained(net, path, what, required):
    """Load a published-style checkpoint (SCNet keys, e.g. DeepLab + FlowNet) into the sub-networks of ``net``
    it covers (``init.pretrained``).

    Like the paper's non-strict load, sub-networks the file does not hold are left alone (the published file has
    no DMNet/CFNet), sub-networks ``net`` does not have are skipped (the segmentation stage takes only DeepLab)
    and keys outside the SCNet layout are ignored; unlike it, every sub-network that is loaded must fit
    completely and every name in ``required`` must be present.  Returns the names of the loaded sub-networks.
    """
    weights = strip_wrapper_prefixes(load_checkpoint(path, what))
    present = {key.split('.', 1)[0] for key in weights}
    loaded = [name for name in SUB_NETWORKS if name in present and hasattr(net, name)]
    absent = [name for name in required if name not in loaded]
    if absent:
        raise UserError(f'{what}: {path} holds no weights for {", ".join(absent)} '
                        f'(top-level names in the file: {", ".join(sorted(present)) or "none"})')
    for name in loaded:
        _load_part(net, name, weights, path, what)
    return loaded
