"""The demo's whole chain (data -> 4 training stages -> PDA -> show) on a toy problem, and its skip logic.

``tools/demo.py --quick`` runs the same steps as ``make demo`` with tiny frames, tiny networks and 2 iterations
per stage, into temporary folders; the numbers it produces are meaningless, the files and the chain are not.
"""
import json
import os
import re

import pytest
import torch
import yaml

from tools import demo

STAGES = ('segmentation', 'flow', 'dmnet', 'correction')


def skipped_steps(out):
    """How many step headers (``[i/7] step: ...``) of the demo's output say skipped."""
    return len(re.findall(r'^\[\d/7\] \w+: skipped', out, flags=re.M))


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """One --quick run into a temporary tree; the environment and torch's thread count are restored after."""
    base = tmp_path_factory.mktemp('demo')
    roots = {'root': base / 'data', 'save': base / 'saved', 'result': base / 'result'}
    argv = ['--quick', '--root', str(roots['root']), '--save-root', str(roots['save']),
            '--result-root', str(roots['result'])]
    saved_env = {k: os.environ.get(k) for k in ('DATA_ROOT', 'SAVE_ROOT', 'RESULT_ROOT', 'TBLOG_ROOT')}
    threads = torch.get_num_threads()
    try:
        status = demo.main(argv)
    finally:
        torch.set_num_threads(threads)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return status, roots, argv


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
    picture = result_dir / 'show' / 'clip0_d9.png'
    assert picture.is_file() and picture.stat().st_size > 0
    assert (result_dir / 'show' / 'clip0_d9.gif').is_file()


def test_stages_chain_their_checkpoints(demo_run):
    """Each stage was initialised from the final.pth of the ones before it (as the configs say)."""
    _, roots, _ = demo_run
    cfg = yaml.safe_load((roots['save'] / 'synthetic_correction' / 'config.yaml').read_text())
    assert cfg['init']['deeplab'] == str(roots['save'] / 'synthetic_segmentation' / 'final.pth')
    assert cfg['init']['flownet'] == str(roots['save'] / 'synthetic_flow' / 'final.pth')
    assert cfg['init']['dmnet'] == str(roots['save'] / 'synthetic_dmnet' / 'final.pth')
    assert cfg['data']['root'] == str(roots['root'])


def test_rerun_skips_done_steps_and_redo_cascades(demo_run, capsys, monkeypatch):
    _, roots, argv = demo_run
    for key in ('DATA_ROOT', 'SAVE_ROOT', 'RESULT_ROOT', 'TBLOG_ROOT'):
        monkeypatch.delenv(key, raising=False)
    finals = {s: roots['save'] / f'synthetic_{s}' / 'final.pth' for s in STAGES}
    before = {s: p.stat().st_mtime_ns for s, p in finals.items()}
    threads = torch.get_num_threads()
    try:
        capsys.readouterr()
        assert demo.main(argv) == 0
        out = capsys.readouterr().out
        assert skipped_steps(out) == 7, out
        assert {s: p.stat().st_mtime_ns for s, p in finals.items()} == before

        # Redoing DMNet changes what correction, PDA and show are built on: they are redone, the others not.
        assert demo.main(argv + ['--redo', 'dmnet']) == 0
        out = capsys.readouterr().out
        after = {s: p.stat().st_mtime_ns for s, p in finals.items()}
        assert after['segmentation'] == before['segmentation'] and after['flow'] == before['flow']
        assert after['dmnet'] != before['dmnet'] and after['correction'] != before['correction']
        assert skipped_steps(out) == 3, out  # data, segmentation, flow
    finally:
        torch.set_num_threads(threads)


def test_changed_config_retrains_the_stage(demo_run, capsys, monkeypatch):
    _, roots, argv = demo_run
    for key in ('DATA_ROOT', 'SAVE_ROOT', 'RESULT_ROOT', 'TBLOG_ROOT'):
        monkeypatch.delenv(key, raising=False)
    threads = torch.get_num_threads()
    try:
        capsys.readouterr()
        assert demo.main(argv + ['--opts', 'correction:train.cfnet_lr=0.002']) == 0
        out = capsys.readouterr().out
        assert 'correction: training' in out and 'config changed (train.cfnet_lr)' in out, out
        assert 'segmentation: skipped' in out
    finally:
        torch.set_num_threads(threads)
