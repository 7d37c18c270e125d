"""The demo's whole chain (data -> 4 training stages -> PDA -> show) on a toy problem, and its skip logic.

``tools/demo.py --quick`` runs the same steps as ``make demo`` with tiny frames, tiny networks and 2 iterations
per stage, into temporary folders; the numbers it produces are meaningless, the files and the chain are not.
"""
import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from helpers import load_tool

demo = load_tool('demo')

STAGES = ('segmentation', 'flow', 'dmnet', 'correction')
ROOT_VARIABLES = ('SYNTHETIC_ROOT', 'SAVE_ROOT', 'RESULT_ROOT', 'TBLOG_ROOT')
REAL_DATA_VARIABLES = ('CITYSCAPES_ROOT', 'CAMVID_ROOT', 'DATA_ROOT')


def fake_cityscapes(folder):
    """A folder holding a (tiny) dataset the demo did not make."""
    for rel in ('leftImg8bit_sequence/val/a/a_000000_000019_leftImg8bit.png',
                'gtFine/val/a/a_000000_000019_gtFine_labelTrainIds.png', 'list/val.txt'):
        path = Path(folder) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'user data ' + rel.encode())
    return Path(folder)


def clear_root_variables(monkeypatch):
    """Unset the variables demo.main sets, so that monkeypatch puts back what was there before the test."""
    for key in ROOT_VARIABLES:
        monkeypatch.setenv(key, '')
        monkeypatch.delenv(key)


def snapshot(folder):
    """Every path under ``folder`` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob('*'))}


def skipped_steps(out):
    """How many step headers (``[i/8] step: ...``) of the demo's output say skipped."""
    return len(re.findall(r'^\[\d/8\] \w+: skipped', out, flags=re.M))


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """One --quick run into a temporary tree, with the real-dataset variables (CITYSCAPES_ROOT, CAMVID_ROOT and the
    old shared DATA_ROOT) pointing at a folder holding user data; the environment and torch's thread count are
    restored after."""
    base = tmp_path_factory.mktemp('demo')
    roots = {'root': base / 'data', 'save': base / 'saved', 'result': base / 'result',
             'cityscapes': fake_cityscapes(base / 'cityscapes')}
    roots['cityscapes_before'] = snapshot(roots['cityscapes'])
    argv = ['--quick', '--root', str(roots['root']), '--save-root', str(roots['save']),
            '--result-root', str(roots['result'])]
    saved_env = {k: os.environ.get(k) for k in ROOT_VARIABLES + REAL_DATA_VARIABLES}
    threads = torch.get_num_threads()
    try:
        for key in REAL_DATA_VARIABLES:
            os.environ[key] = str(roots['cityscapes'])
        status = demo.run(argv)
    finally:
        torch.set_num_threads(threads)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return status, roots, argv


@pytest.mark.slow
def test_quick_demo_produces_every_output(demo_run):
    status, roots, _ = demo_run
    assert status == 0
    for stage in STAGES:
        assert (roots['save'] / f'synthetic_{stage}' / 'final.pth').is_file(), stage
    result_dir = roots['result'] / 'synthetic'
    result = json.loads((result_dir / 'pda.json').read_text())
    assert result['distances'] == list(range(1, 10))
    assert len(result['davss']['miou']) == 9
    assert len(result['propagation_only']['miou']) == 9
    assert result['per_frame']['miou'] is not None
    assert result['n_clips'] == 1
    assert (result_dir / 'pda.md').is_file()
    for name in ('pda.png', 'tradeoff.png'):
        assert (result_dir / name).stat().st_size > 0, name
    timings = json.loads((result_dir / 'demo_timings.json').read_text())
    steps = [timings[step] for step in ('data',) + STAGES + ('pda', 'tradeoff', 'show')]
    # Each figure is rounded to 0.1 s on its own.
    assert timings['total'] + 0.05 * (len(steps) + 1) >= sum(steps) > 0
    picture = result_dir / 'show' / 'clip0_d9.png'
    assert picture.is_file() and picture.stat().st_size > 0
    assert (result_dir / 'show' / 'clip0_d9.gif').is_file()


@pytest.mark.slow
def test_quick_demo_tradeoff_has_every_interval_and_the_cost_ratio(demo_run):
    status, roots, _ = demo_run
    assert status == 0
    tradeoff = json.loads((roots['result'] / 'synthetic' / 'tradeoff.json').read_text())
    intervals = ['per-frame'] + [f'fixed:{k}' for k in range(2, 11)]
    assert [r['policy'] for r in tradeoff['fixed']] == intervals
    assert [r['policy'] for r in tradeoff['propagation']] == intervals
    assert tradeoff['marked'] == 'fixed:10'
    costs = tradeoff['step_costs']
    assert tradeoff['non_key_over_key_flops'] == pytest.approx(costs['nonkey']['gflops'] / costs['key']['gflops'])
    # The same key frames in both rows; only the non-key step differs, and propagation's is the cheaper part of it.
    for davss, propagation in zip(tradeoff['fixed'], tradeoff['propagation']):
        assert davss['key_frames'] == propagation['key_frames'] and davss['frames'] == propagation['frames']
    assert tradeoff['fixed'][0]['miou'] == tradeoff['propagation'][0]['miou']
    assert 0 < costs['propagation']['gflops'] < costs['nonkey']['gflops']
    # TC beside mIoU in every row (one val clip of 12 frames: 11 pairs), the ground truth's own as the ceiling.
    for r in tradeoff['fixed'] + tradeoff['propagation'] + tradeoff['distortion']:
        assert r['tc']['ground_truth']['pairs'] == 11 and 0 < r['tc']['ground_truth']['tc'] <= 1, r['policy']
    assert 0.95 < tradeoff['ground_truth_tc']['ground_truth']['tc'] <= 1
    # The deployed path: measured against the exact one, and it keeps the labels.
    paths = tradeoff['paths']
    assert list(paths['paths']) == ['exact', *demo.QUICK_DEPLOY_PATHS] and paths['interval'] == 10
    assert paths['paths'][paths['deployed']]['agreement'] >= paths['bar'] == 0.995


