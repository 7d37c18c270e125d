"""Without ``--checkpoint``, tools/test_pda.py and tools/show.py load what the config trained: a config whose
``experiment:`` differs from its folder's name trains into ``<train.save_root>/<experiment>/`` and is evaluated and
drawn from there (the scripts no longer rebuild that path in bash)."""
import json
import os

import pytest
import torch
import yaml
from helpers import TINY_WIDTHS, load_tool, varied_tiny_scnet


@pytest.mark.slow
def test_a_renamed_experiment_trains_and_evaluates_the_same_folder(synthetic_root, tmp_path):
    weights = tmp_path / 'scnet.pth'
    torch.save(varied_tiny_scnet().state_dict(), weights)
    config = tmp_path / 'exp' / 'mine' / 'config.yaml'  # the folder would name the experiment "mine"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({
        'experiment': 'other', 'stage': 'correction', 'device': 'cpu', 'seed': 0, 'model': TINY_WIDTHS,
        'data': {'name': 'synthetic', 'root': synthetic_root, 'crop_size': [32, 64], 'num_workers': 0,
                 'pin_memory': False, 'train_list': os.path.join(synthetic_root, 'list', 'train.txt'),
                 'val_list': os.path.join(synthetic_root, 'list', 'val.txt')},
        'init': {'pretrained': str(weights), 'dmnet': str(weights)},
        'train': {'save_root': str(tmp_path / 'saved'), 'tblog_root': str(tmp_path / 'saved'), 'max_iters': 1,
                  'batch_size': 2, 'val_every': 0, 'log_every': 1},
        'eval': {'result_root': str(tmp_path / 'result'), 'distances': [1, 9], 'max_clips': 1, 'show_clips': [0]}}))
    assert load_tool('train').run([config]) == 0
    trained = tmp_path / 'saved' / 'other' / 'final.pth'  # val_every 0: no best.pth, the tools take final.pth
    assert trained.is_file() and not (tmp_path / 'saved' / 'mine').exists()

    assert load_tool('test_pda').run([config, '--no-progress']) == 0
    result = json.loads((tmp_path / 'result' / 'other' / 'final' / 'pda.json').read_text())
    assert result['checkpoint'] == str(trained)
    assert load_tool('show').run([config, '--tile-width', '64']) == 0
    assert (tmp_path / 'result' / 'other' / 'final' / 'show' / 'clip0_d9.png').is_file()
    assert sorted(os.listdir(tmp_path / 'result')) == ['other']


def test_a_validating_config_is_evaluated_from_best_pth(synthetic_root, tmp_path, capsys):
    config = tmp_path / 'exp' / 'mine' / 'config.yaml'
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({
        'experiment': 'other', 'device': 'cpu', 'train': {'save_root': str(tmp_path / 'saved'), 'val_every': 5},
        'eval': {'show_clips': [0]},
        'data': {'name': 'synthetic', 'root': synthetic_root,
                 'val_list': os.path.join(synthetic_root, 'list', 'val.txt')}}))
    for tool in ('test_pda', 'show'):  # nothing trained yet: the one-line error names the file the tool looked for
        assert load_tool(tool).run([config]) == 1
        assert str(tmp_path / 'saved' / 'other' / 'best.pth') in capsys.readouterr().err
