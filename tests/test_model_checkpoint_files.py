"""tools/inspect_checkpoint.py and legacy (torch <= 1.5, non-zip) checkpoints read with weights_only=True."""
import hashlib
import json
import os

import pytest
import torch
import yaml
from helpers import TINY_WIDTHS, load_tool, varied_tiny_scnet

from lib.model import DMNet, load_scnet
from lib.model.checkpoint import read_checkpoint
from lib.utils.config import DEFAULTS


@pytest.fixture
def legacy_scnet(tmp_path):
    """A whole SCNet as the published files are: torch 1.5's non-zip format, DDP 'module.' keys."""
    net = varied_tiny_scnet(seed=3)
    path = tmp_path / 'spatial_correction_cityscapes.pth'
    torch.save({f'module.{k}': v for k, v in net.state_dict().items()}, path, _use_new_zipfile_serialization=False)
    return net, path


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / 'tiny.yaml'
    path.write_text(yaml.safe_dump({'model': dict(TINY_WIDTHS, n_classes=19)}))
    return path


def test_legacy_file_loads_with_weights_only(legacy_scnet):
    net, path = legacy_scnet
    with open(path, 'rb') as f:
        assert f.read(2) != b'PK'  # not a zip archive: the legacy pickle format
    state = read_checkpoint(str(path))
    assert len(state) == len(net.state_dict()) and all(k.startswith('module.') for k in state)
    model_cfg = dict(DEFAULTS['model'], **TINY_WIDTHS)
    evaluated = load_scnet(model_cfg, str(path), 'cpu')  # what tools/test_pda.py does with it
    for key, value in net.state_dict().items():
        assert torch.equal(evaluated.state_dict()[key], value), key


def test_inspect_describes_a_published_style_file(legacy_scnet, tiny_config, capsys):
    _, path = legacy_scnet
    tool = load_tool('inspect_checkpoint')
    assert tool.run([str(path), '--config', str(tiny_config), '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['format'] == 'legacy (torch <= 1.5, non-zip)' and info['kind'] == 'scnet'
    assert info['sha256'] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info['prefixes'] == {'module.': info['tensors']} and info['n_classes'] == 19
    assert info['dataset'] == 'cityscapes' and info['layout_match'] is True
    assert set(info['networks']) == {'deeplab', 'flownet', 'cfnet', 'dmnet'}
    assert all(c['match'] == c['tensors'] for c in info['networks'].values())
    assert 'spatial_correction_cityscapes/script/test_PDA.sh' in info['uses']
    assert tool.run([str(path), '--config', str(tiny_config)]) == 0
    text = capsys.readouterr().out
    assert 'legacy (torch <= 1.5, non-zip)' in text and "'module.' on" in text and 'matches' in text


def test_inspect_tells_kinds_and_mismatches_apart(tmp_path, tiny_config, capsys):
    tool = load_tool('inspect_checkpoint')
    dmnet = tmp_path / 'dmnet_cityscapes.pth'
    torch.save(DMNet().state_dict(), dmnet)
    assert tool.run([str(dmnet), '--json']) == 0
    assert json.loads(capsys.readouterr().out)['kind'] == 'dmnet_only'

    camvid = varied_tiny_scnet(n_classes=11).state_dict()
    pretrained = tmp_path / 'pretrained_camvid.pth'
    torch.save({k: v for k, v in camvid.items() if k.startswith(('deeplab.', 'flownet.'))}, pretrained)
    assert tool.run([str(pretrained), '--config', str(tiny_config), '--json']) == 1  # the config has 19 classes
    capsys.readouterr()
    camvid_config = tmp_path / 'camvid.yaml'
    camvid_config.write_text(yaml.safe_dump({'model': dict(TINY_WIDTHS, n_classes=11), 'data': {'name': 'camvid'}}))
    assert tool.run([str(pretrained), '--config', str(camvid_config), '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['kind'] == 'pretrained' and info['n_classes'] == 11 and info['dataset'] == 'camvid'
    assert 'init.pretrained of exp/dmnet_camvid' in info['uses']

    # Against the published (full) widths the tiny file does not fit: readable, exit status 1, and it says so.
    assert tool.run([str(pretrained)]) == 1
    assert 'does NOT match' in capsys.readouterr().out

    training = tmp_path / 'now.pth'
    torch.save({'model': camvid, 'stage': 'correction', 'iteration': 7, 'epoch': 1,
                'config': {'experiment': 'x'}}, training)
    assert tool.run([str(training), '--config', str(camvid_config), '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert info['training'] == {'stage': 'correction', 'iteration': 7, 'epoch': 1, 'experiment': 'x'}
    assert info['state_dict'] == "'model' entry" and info['kind'] == 'scnet'


@pytest.mark.parametrize('content', [b'not a checkpoint', None])
def test_unreadable_file_is_a_one_line_error(content, tmp_path, capsys):
    path = tmp_path / 'broken.pth'
    if content is not None:
        path.write_bytes(content)
    assert load_tool('inspect_checkpoint').run([str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f'error: {path}: ')


class Payload:
    """An arbitrary object: pickling it makes a file that weights_only loading must refuse."""


def test_code_carrying_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / 'code.pth'
    torch.save({'x': Payload()}, path)
    assert load_tool('inspect_checkpoint').run([str(path)]) == 1
    assert 'refused by torch.load(weights_only=True): loading it would run' in capsys.readouterr().err
    assert os.path.isfile(path)


def test_non_finite_weights_are_flagged(legacy_scnet, tiny_config, capsys):
    net, path = legacy_scnet
    state = net.state_dict()
    state['cfnet.predict_cc.weight'][0] = float('inf')
    torch.save(state, path)
    assert load_tool('inspect_checkpoint').run([str(path), '--config', str(tiny_config)]) == 1
    assert '1 tensor(s) hold NaN or infinity (first: cfnet.predict_cc.weight)' in capsys.readouterr().out
