"""Shared test fixtures (used by several areas' tests; keep the names stable).

- ``synthetic_root`` (session): path of a TINY synthetic set generated once per test session into a temporary
  folder: 64x128 frames, 2 train + 1 val snippets of 30 frames (frame 19 labelled), seed 0, ``medium``
  difficulty, written by :func:`lib.synthetic.writer.generate`.  Lists are ``<root>/list/train.txt`` and
  ``<root>/list/val.txt``; every-frame labels and ground-truth flow under ``<root>/synthetic_extra/``.
  Treat it as read-only (other tests share it).
- ``synthetic_data_cfg`` (function): a fresh ``data:`` config dict for that set (``name: synthetic``, absolute
  root and lists, ``crop_size: None``, ``num_workers: 0``, ``pin_memory: False``), built on
  ``lib.utils.config.DEFAULTS['data']``, ready for ``lib.dataset.build_dataset(cfg, split, mode)``.  Tests
  may modify their copy.
- ``model_files`` (module): ``(config path, checkpoint path)`` of a random-init SCNet of ``TINY_VIDEO_MODEL``
  (the video tests' network; ``helpers.write_video_model``).
"""
import copy
import os

import pytest
import torch
from helpers import write_video_model

from lib import synthetic
from lib.utils.config import DEFAULTS

TINY_SIZE = (64, 128)
TINY_SNIPPETS = {'n_train': 2, 'n_val': 1}


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic'))
    synthetic.generate(root, size=TINY_SIZE, seed=0, difficulty='medium', workers=1, **TINY_SNIPPETS)
    return root


@pytest.fixture
def synthetic_data_cfg(synthetic_root):
    cfg = copy.deepcopy(DEFAULTS['data'])
    cfg.update({
        'name': 'synthetic',
        'root': synthetic_root,
        'train_list': os.path.join(synthetic_root, 'list', 'train.txt'),
        'val_list': os.path.join(synthetic_root, 'list', 'val.txt'),
        'test_list': None,
        'crop_size': None,
        'hflip': False,
        'scale_range': [1.0, 1.0],
        'num_workers': 0,
        'pin_memory': False,
    })
    return cfg


@pytest.fixture(scope='session', autouse=True)
def one_torch_thread():
    """One intra-op thread for the whole suite: the tests run many tiny layers, where a second OpenMP thread only
    adds synchronisation (measured several times slower on a 2-core machine with any other load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def model_files(tmp_path_factory):
    """A tiny config and a random-init checkpoint of it."""
    config, checkpoint, _ = write_video_model(str(tmp_path_factory.mktemp('model')))
    return config, checkpoint
