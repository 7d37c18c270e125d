"""Builders shared by the tests (fixtures live in conftest.py): loading a tool, tiny networks and their configs,
training configs and experiments, fake dataset folders.  Test modules import from here, never from each other."""
import copy
import importlib.util
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    """The one way the tests load ``tools/<name>.py`` (tools/ is a folder of scripts, not a package): the module,
    with ``run(argv)``, its command line in this process as ``python tools/<name>.py`` runs it
    (``cli.run(main, parse_args(argv))``): the exit status, errors printed as the tool prints them."""
    from lib.utils import cli

    spec = importlib.util.spec_from_file_location(f'tool_{name}', os.path.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(argv):
        try:
            cli.run(module.main, module.parse_args([str(a) for a in argv]))
        except SystemExit as done:
            return done.code
    module.run = run
    return module


# ---------------------------------------------------------------------------------------------- tiny networks
# Two sizes: TINY_WIDTHS for the engine and evaluation tests; TINY_VIDEO_MODEL, narrower still, for the video
# tests that run many frames.
TINY_WIDTHS = {'deeplab': {'width_mult': 0.125, 'middle_blocks': 1}, 'flownet': {'width_mult': 0.25},
               'cfnet': {'width_mult': 0.25}}
TINY_VIDEO_MODEL = {'n_classes': 19, 'deeplab': {'width_mult': 0.0625, 'middle_blocks': 1},
                    'flownet': {'width_mult': 0.125}, 'cfnet': {'width_mult': 0.125}}


def width_opts(widths=None, prefix='model.'):
    """``--opts`` strings of the widths: ``['model.deeplab.width_mult=0.125', ...]``."""
    widths = TINY_WIDTHS if widths is None else widths
    return [f'{prefix}{net}.{key}={value}' for net, options in widths.items() for key, value in options.items()]


TINY_OPTS = width_opts() + ['model.n_classes=19']


def tiny_model_cfg(align_corners=True, n_classes=19):
    """The ``model:`` section of a tiny SCNet (``TINY_WIDTHS``)."""
    from lib.utils.config import DEFAULTS
    cfg = copy.deepcopy(DEFAULTS['model'])
    cfg.update(copy.deepcopy(TINY_WIDTHS), n_classes=n_classes, align_corners=align_corners)
    return cfg


def varied_tiny_scnet(seed=0, n_classes=19, align_corners=True):
    """A random tiny SCNet (``TINY_WIDTHS``) whose argmax varies over the image and with the key-frame distance.

    At random init DeepLab predicts one class everywhere and FlowNetS hardly moves anything, which would make
    every comparison trivially equal; the classifiers get unit-variance weights and the flow heads are scaled up.
    """
    from lib.model import build_scnet
    torch.manual_seed(seed)
    net = build_scnet(tiny_model_cfg(align_corners, n_classes))
    with torch.no_grad():
        for sub in (net.deeplab, net.cfnet):
            classifier = [m for m in sub.modules() if isinstance(m, nn.Conv2d) and m.out_channels == n_classes][-1]
            classifier.weight.normal_(0.0, 1.0)
            classifier.bias.zero_()
        for m in net.flownet.modules():
            if isinstance(m, nn.Conv2d) and m.out_channels == 2:
                m.weight.mul_(5.0)
    return net.eval()


# --------------------------------------------------------------------------------------- configs, experiments

def train_cfg(stage, out_dir, data_cfg, *opts):
    """A resolved config for a 2-iteration run of ``stage`` with the tiny networks, outputs under ``out_dir``."""
    from lib.utils.config import load_config
    cfg = load_config(None, [f'stage={stage}', f'experiment={stage}', f'train.save_root={out_dir}',
                             f'train.tblog_root={out_dir}', 'train.batch_size=2', 'train.max_iters=2',
                             'train.val_every=0', 'train.log_every=1', 'seed=0', *width_opts(), *opts])
    cfg['data'] = copy.deepcopy(data_cfg)
    return cfg


def flow_cfg(out_dir, data_cfg, name, *opts):
    """:func:`train_cfg` of the flow stage: 5 iterations of batch 16, experiment ``name``."""
    return train_cfg('flow', out_dir, data_cfg, f'experiment={name}', 'train.max_iters=5', 'train.batch_size=16',
                     *opts)


def data_opts(data_cfg):
    """``--opts`` strings that point a config at the dataset of ``data_cfg`` (no workers, no crops or flips)."""
    return [f'data.{key}={data_cfg[key]}' for key in ('name', 'root', 'train_list', 'val_list')] + [
        'data.num_workers=0', 'data.crop_size=null', 'data.hflip=false']


def model_weights(path):
    """The ``model`` entry of a training checkpoint."""
    return torch.load(path, map_location='cpu', weights_only=True)['model']


def write_experiment(folder, data_cfg, n_classes=19, **eval_cfg):
    """A config for the tiny synthetic set and a training-style checkpoint (``{'model': state_dict}``) of a
    :func:`varied_tiny_scnet`; results go to ``<folder>/pda_test/<checkpoint stem>``."""
    os.makedirs(folder, exist_ok=True)
    cfg = {'experiment': 'pda_test', 'device': 'cpu', 'model': tiny_model_cfg(),
           'data': data_cfg, 'eval': {'split': 'train', 'distances': [1, 9], 'result_root': str(folder), **eval_cfg}}
    config = os.path.join(folder, 'config.yaml')
    with open(config, 'w') as f:
        yaml.safe_dump(cfg, f)
    checkpoint = os.path.join(folder, 'final.pth')
    torch.save({'model': varied_tiny_scnet(n_classes=n_classes).state_dict()}, checkpoint)
    return config, checkpoint


def write_video_model(folder, prepare=None):
    """``folder/tiny.yaml`` (``TINY_VIDEO_MODEL``) and ``folder/tiny.pth``, a random-init SCNet of it (seed 0,
    eval mode) after ``prepare(net)`` if given; returns ``(config path, checkpoint path, net)``."""
    from lib.model import build_scnet
    from lib.utils.config import load_config
    config = os.path.join(folder, 'tiny.yaml')
    with open(config, 'w') as f:
        yaml.safe_dump({'device': 'cpu', 'model': TINY_VIDEO_MODEL, 'data': {'name': 'cityscapes'}}, f)
    torch.manual_seed(0)
    net = build_scnet(load_config(config)['model']).eval()
    if prepare is not None:
        prepare(net)
    checkpoint = os.path.join(folder, 'tiny.pth')
    torch.save(net.state_dict(), checkpoint)
    return config, checkpoint, net


# ----------------------------------------------------------------------------------------------- fake datasets
H, W = 16, 32  # frame size of the fake Cityscapes / CamVid folders


def index_frame(index):
    """A frame whose pixels encode its frame index (so order is checkable) plus a gradient (so crops are)."""
    frame = np.zeros((H, W, 3), dtype=np.uint8)
    frame[..., 0] = index * 8
    frame[..., 1] = np.arange(W, dtype=np.uint8)[None, :] * 7
    frame[..., 2] = np.arange(H, dtype=np.uint8)[:, None] * 15
    return frame  # BGR as written; red channel of the decoded RGB frame = gradient over rows


def fake_label():
    label = (np.arange(H * W).reshape(H, W) % 19).astype(np.uint8)
    label[0, :4] = 255
    return label


def write_image(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(path, image)


def make_cityscapes(root, labelled=(19,), first=0, last=29, city='aachen', seq=0):
    """A fake Cityscapes sequence folder with frames first..last and labels of ``labelled``; returns the list."""
    for index in range(first, last + 1):
        write_image(os.path.join(root, f'leftImg8bit_sequence/train/{city}/{city}_{seq:06d}_{index:06d}_'
                                       f'leftImg8bit.png'), index_frame(index))
    lines = []
    for index in labelled:
        label_rel = f'gtFine/train/{city}/{city}_{seq:06d}_{index:06d}_gtFine_labelTrainIds.png'
        write_image(os.path.join(root, label_rel), fake_label())
        lines.append(f'leftImg8bit_sequence/train/{city}/{city}_{seq:06d}_{index:06d}_leftImg8bit.png {label_rel}\n')
    list_path = os.path.join(root, 'list.txt')
    with open(list_path, 'w') as f:
        f.writelines(lines)
    return list_path


def make_camvid(root, labelled_video_frame=30):
    """A fake CamVid folder: the 13 video frames up to the labelled one, its label, and the list."""
    for index in range(labelled_video_frame - 12, labelled_video_frame + 1):
        write_image(os.path.join(root, f'video_image/0001TP/0001TP_{index:06d}.png'), index_frame(index % 25))
    write_image(os.path.join(root, 'label/0001TP_006690.png'), (fake_label() % 11).astype(np.uint8))
    list_path = os.path.join(root, 'list.txt')
    with open(list_path, 'w') as f:
        f.write(f'video_image/0001TP/0001TP_{labelled_video_frame:06d}.png label/0001TP_006690.png\n')
    return list_path


# ------------------------------------------------------------------------------------------------------- video

def moving_scene(height, width, n_frames=12):
    """RGB uint8 frames of a textured background with a bright square moving right by 3 pixels per frame."""
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (7, 7), 0)
    frames = []
    for t in range(n_frames):
        frame = np.roll(background, t, axis=1).copy()
        x = 5 + 3 * t
        frame[height // 4: height // 4 + 15, x:x + 15] = (250, 240, 30)
        frames.append(frame)
    return frames


def write_frame_folder(folder, frames):
    """``frame0.png``, ``frame1.png``, ... of RGB ``frames`` in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for t, frame in enumerate(frames):
        # Unpadded numbers on purpose: frame10 must come after frame9.
        cv2.imwrite(os.path.join(folder, f'frame{t}.png'), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return str(folder)


def run_infer_video(model_files, *args):
    """``tools/infer_video.py`` in this process with the tiny model of the ``model_files`` fixture."""
    config, checkpoint = model_files
    return load_tool('infer_video').run([config, '--checkpoint', checkpoint, *map(str, args)])


def assert_one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    # The progress bar shares stderr (carriage returns); the error is one line of its own.
    errors = [line for line in err.replace('\r', '\n').splitlines() if line.startswith('error:')]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], err


def train_killed_at_step(monkeypatch, engine, step, cfg):
    """``engine.main(cfg)`` killed (KeyboardInterrupt) at its ``step``-th ``train_step``, as a SIGINT would."""
    real_step, calls = engine.train_step, []

    def killed(run, data, accumulate):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real_step(run, data, accumulate)

    monkeypatch.setattr(engine, 'train_step', killed)
    with pytest.raises(KeyboardInterrupt):
        engine.main(cfg)
    monkeypatch.setattr(engine, 'train_step', real_step)
