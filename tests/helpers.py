"""Helpers shared by the tests (fixtures live in conftest.py)."""
import copy
import importlib.util
import os

import torch
import torch.nn as nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    """The one way the tests load ``tools/<name>.py`` (tools/ is a folder of scripts, not a package): the module,
    with ``run(argv)``, its command line in this process (``main(parse_args(argv))``, the exit status)."""
    spec = importlib.util.spec_from_file_location(f'tool_{name}', os.path.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, 'run'):
        module.run = lambda argv: module.main(module.parse_args(argv))
    return module


TINY_WIDTHS = {'deeplab': {'width_mult': 0.125, 'middle_blocks': 1}, 'flownet': {'width_mult': 0.25},
               'cfnet': {'width_mult': 0.25}}
TINY_OPTS = ['model.deeplab.width_mult=0.125', 'model.deeplab.middle_blocks=1', 'model.flownet.width_mult=0.25',
             'model.cfnet.width_mult=0.25', 'model.n_classes=19']


def varied_tiny_scnet(seed=0, n_classes=19):
    """A random tiny SCNet (``TINY_WIDTHS``) whose argmax varies over the image and with the key-frame distance.

    At random init DeepLab predicts one class everywhere and FlowNetS hardly moves anything, which would make
    every comparison trivially equal; the classifiers get unit-variance weights and the flow heads are scaled up.
    """
    from lib.model import build_scnet
    from lib.utils.config import DEFAULTS
    torch.manual_seed(seed)
    cfg = copy.deepcopy(DEFAULTS['model'])
    cfg.update(copy.deepcopy(TINY_WIDTHS), n_classes=n_classes)
    net = build_scnet(cfg)
    with torch.no_grad():
        for sub in (net.deeplab, net.cfnet):
            classifier = [m for m in sub.modules() if isinstance(m, nn.Conv2d) and m.out_channels == n_classes][-1]
            classifier.weight.normal_(0.0, 1.0)
            classifier.bias.zero_()
        for m in net.flownet.modules():
            if isinstance(m, nn.Conv2d) and m.out_channels == 2:
                m.weight.mul_(5.0)
    return net.eval()
