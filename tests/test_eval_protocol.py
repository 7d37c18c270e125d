"""The evaluation protocol of each dataset's original test script, through the shipped paper configs, and where
the results go.

The reference below is written from the original ``test_PDA.py`` scripts: one distance at a time, the key frame
through DeepLab, a bilinear ``scale_factor=0.25`` resize of the key image (the original's ``F.upsample``), flow
``flownet(cat[img_2, img_1])`` and warp of logits and image step by step, ``F.interpolate(.., scale_factor=4)``
of the logits, of DMNet's map and of CFNet's logits, merge, argmax.  The Cityscapes script calls the resizes
without ``align_corners`` (PyTorch's default, False), the CamVid script with ``align_corners=True``.
"""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO_ROOT, TINY_OPTS, load_tool, varied_tiny_scnet

from lib.dataset import build_dataset, build_eval_loader
from lib.utils.config import DEFAULTS, load_config

# How each original test script called the resizes around the propagation.
ORIGINAL_RESIZE = {'spatial_correction_cityscapes': {}, 'spatial_correction_camvid': {'align_corners': True}}
DISTANCES = [1, 5, 9]


@torch.no_grad()
def original_script_confusions(net, loader, distances, resize, n=19):
    """The original test_PDA.py loop; ``resize`` holds the keyword arguments its resizes were called with."""
    confusions = {}
    for d in distances:
        confusion = torch.zeros(n, n, dtype=torch.int64)
        for frames, gt in loader:
            img_list = list(frames.unbind(1))
            img = img_list[9 - d]
            feat = net.deeplab(img)
            warp_im = F.interpolate(img, scale_factor=0.25, mode='bilinear', **resize)
            for i in range(d):
                img_1, img_2 = img_list[9 - d + i], img_list[10 - d + i]
                flow = net.flownet(torch.cat([img_2, img_1], dim=1))
                feat = net.warpnet(feat, flow)
                warp_im = net.warpnet(warp_im, flow)
            feat = F.interpolate(feat, scale_factor=4, mode='bilinear', **resize)
            img_2_down = F.interpolate(img_2, scale_factor=0.25, mode='bilinear', **resize)
            dm = F.interpolate(net.dmnet(warp_im, img_2_down), scale_factor=4, mode='bilinear', **resize)
            feat_cc = F.interpolate(net.cfnet(img_2), scale_factor=4, mode='bilinear', **resize)
            out = torch.argmax(feat * (1 - dm) + feat_cc * dm, dim=1)
            keep = gt != 255
            confusion += torch.bincount(gt[keep] * n + out[keep], minlength=n * n).view(n, n)
        confusions[d] = confusion
    return confusions


def synthetic_opts(root, result_root):
    return ['data.name=synthetic', f'data.root={root}', f'data.val_list={os.path.join(root, "list", "val.txt")}',
            'data.num_workers=0', 'data.pin_memory=false', 'eval.split=val', f'eval.distances={DISTANCES}',
            f'eval.result_root={result_root}', 'device=cpu', *TINY_OPTS]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp('published')
    path = folder / 'spatial_correction_cityscapes.pth'
    # As the published files: a DDP state_dict with 'module.' prefixes.
    torch.save({f'module.{k}': v for k, v in varied_tiny_scnet().state_dict().items()}, path)
    return path


@pytest.fixture(scope='module')
def val_loader(synthetic_root):
    data = copy.deepcopy(DEFAULTS['data'])
    data.update(name='synthetic', root=synthetic_root, val_list=os.path.join(synthetic_root, 'list', 'val.txt'),
                num_workers=0)
    return build_eval_loader(build_dataset(data, 'val', 'pda'), batch_size=1, pin_memory=False)


def test_paper_configs_carry_their_test_scripts_convention():
    for experiment, expected in (('spatial_correction_cityscapes', [False, True]),
                                 ('spatial_correction_camvid', True)):
        cfg = load_config(os.path.join(REPO_ROOT, 'exp', experiment, 'config.yaml'))
        assert cfg['model']['align_corners'] is True, experiment  # training keeps the training convention
        assert cfg['eval']['align_corners'] == expected, experiment
        assert cfg['eval']['tf32'] is False and cfg['train']['tf32'] is False, experiment


