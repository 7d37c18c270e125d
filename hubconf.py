"""torch.hub entry points of DAVSS.  Weights come from a local file only: nothing is downloaded.

    import torch
    net = torch.hub.load('/path/to/this/repo', 'scnet', source='local', n_classes=19,
                         checkpoint='saved_model/pretrained/spatial_correction_cityscapes.pth')
    seg = torch.hub.load('/path/to/this/repo', 'video_segmenter', source='local',
                         config='exp/spatial_correction_cityscapes/config.yaml', checkpoint='.../best.pth')

Without ``checkpoint`` the networks are randomly initialised.  A relative ``config`` is taken from the repository
root, like the paths inside configs, whatever the working directory; ``checkpoint`` is an ordinary path.  The
published files and where they go: docs/models.md.
"""
import os

from lib import VideoSegmenter
from lib.model import DeepLabV3Plus, build_scnet, load_scnet
from lib.model.checkpoint import load_part
from lib.utils.config import load_config, resolve_path

dependencies = ['torch', 'torchvision', 'yaml', 'cv2', 'numpy']


def _model_config(config, n_classes, overrides):
    """The ``model:`` section: defaults (the published architecture), a YAML file, then keyword overrides."""
    model = load_config(resolve_path(config))['model']
    if n_classes is not None:
        model['n_classes'] = n_classes
    for key, value in overrides.items():
        if key not in model:
            raise ValueError(f'hubconf: unknown model option "{key}"; expected some of {sorted(model)}')
        model[key] = value
    return model


def scnet(checkpoint=None, config=None, n_classes=None, **model_options):
    """The whole DAVSS system (``lib.model.SCNet``) in eval mode.

    Args:
        checkpoint: local path of a whole-SCNet checkpoint (published ``spatial_correction_*`` or our own), loaded
            strictly; None for random weights.
        config: optional experiment YAML (relative to the repository root) whose ``model:`` section builds the
            network (default: the published architecture, 19 classes).
        n_classes: 19 (Cityscapes) or 11 (CamVid), overriding the config's.
        model_options: other ``model:`` keys (``align_corners``, ``deeplab={'width_mult': ...}``, ...).
    """
    model_cfg = _model_config(config, n_classes, model_options)
    if checkpoint is not None:
        return load_scnet(model_cfg, checkpoint)
    return build_scnet(model_cfg, stage='correction').eval()


def deeplabv3plus(checkpoint=None, n_classes=19, width_mult=1.0, middle_blocks=16):
    """The key-frame network alone (DeepLabv3+, Xception-65), eval mode; logits at 1/4 resolution.

    ``checkpoint``: a local file holding DeepLab weights: bare DeepLab keys, a whole SCNet, or the published
    ``pretrained_<dataset>.pth`` (its ``deeplab.*`` weights, ``lib.model.checkpoint.load_part``).
    """
    net = DeepLabV3Plus(n_classes, width_mult=width_mult, middle_blocks=middle_blocks)
    if checkpoint is not None:
        load_part(net, 'deeplab', checkpoint, 'checkpoint')
    return net.eval()


def video_segmenter(config, checkpoint, policy='fixed:5', fast=False, backend='torch', **kwargs):
    """``lib.VideoSegmenter.from_config``: iterate ``seg(frames)`` for label maps, ``seg.run(path, out)`` for files."""
    config = resolve_path(config) if isinstance(config, (str, os.PathLike)) else config
    return VideoSegmenter.from_config(config, checkpoint, policy=policy, fast=fast, backend=backend, **kwargs)
