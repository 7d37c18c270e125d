"""Training never overwrites another run, never segfaults on a diverging run, never resumes into skipped data, and
fails in one line: experiment-folder claims and locks, the non-finite flow guard, the resume layout check, config
values, full disks and errors from DataLoader workers (CPU, tiny synthetic set)."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from helpers import flow_cfg, load_tool, train_cfg, train_killed_at_step, width_opts

from lib.model.scnet import build_scnet
from lib.train import engine, resume
from lib.utils.config import REPO_ROOT, load_config
from lib.utils.errors import UserError
from lib.utils.outputs import LOCK, FolderLock

train_tool = load_tool('train')
FLOW_CONFIG = os.path.join(REPO_ROOT, 'exp', 'synthetic', 'flow.yaml')


def cli_opts(data_cfg, out, *extra):
    return ['--opts', *[f'data.{k}={data_cfg[k]}' for k in ('name', 'root', 'train_list', 'val_list')],
            'data.num_workers=0', 'data.crop_size=[32,64]', 'model.flownet.width_mult=0.25', f'train.save_root={out}',
            f'train.tblog_root={out}', 'train.max_iters=1', 'train.val_every=0', 'train.batch_size=2',
            'experiment=run', *extra]


def one_error_line(text):
    lines = [line for line in text.replace('\r', '\n').splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error:')]
    assert len(errors) == 1 and 'Traceback' not in text, text[-3000:]
    return errors[0]


def env():
    return dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')


# --- the experiment folder: refused, resumed or replaced, never overwritten ---

def test_existing_experiment_is_refused_unless_resume_or_overwrite(tmp_path, synthetic_data_cfg, monkeypatch):
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    engine.main(train_cfg('flow', str(tmp_path), data))
    folder = tmp_path / 'flow'
    final = (folder / 'final.pth').read_bytes()
    with pytest.raises(UserError, match=r'holds the outputs of an earlier run .*--resume .*--overwrite'):
        engine.main(train_cfg('flow', str(tmp_path), data, 'train.lr=0.5'))
    assert (folder / 'final.pth').read_bytes() == final
    assert load_config(str(folder / 'config.yaml'))['train']['lr'] == 1e-4

    # --overwrite removes the old run's outputs before anything new is written: a re-run killed at its first step
    # leaves the new config alone, no old final.pth beside it.
    def killed(run, data, accumulate):
        raise KeyboardInterrupt
    monkeypatch.setattr(engine, 'train_step', killed)
    with pytest.raises(KeyboardInterrupt):
        engine.main(train_cfg('flow', str(tmp_path), data, 'train.lr=0.5'), overwrite=True)
    assert load_config(str(folder / 'config.yaml'))['train']['lr'] == 0.5
    assert not (folder / 'final.pth').exists() and not (folder / 'now.pth').exists()
    assert len([n for n in os.listdir(folder) if n.startswith('events.out.tfevents')]) == 1
    monkeypatch.undo()
    (folder / 'notes.txt').write_text('mine')
    engine.main(train_cfg('flow', str(tmp_path), data, 'train.lr=0.5'), overwrite=True)
    assert (folder / 'final.pth').exists() and (folder / 'notes.txt').read_text() == 'mine'
    assert not (folder / '.lock').exists()


def test_concurrent_run_into_one_folder_is_refused_naming_the_holder(tmp_path, synthetic_data_cfg, capsys):
    (tmp_path / 'run').mkdir()
    with FolderLock(str(tmp_path / 'run' / LOCK), str(tmp_path / 'run')):
        assert train_tool.run([FLOW_CONFIG, *cli_opts(synthetic_data_cfg, tmp_path)]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert 'in use by another run' in line and f'pid {os.getpid()}' in line
    assert not (tmp_path / 'run' / 'config.yaml').exists()


def test_resume_removes_the_torn_files_of_a_dead_run(tmp_path, synthetic_data_cfg):
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    engine.main(train_cfg('flow', str(tmp_path), data, 'train.max_iters=1'))
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    torn = tmp_path / 'flow' / f'now.tmp{int(dead.stdout)}.pth'
    torn.write_bytes(b'half a checkpoint')
    engine.main(train_cfg('flow', str(tmp_path), data, 'train.max_iters=2'), resume=True)
    assert not torn.exists()


# --- a diverging run stops in one line before the weights are poisoned ---

@pytest.mark.slow
def test_diverging_flow_stops_with_the_non_finite_error_instead_of_a_segfault(tmp_path, synthetic_data_cfg):
    cfg = load_config(None, width_opts())
    torch.manual_seed(0)
    weights = tmp_path / 'scnet.pth'
    torch.save(build_scnet(cfg['model'], 'correction').state_dict(), weights)
    config = os.path.join(REPO_ROOT, 'exp', 'synthetic', 'correction.yaml')
    opts = cli_opts(synthetic_data_cfg, tmp_path, *width_opts(), *[f'init.{k}={weights}' for k in
                                                                 ('deeplab', 'flownet', 'dmnet')],
                    'train.lr=1000', 'train.max_iters=6', 'train.checkpoint_every=1')
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tools', 'train.py'), config, *opts], env=env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, f'rc {done.returncode} (-11 or 139: segfault): {done.stderr[-2000:]}'
    line = one_error_line(done.stderr)
    assert 'non-finite' in line and 'flownet output' in line and 'now.pth' in line
    kept = torch.load(tmp_path / 'run' / 'now.pth', weights_only=True)
    assert kept['iteration'] >= 1 and all(torch.isfinite(v).all() for v in kept['model'].values())
    assert not (tmp_path / 'run' / 'final.pth').exists()


# --- a resume with another data layout is refused unless the epoch restarts ---

def test_resume_with_another_data_layout_is_refused_unless_the_epoch_restarts(tmp_path, synthetic_data_cfg,
                                                                               monkeypatch):
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    train_killed_at_step(monkeypatch, engine, 2, flow_cfg(str(tmp_path), data, 'killed', 'train.checkpoint_every=1'))
    saved = torch.load(tmp_path / 'killed' / 'now.pth', weights_only=True)
    assert saved['progress']['batches_done'] == 1 and saved['layout']['batch_size'] == 16

    with pytest.raises(UserError, match=r'another data layout \(batch_size 16 -> 8\).*--restart-epoch'):
        engine.main(flow_cfg(str(tmp_path), data, 'killed', 'train.batch_size=8'), resume=True)
    with pytest.raises(UserError, match=r'accumulate 1 -> 2'):
        engine.main(flow_cfg(str(tmp_path), data, 'killed', 'train.batch_size=8', 'train.accumulate=2'),
                    resume=True)
    result = engine.main(flow_cfg(str(tmp_path), data, 'killed', 'train.batch_size=8'), resume=True,
                         restart_epoch=True)
    assert result['iteration'] == 5
    final = torch.load(tmp_path / 'killed' / 'final.pth', weights_only=True)
    # 58 pairs / 8 = 7 steps per epoch: the restarted epoch 0 runs from its first batch to iteration 5.
    assert final['progress']['epoch'] == 0 and final['progress']['batches_done'] == 4


def test_layout_check_names_world_size_and_dataset_length():
    checkpoint = {'rng': [{}, {}], 'config': {'train': {'batch_size': 4, 'accumulate': 1}},
                  'layout': {'batch_size': 4, 'accumulate': 1, 'world_size': 2, 'dataset_length': 100}}
    now = {'batch_size': 4, 'accumulate': 1, 'world_size': 1, 'dataset_length': 90}
    with pytest.raises(UserError, match=r'world_size 2 -> 1, dataset_length 100 -> 90'):
        resume.check_layout('now.pth', checkpoint, now, restart_epoch=False)
    assert resume.check_layout('now.pth', checkpoint, now, restart_epoch=True) == ['world_size 2 -> 1',
                                                                                   'dataset_length 100 -> 90']


def test_layout_check_names_a_key_the_checkpoint_lacks_in_one_line():
    checkpoint = {'layout': {'batch_size': 4, 'accumulate': 1, 'world_size': 1}}  # no dataset_length
    now = {'batch_size': 4, 'accumulate': 1, 'world_size': 1, 'dataset_length': 90}
    with pytest.raises(UserError, match=r'another data layout \(dataset_length None -> 90\)'):
        resume.check_layout('now.pth', checkpoint, now, restart_epoch=False)
    assert resume.check_layout('now.pth', checkpoint, now, restart_epoch=True) == ['dataset_length None -> 90']


# --- input errors in one line ---

@pytest.mark.parametrize('opt, fragment', [
    ('train.lr=abc', 'train.lr: expected a number > 0, got \'abc\''),
    ('train.lr=-1', 'train.lr: expected a number > 0, got -1'),
    ('train.betas=[0.9,1]', 'train.betas: expected a list of two values, each a number in [0, 1)'),
])
def test_bad_config_values_are_one_line_errors(tmp_path, synthetic_data_cfg, capsys, opt, fragment):
    assert train_tool.run([FLOW_CONFIG, *cli_opts(synthetic_data_cfg, tmp_path, opt)]) == 1
    assert fragment in one_error_line(capsys.readouterr().err)


def test_yaml_exponent_without_a_dot_still_reads_as_a_number():
    assert load_config(None, ['train.lr=1e-3'])['train']['lr'] == 1e-3  # YAML 1.1 reads "1e-3" as a string


def test_unwritable_output_folder_is_a_one_line_error(tmp_path, synthetic_data_cfg, capsys):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    assert train_tool.run([FLOW_CONFIG, *cli_opts(synthetic_data_cfg, blocker / 'sub')]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(blocker / 'sub' / 'run') in line and 'cannot be created' in line


def limited_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_full_disk_while_checkpointing_is_a_one_line_error(tmp_path, synthetic_data_cfg):
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tools', 'train.py'), FLOW_CONFIG,
                           *cli_opts(synthetic_data_cfg, tmp_path)], env=env(), capture_output=True, text=True,
                          timeout=300, preexec_fn=limited_file_size(200_000))
    assert done.returncode == 1, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert 'final.pth: could not write' in line  # the first file of the save, now.pth last
    assert sorted(n for n in os.listdir(tmp_path / 'run') if 'pth' in n) == []  # no torn file, no empty checkpoint


def test_errors_inside_dataloader_workers_are_unwrapped(tmp_path, synthetic_root, synthetic_data_cfg, capsys):
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root)
    for folder, _, files in os.walk(root / 'leftImg8bit_sequence' / 'train'):
        for name in files:
            with open(os.path.join(folder, name), 'wb') as f:
                f.write(b'not a png')
    data = dict(synthetic_data_cfg, root=str(root), train_list=str(root / 'list' / 'train.txt'))
    opts = cli_opts(data, tmp_path / 'out') + ['data.num_workers=1']
    assert train_tool.run([FLOW_CONFIG, *opts]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f'error: {root}') and line.endswith('not a readable image (corrupt or unsupported format)')


def test_checkpoint_summary_of_the_layout_is_json_friendly(tmp_path, synthetic_data_cfg):
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    engine.main(train_cfg('flow', str(tmp_path), data))
    layout = torch.load(tmp_path / 'flow' / 'final.pth', weights_only=True)['layout']
    assert json.loads(json.dumps(layout)) == {'batch_size': 2, 'accumulate': 1, 'world_size': 1,
                                              'dataset_length': 58}


# --- kills inside a save, Ctrl-C, a resume under another config, --overwrite of a folder not ours ---

KILL_INSIDE_SAVE = '''
import os, sys
from lib.train import engine, resume
from lib.utils import atomic
from lib.utils.config import load_config
write = atomic.save_torch
def save_torch(obj, path):
    if os.path.basename(path) == sys.argv[2] and obj['iteration'] == int(sys.argv[3]):
        with atomic.atomic_path(path, sync=True) as tmp, open(tmp, 'wb') as f:
            f.write(b'half')  # killed in the middle of torch.save
            f.flush()
            os._exit(137)
    write(obj, path)
resume.save_torch = save_torch
engine.main(load_config(sys.argv[1], sys.argv[4:]))
'''


@pytest.mark.slow
@pytest.mark.parametrize('name, iteration', [('final.pth', 4), ('best.pth', 3)])  # 3 iterations an epoch
def test_a_kill_inside_a_save_is_finished_by_resume(tmp_path, synthetic_data_cfg, name, iteration):
    opts = cli_opts(synthetic_data_cfg, tmp_path, 'train.max_iters=4', 'train.val_every=1',
                    'train.val_max_clips=8', 'train.checkpoint_every=1', 'train.batch_size=16')[1:]
    killed = subprocess.run([sys.executable, '-c', KILL_INSIDE_SAVE, FLOW_CONFIG, name, str(iteration), *opts],
                            env=env(), capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137, killed.stderr[-2000:]
    folder = tmp_path / 'run'
    assert not (folder / name).exists()
    now = torch.load(folder / 'now.pth', weights_only=True)
    assert now['iteration'] < iteration  # now.pth never runs ahead of the files it implies
    assert train_tool.run([FLOW_CONFIG, '--opts', *opts, '--resume']) == 0
    final = torch.load(folder / 'final.pth', weights_only=True)
    best = torch.load(folder / 'best.pth', weights_only=True)
    assert final['iteration'] == 4 and best['progress']['best_score'] == final['progress']['best_score']
    assert not [n for n in os.listdir(folder) if '.tmp' in n]  # the torn copy of the dead run is gone


def test_ctrl_c_stops_in_one_line_saying_how_to_continue(tmp_path, synthetic_data_cfg, monkeypatch, capsys):
    real_step, calls = engine.train_step, []

    def interrupted_at_the_third_step(run, data, accumulate):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(run, data, accumulate)
    monkeypatch.setattr(engine, 'train_step', interrupted_at_the_third_step)
    opts = cli_opts(synthetic_data_cfg, tmp_path, 'train.max_iters=5', 'train.checkpoint_every=1')
    assert train_tool.run([FLOW_CONFIG, *opts]) == 130
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert 'interrupted: training stopped at iteration 2; now.pth holds iteration 2 of 5: continue with --resume' in err
    assert 'interrupted: training stopped at iteration 2' in (tmp_path / 'run' / 'log.txt').read_text()
    assert not (tmp_path / 'run' / LOCK).exists()


@pytest.mark.parametrize('change, named', [('seed=1', "seed 666 -> 1"),
                                           ('train.lr=0.5', 'train.lr 0.0001 -> 0.5')])
def test_resume_under_another_config_is_refused_naming_old_and_new(tmp_path, synthetic_data_cfg, change, named):
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    engine.main(train_cfg('flow', str(tmp_path), data, 'seed=666', 'train.lr=1e-4'))
    config_before = (tmp_path / 'flow' / 'config.yaml').read_text()
    with pytest.raises(UserError, match=rf'this config differs from the run\'s \({named}\).*--restart-epoch'):
        engine.main(train_cfg('flow', str(tmp_path), data, 'seed=666', 'train.lr=1e-4', change,
                              'train.max_iters=3'), resume=True)
    assert (tmp_path / 'flow' / 'config.yaml').read_text() == config_before
    result = engine.main(train_cfg('flow', str(tmp_path), data, 'seed=666', 'train.lr=1e-4', change,
                                   'train.max_iters=3'), resume=True, restart_epoch=True)
    assert result['iteration'] == 3 and named in (tmp_path / 'flow' / 'log.txt').read_text()


def test_resume_with_other_widths_names_them(tmp_path, synthetic_data_cfg):
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    engine.main(train_cfg('flow', str(tmp_path), data))
    with pytest.raises(UserError, match=r'another network than this config \(model\.flownet\.width_mult 0\.25 -> 0\.5'):
        engine.main(train_cfg('flow', str(tmp_path), data, 'model.flownet.width_mult=0.5', 'train.max_iters=3'),
                    resume=True, restart_epoch=True)


def test_overwrite_replaces_only_a_folder_a_training_run_marked(tmp_path, synthetic_data_cfg):
    folder = tmp_path / 'flow'
    folder.mkdir()
    for name in ('config.yaml', 'log.txt', 'notes.txt'):
        (folder / name).write_text(f'the user\'s {name}')
    data = dict(synthetic_data_cfg, crop_size=[32, 64])
    with pytest.raises(UserError, match='holds files and is not written by DAVSS'):
        engine.main(train_cfg('flow', str(tmp_path), data), overwrite=True)
    assert sorted(os.listdir(folder)) == ['config.yaml', 'log.txt', 'notes.txt']
    assert (folder / 'config.yaml').read_text() == "the user's config.yaml"


# --- CPU training with train.channels_last crashed the process (heap corruption in oneDNN's weight gradient) ---

def test_channels_last_training_on_the_cpu_does_not_crash(tmp_path, synthetic_data_cfg):
    # 64x128 frames at DeepLab width 0.0625 put a (2, 4, 32, 64) map through the first strided 1x1 projection, whose
    # channels_last weight gradient on the CPU killed the process (signal 6 or 11) or hung; a subprocess survives it.
    config = os.path.join(REPO_ROOT, 'exp', 'synthetic', 'segmentation.yaml')
    opts = cli_opts(synthetic_data_cfg, tmp_path, 'data.crop_size=[64,128]', 'train.channels_last=true',
                    'model.deeplab.width_mult=0.0625', 'model.deeplab.middle_blocks=1')
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tools', 'train.py'), config, *opts], env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f'rc {done.returncode} (-11/139 segfault, -6/134 abort): {done.stderr[-2000:]}'
    assert (tmp_path / 'run' / 'final.pth').is_file()


def test_channels_last_stays_on_where_the_cpu_is_safe():
    # The demo's widths keep the layout its numbers were trained in; the tiny widths of the crash above do not get it.
    cfg = load_config(os.path.join(REPO_ROOT, 'exp', 'synthetic', 'segmentation.yaml'))
    assert cfg['train']['channels_last']
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert engine.channels_last_safe(build_scnet(cfg['model']), cpu)
    tiny = dict(cfg['model'], deeplab={'width_mult': 0.0625, 'middle_blocks': 1})
    assert not engine.channels_last_safe(build_scnet(tiny), cpu)
    assert engine.channels_last_safe(build_scnet(tiny), cuda)