@pytest.mark.parametrize('experiment', sorted(ORIGINAL_RESIZE))
def test_paper_config_labels_pixels_as_the_original_test_script(experiment, checkpoint, val_loader, synthetic_root,
                                                               tmp_path):
    config = os.path.join(REPO_ROOT, 'exp', experiment, 'config.yaml')
    argv = [config, '--checkpoint', str(checkpoint), '--no-progress', '--no-per-frame', '--no-propagation-only',
            '--opts', *synthetic_opts(synthetic_root, tmp_path)]
    assert load_tool('test_pda').run(argv) == 0
    folder = tmp_path / experiment / 'spatial_correction_cityscapes'
    result = json.loads((folder / 'pda.json').read_text())
    net = varied_tiny_scnet()
    expected = original_script_confusions(net, val_loader, DISTANCES, ORIGINAL_RESIZE[experiment])
    for i, d in enumerate(DISTANCES):
        assert torch.equal(torch.tensor(result['confusion']['davss'][i]), expected[d]), f'd={d}'
    # The other convention labels some pixels differently: the comparison above can tell them apart.
    other = {} if ORIGINAL_RESIZE[experiment] else {'align_corners': True}
    flipped = original_script_confusions(net, val_loader, DISTANCES, other)
    assert any(not torch.equal(flipped[d], expected[d]) for d in DISTANCES)
    # Cityscapes reports the other script's convention (a03c1ea's) from the same run; CamVid has one script.
    others = result['other_protocols']
    assert len(others) == (0 if ORIGINAL_RESIZE[experiment] else 1)
    for entry in others:
        for i, d in enumerate(DISTANCES):
            assert torch.equal(torch.tensor(entry['confusion']['davss'][i]), flipped[d]), f'other, d={d}'
    # The protocol is written down with the numbers.
    ac = ORIGINAL_RESIZE[experiment].get('align_corners', False)
    assert result['protocol']['align_corners'] is ac and result['align_corners'] is ac
    assert result['protocol']['source'] == 'eval.align_corners' and result['protocol']['tf32'] is False
    markdown = (folder / 'pda.md').read_text()
    assert f'protocol: align_corners={ac} (eval.align_corners), tf32=False' in markdown


@pytest.mark.slow
def test_test_pda_script_writes_one_folder_per_checkpoint(checkpoint, synthetic_root, tmp_path):
    """``CHECKPOINT=<file> bash exp/<exp>/script/test_PDA.sh``: results under result/<exp>/<file stem>/, moved by
    RESULT_ROOT; a second checkpoint does not touch the first one's results."""
    best = tmp_path / 'ckpt' / 'best.pth'
    best.parent.mkdir()
    best.write_bytes(checkpoint.read_bytes())
    results = tmp_path / 'results'
    opts = [o for o in synthetic_opts(synthetic_root, results) if not o.startswith('eval.result_root')]
    env = dict(os.environ, RESULT_ROOT=str(results), PYTHON=sys.executable,
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    script = os.path.join(REPO_ROOT, 'exp', 'spatial_correction_cityscapes', 'script', 'test_PDA.sh')
    first = results / 'spatial_correction_cityscapes' / 'best' / 'pda.json'
    for ckpt in (best, checkpoint):
        done = subprocess.run(['bash', script, '--no-progress', '--no-per-frame', '--no-propagation-only',
                               '--opts', *opts], env=dict(env, CHECKPOINT=str(ckpt)), capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        if ckpt == best:
            stamp = first.stat().st_mtime_ns
    second = results / 'spatial_correction_cityscapes' / 'spatial_correction_cityscapes' / 'pda.json'
    assert first.is_file() and second.is_file() and first.stat().st_mtime_ns == stamp
    assert json.loads(first.read_text())['davss'] == json.loads(second.read_text())['davss']  # the same weights
    assert sorted(os.listdir(results / 'spatial_correction_cityscapes')) == ['best', 'spatial_correction_cityscapes']


def test_bad_eval_align_corners_is_a_one_line_error(checkpoint, synthetic_root, tmp_path, capsys):
    config = os.path.join(REPO_ROOT, 'exp', 'spatial_correction_cityscapes', 'config.yaml')
    argv = [config, '--checkpoint', str(checkpoint), '--opts', *synthetic_opts(synthetic_root, tmp_path),
            'eval.align_corners=sometimes']
    assert load_tool('test_pda').run(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {config}: eval.align_corners: expected true, false, null or a list")
    assert not os.listdir(tmp_path)  # nothing written
