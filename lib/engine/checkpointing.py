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

from lib.model.checkpoint import strip_wrapper_prefixes
from lib.utils import distributed


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
