"""tools/inspect_checkpoint.py on the files tools/train.py writes: every stage recognised from the config it
carries, compared with that config's networks, and its experiment's command suggested."""
import copy
import json
import os

import pytest
import torch
from helpers import REPO_ROOT, TINY_WIDTHS, load_tool, train_cfg

from lib.train import engine
from lib.utils.config import DEFAULTS

inspect = load_tool('inspect_checkpoint')
pytestmark = pytest.mark.slow  # four training runs


@pytest.fixture(scope='module')
def stages(tmp_path_factory, synthetic_root):
    """The four stages of the synthetic experiment (named as exp/synthetic/*.yaml names them), one iteration
    each on 32x64 crops, each initialised from the earlier stages' final.pth; returns the save root."""
    out = str(tmp_path_factory.mktemp('saved_model'))
    data = copy.deepcopy(DEFAULTS['data'])
    data.update(name='synthetic', root=synthetic_root, train_list=os.path.join(synthetic_root, 'list', 'train.txt'),
                val_list=os.path.join(synthetic_root, 'list', 'val.txt'), crop_size=[32, 64], num_workers=0,
                pin_memory=False)
    final = {stage: os.path.join(out, f'synthetic_{stage}', 'final.pth') for stage in ('segmentation', 'flow', 'dmnet')}
    inits = {'dmnet': [f'init.deeplab={final["segmentation"]}', f'init.flownet={final["flow"]}'],
             'correction': [f'init.pretrained={final["dmnet"]}', f'init.dmnet={final["dmnet"]}']}
    for stage in ('segmentation', 'flow', 'dmnet', 'correction'):
        engine.main(train_cfg(stage, out, data, f'experiment=synthetic_{stage}', 'train.max_iters=1',
                              *inits.get(stage, ())))
    return out


def inspected(capsys, *argv):
    status = inspect.run([*argv, '--json'])
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('stage, kind, key', [('segmentation', 'deeplab', 'deeplab'), ('flow', 'flownet', 'flownet'),
                                              ('dmnet', 'scnet_dmnet', 'dmnet')])
def test_an_early_stage_file_is_the_init_of_the_next_stage(stages, stage, kind, key, capsys, monkeypatch):
    path = os.path.join(stages, f'synthetic_{stage}', 'final.pth')
    status, info = inspected(capsys, path)
    assert status == 0 and info['kind'] == kind and info['layout_match'] is True
    assert info['compared_with'] == 'its training config' and info['training']['stage'] == stage
    readers = 'exp/synthetic/correction.yaml' if stage == 'dmnet' else 'exp/synthetic/dmnet.yaml'
    monkeypatch.chdir(REPO_ROOT)
    _, info = inspected(capsys, path)
    # The experiment's configs read saved_model/...: this file (elsewhere) goes in with --opts.
    assert info['uses'].startswith(f'init.{key} of {readers}') and info['uses'].endswith(
        f'python tools/train.py {readers} --opts init.{key}={path}'), info['uses']
    # With SAVE_ROOT pointing at the file's root, the config reads this very file: no --opts needed.
    monkeypatch.setenv('SAVE_ROOT', stages)
    _, info = inspected(capsys, path)
    assert info['uses'].endswith(f'python tools/train.py {readers}'), info['uses']


def test_a_correction_stage_file_gets_its_experiments_evaluation_command(stages, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    for name in ('final.pth', 'now.pth'):
        path = os.path.join(stages, 'synthetic_correction', name)
        status, info = inspected(capsys, path)
        assert status == 0 and info['kind'] == 'scnet' and info['layout_match'] is True
        assert info['uses'].startswith(f'python tools/test_pda.py exp/synthetic/correction.yaml --checkpoint {path}')
        assert info['dataset'] == 'cityscapes'  # 19 classes; the role comes from the training config, not from it
    assert inspect.run([path]) == 0
    text = capsys.readouterr().out
    assert 'layout    matches the networks of its training config' in text and 'Cityscapes' not in text


def test_an_experiment_outside_exp_falls_back_to_the_config_beside_the_file(stages, tmp_path, capsys):
    checkpoint = torch.load(os.path.join(stages, 'synthetic_correction', 'final.pth'), weights_only=True)
    checkpoint['config']['experiment'] = 'mine'
    path = str(tmp_path / 'final.pth')
    torch.save(checkpoint, path)
    status, info = inspected(capsys, path)
    assert status == 0 and info['uses'].startswith(f'python tools/test_pda.py <the config of mine> --checkpoint {path}')
    (tmp_path / 'config.yaml').write_text('experiment: mine\n')  # what tools/train.py writes beside its files
    _, info = inspected(capsys, path)
    assert info['uses'].startswith(f'python tools/test_pda.py {tmp_path / "config.yaml"} --checkpoint {path}')


def test_a_file_that_does_not_fit_the_given_config_exits_1(stages, tmp_path, capsys):
    path = os.path.join(stages, 'synthetic_correction', 'final.pth')
    published = os.path.join(REPO_ROOT, 'exp', 'synthetic', 'correction.yaml')  # wider networks than the tiny run's
    status, info = inspected(capsys, path, '--config', published)
    assert status == 1 and info['layout_match'] is False and info['compared_with'] == 'the given config'
    tiny = tmp_path / 'tiny.yaml'
    tiny.write_text(json.dumps({'model': dict(TINY_WIDTHS, n_classes=11), 'data': {'name': 'camvid'}}))  # 11 classes
    status, info = inspected(capsys, path, '--config', tiny)
    assert status == 1 and info['networks']['deeplab']['shape_mismatch']
