"""Distributed training on the CPU (gloo, 2 processes): the sharded validation that picks best.pth sees the
BatchNorm statistics that are saved, and a hung rank stops the others after the collective timeout with one line."""
import os
import subprocess
import sys

import pytest
import torch
from helpers import data_opts, width_opts

from lib.train import engine
from lib.utils.config import REPO_ROOT, load_config


def torchrun(script_args, env_extra=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1', **(env_extra or {}))
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', *script_args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_validation_after_ddp_uses_the_saved_batchnorm_statistics(tmp_path, synthetic_data_cfg):
    # bn_momentum 1: each rank's running statistics become those of its own last batch, so before the fix rank 1
    # validated its half of the samples with statistics that differ from rank 0's (the saved ones).
    config = os.path.join(REPO_ROOT, 'exp', 'synthetic', 'segmentation.yaml')
    opts = data_opts(synthetic_data_cfg) + [
        *width_opts(), f'train.save_root={tmp_path}', f'train.tblog_root={tmp_path}', 'train.max_iters=1',
        'train.batch_size=2', 'train.val_every=1', 'train.val_split=train', 'train.bn_momentum=1.0', 'seed=0',
        'experiment=ddp']
    done = torchrun([os.path.join(REPO_ROOT, 'tools', 'train.py'), config, '--opts', *opts])
    assert done.returncode == 0, done.stderr[-3000:]
    saved = torch.load(tmp_path / 'ddp' / 'final.pth', weights_only=True)

    cfg = load_config(config, opts)
    stage = engine.get_stage('segmentation')
    net = stage.build_net(cfg['model'])
    net.load_state_dict(saved['model'])
    metrics = stage.validate(net, stage.val_loader(cfg, 'train'), cfg, torch.device('cpu'), False)
    assert abs(metrics['miou'] - saved['progress']['best_score']) < 1e-9, (metrics['miou'],
                                                                           saved['progress']['best_score'])


HANG_SCRIPT = """
import os, sys, time
sys.path.insert(0, {tests!r})
from helpers import load_tool
from lib.train import engine
real_step = engine.train_step
def hung_on_rank_1(run, data, accumulate):
    if int(os.environ['RANK']) == 1:
        time.sleep(60)  # never joins the collectives of its step
    return real_step(run, data, accumulate)
engine.train_step = hung_on_rank_1
sys.exit(load_tool('train').run(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_hung_rank_stops_the_others_after_the_timeout_with_one_line(tmp_path, synthetic_data_cfg):
    script = tmp_path / 'hang.py'
    script.write_text(HANG_SCRIPT.format(tests=os.path.join(REPO_ROOT, 'tests')))
    opts = data_opts(synthetic_data_cfg) + ['data.crop_size=[32,64]', 'model.flownet.width_mult=0.25',
                                            f'train.save_root={tmp_path}', f'train.tblog_root={tmp_path}',
                                            'train.max_iters=2', 'train.val_every=0', 'experiment=hang']
    done = torchrun([str(script), os.path.join(REPO_ROOT, 'exp', 'synthetic', 'flow.yaml'), '--opts', *opts],
                    env_extra={'DIST_TIMEOUT': '3'}, timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith('error: rank 0 of 2')]
    assert errors and 'did not answer within 3 s (DIST_TIMEOUT)' in errors[0], done.stderr[-3000:]