@pytest.mark.slow
def test_demo_writes_nothing_into_the_real_dataset_folders(demo_run):
    status, roots, _ = demo_run
    assert status == 0
    assert snapshot(roots['cityscapes']) == roots['cityscapes_before']


@pytest.mark.slow
def test_stages_chain_their_checkpoints(demo_run):
    """Each stage was initialised from the final.pth of the ones before it (as the configs say)."""
    _, roots, _ = demo_run
    cfg = yaml.safe_load((roots['save'] / 'synthetic_correction' / 'config.yaml').read_text())
    assert cfg['init']['deeplab'] == str(roots['save'] / 'synthetic_segmentation' / 'final.pth')
    assert cfg['init']['flownet'] == str(roots['save'] / 'synthetic_flow' / 'final.pth')
    assert cfg['init']['dmnet'] == str(roots['save'] / 'synthetic_dmnet' / 'final.pth')
    assert cfg['data']['root'] == str(roots['root'])


@pytest.mark.slow
def test_rerun_skips_every_step_and_force_redoes_them(demo_run, capsys, monkeypatch):
    _, roots, argv = demo_run
    clear_root_variables(monkeypatch)
    finals = {s: roots['save'] / f'synthetic_{s}' / 'final.pth' for s in STAGES}
    before = {s: p.stat().st_mtime_ns for s, p in finals.items()}
    threads = torch.get_num_threads()
    try:
        capsys.readouterr()
        assert demo.run(argv) == 0
        out = capsys.readouterr().out
        assert skipped_steps(out) == 8, out
        assert {s: p.stat().st_mtime_ns for s, p in finals.items()} == before
        assert demo.run(argv + ['--force']) == 0
        out = capsys.readouterr().out
        assert skipped_steps(out) == 0, out
        assert all(p.stat().st_mtime_ns != before[s] for s, p in finals.items())
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize('how', ['env', 'option'])
def test_demo_refuses_a_data_folder_it_did_not_make(how, tmp_path, monkeypatch, capsys):
    """SYNTHETIC_ROOT (or --root) pointing at a real dataset: one line naming it, nothing written anywhere."""
    users = fake_cityscapes(tmp_path / 'cityscapes')
    before = snapshot(users)
    clear_root_variables(monkeypatch)
    argv = ['--quick', '--save-root', str(tmp_path / 'saved'), '--result-root', str(tmp_path / 'result')]
    if how == 'env':
        monkeypatch.setenv('SYNTHETIC_ROOT', str(users))
    else:
        argv += ['--root', str(users)]
    threads = torch.get_num_threads()
    try:
        capsys.readouterr()
        assert demo.run(argv) == 1
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f'error: data: synthetic root {users}: holds files and is not '
                                                         f'written by DAVSS'), err
    assert snapshot(users) == before
    assert sorted(os.listdir(tmp_path)) == ['cityscapes']


def test_cityscapes_like_difficulty_gets_its_own_folders_and_preset(monkeypatch):
    clear_root_variables(monkeypatch)
    medium, other = demo.parse_args([]), demo.parse_args(['--difficulty', 'cityscapes-like'])
    assert (medium.root, medium.save_root, medium.result_name) == ('data/synthetic', 'saved_model', 'synthetic')
    assert (other.root, other.save_root, other.result_name) == ('data/synthetic_cityscapes-like',
                                                               'saved_model/cityscapes-like',
                                                               'synthetic_cityscapes-like')
    assert demo.Demo(other).results != demo.Demo(medium).results
    # The slow video's correction stage keeps the flow of the flow stage (tools/demo.py says why); --opts still wins.
    assert demo.Demo(other).opts_of('correction') == ['train.lr=1e-6']
    assert demo.Demo(other).opts_of('segmentation') == [] and demo.Demo(medium).opts_of('correction') == []
    assert demo.Demo(demo.parse_args(['--difficulty', 'cityscapes-like', '--opts', 'correction:train.lr=1e-4'])
                     ).opts_of('correction') == ['train.lr=1e-6', 'train.lr=1e-4']
    # An option or a variable still names the folder.
    monkeypatch.setenv('SYNTHETIC_ROOT', '/elsewhere')
    assert demo.parse_args(['--difficulty', 'cityscapes-like']).root == '/elsewhere'
    assert demo.parse_args(['--difficulty', 'cityscapes-like', '--root', 'mine']).root == 'mine'
