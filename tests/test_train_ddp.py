"""The training entry point under torchrun: 2 CPU processes (gloo) must train exactly like one process with the
two per-process batches side by side; the command line and train.sh fail with one-line errors."""
import os
import subprocess
import sys

import pytest
import torch
from helpers import data_opts, load_tool, model_weights

from lib.train import engine
from lib.utils.config import REPO_ROOT, load_config


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_combined_batch(tmp_path, synthetic_data_cfg):
    # FlowNetS has no BatchNorm, so the mean of the two ranks' gradients equals the gradient of the combined
    # batch: the DistributedSampler deals ranks 0 and 1 the even and odd positions of the same permutation.
    config = os.path.join(REPO_ROOT, 'exp', 'synthetic', 'flow.yaml')
    opts = data_opts(synthetic_data_cfg) + [
        'model.flownet.width_mult=0.25', f'train.save_root={tmp_path}', f'train.tblog_root={tmp_path}',
        'train.max_iters=2', 'train.val_every=1', 'train.val_max_clips=3', 'seed=0']
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
               os.path.join(REPO_ROOT, 'tools', 'train.py'), config, '--opts', *opts, 'experiment=ddp',
               'train.batch_size=2']
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'on 2 process(es)' in done.stderr + done.stdout

    result = engine.main(load_config(config, opts + ['experiment=single', 'train.batch_size=4']))
    ddp = torch.load(tmp_path / 'ddp' / 'final.pth', weights_only=True)
    reference = model_weights(os.path.join(result['save_dir'], 'final.pth'))
    for key, value in reference.items():
        torch.testing.assert_close(ddp['model'][key], value, rtol=1e-4, atol=1e-6)
    assert len(ddp['rng']) == 2  # both ranks' RNG states, for an exact resume on 2 processes
    # Validation shards the 3 pairs over the ranks and all-reduces: the same EPE as one process.
    assert abs(ddp['progress']['best_score'] - result['metrics']['epe']) < 1e-5




def test_command_line_errors_are_one_line(capsys):
    tool = load_tool('train')
    config = os.path.join(REPO_ROOT, 'exp', 'synthetic', 'flow.yaml')
    assert tool.run([config, '--opts', 'train.learning_rate=1']) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and 'unknown config key "train.learning_rate"' in err
    assert tool.run([config, '--opts', 'data.root=/nonexistent', 'data.train_list=/nonexistent/list.txt']) == 1
    err = capsys.readouterr().err.strip()
    assert err.count('\n') == 0 and '/nonexistent/list.txt' in err


def test_synthetic_train_sh_needs_a_stage():
    script = os.path.join(REPO_ROOT, 'exp', 'synthetic', 'script', 'train.sh')
    done = subprocess.run(['bash', script, 'segmentatoin'], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "expected a stage" in done.stderr and "'segmentatoin'" in done.stderr


def test_every_experiment_config_loads():
    for name in ('dmnet_cityscapes', 'spatial_correction_cityscapes', 'dmnet_camvid', 'spatial_correction_camvid'):
        cfg = load_config(os.path.join(REPO_ROOT, 'exp', name, 'config.yaml'))
        assert cfg['experiment'] == name and cfg['seed'] == 666 and cfg['train']['epochs'] == 100
        assert cfg['train']['batch_size'] == (12 if cfg['stage'] == 'dmnet' else 4)
        assert cfg['train']['lr'] == 1e-4 and cfg['train']['lr_decay_at'] == 0.5
    for stage in ('segmentation', 'flow', 'dmnet', 'correction'):
        cfg = load_config(os.path.join(REPO_ROOT, 'exp', 'synthetic', f'{stage}.yaml'))
        assert cfg['stage'] == stage
