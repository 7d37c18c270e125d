"""tools/gpu_check.sh / gpu_check.py on a machine without a GPU: one-line refusal; and the commands of its
training steps, run on the CPU instead, so that a GPU machine meets no typo in them."""
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import REPO_ROOT, load_tool

from lib.utils.outputs import read_marker

gpu_check = load_tool('gpu_check')
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a GPU')


@no_gpu
@pytest.mark.parametrize('command', [['tools/gpu_check.sh'], [sys.executable, 'tools/gpu_check.py']])
def test_without_a_gpu_it_says_so_in_one_line(command, tmp_path):
    out_dir = tmp_path / 'report'
    done = subprocess.run([*command, '--output', str(out_dir)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=REPO_ROOT, VENV=str(tmp_path / 'no_venv')))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: needs') and 'GPU' in lines[0], done.stderr
    assert not out_dir.exists() and not (tmp_path / 'no_venv').exists()  # nothing built, nothing written


needs_make = pytest.mark.skipif(shutil.which('make') is None, reason='no make on PATH')


@no_gpu
@needs_make
def test_make_gpu_check_without_a_gpu_stops_before_installing(tmp_path):
    """`make gpu-check`, as the README gives it: the script's one line (then make's own), no venv, no report."""
    done = subprocess.run(['make', '-s', 'gpu-check', f'VENV={tmp_path / "venv"}', f'ARGS=--output {tmp_path / "r"}'],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if not line.startswith('make')]
    assert len(ours) == 1 and ours[0].startswith('error: needs an NVIDIA GPU'), done.stderr
    assert not (tmp_path / 'venv').exists() and not (tmp_path / 'r').exists()


@needs_make
def test_help_names_every_option_and_step_and_runs_nothing(tmp_path):
    """`tools/gpu_check.sh --help` (and `make gpu-check ARGS=--help`) prints its help and exits 0 on any machine,
    before the GPU check and without installing anything; the help names every option of tools/gpu_check.py."""
    parser_help = io.StringIO()
    with contextlib.redirect_stdout(parser_help), pytest.raises(SystemExit):
        gpu_check.parse_args(['--help'])
    options = set(re.findall(r'--[a-z][a-z-]+', parser_help.getvalue()))
    assert {'--output', '--skip', '--amp', '--step-timeout', '--help'} <= options
    venv = tmp_path / 'venv'
    for command in (['tools/gpu_check.sh', '--help'], ['tools/gpu_check.sh', '--skip', 'suite', '-h'],
                    ['make', '-s', 'gpu-check', 'ARGS=--help', f'VENV={venv}']):
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, VENV=str(venv)))
        assert done.returncode == 0 and done.stdout.startswith('usage: tools/gpu_check.sh'), done.stderr
        assert [option for option in options if option not in done.stdout] == []
        assert [step for step in gpu_check.STEPS if step not in done.stdout] == []
    assert not venv.exists()


def test_refuses_a_folder_it_did_not_write(tmp_path, monkeypatch, capsys):
    """--output is a folder of the tool's kind (lib.utils.outputs): another folder is refused, untouched."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    (tmp_path / 'notes.txt').write_text('mine')
    assert gpu_check.run(['--output', tmp_path, '--skip', *gpu_check.STEPS]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f'error: --output {tmp_path}: holds files'), err
    assert os.listdir(tmp_path) == ['notes.txt']
    assert gpu_check.run(['--output', tmp_path / 'new', '--skip', *gpu_check.STEPS]) == 0
    assert gpu_check.run(['--output', tmp_path / 'new', '--skip', *gpu_check.STEPS]) == 0  # its own: replaced
    assert sorted(os.listdir(tmp_path / 'new')) == ['.davss', 'logs', 'report.json', 'report.md']


def test_report_quotes_the_benchmark_figures(tmp_path):
    result = {'machine': 'GPU X', 'copy_bandwidth': {'gb_per_s': 1000.0},
              'resample2d': [{'impl': 'cuda_extension', 'channels': 19, 'size': [256, 512], 'latency_ms': 0.05,
                              'achieved_gb_per_s': 800.0, 'fraction_of_copy_bandwidth': 0.8}],
              'sizes': [{'size': [512, 1024], 'comparisons': {'fast_speedup_key_frame': 2.5, 'other': 1},
                         'agreement': {'fast_vs_exact': {'min': 0.999}}}]}
    path = tmp_path / 'benchmark.json'
    path.write_text(json.dumps(result))
    figures = gpu_check.benchmark_figures(str(path))
    assert figures['resample2d'][0]['fraction_of_copy_bandwidth'] == 0.8
    assert figures['fast_vs_fp32'] == [{'size': [512, 1024], 'fast_speedup_key_frame': 2.5, 'min_agreement': 0.999}]
    report = {'summary': '0 failed, all passed', 'date': 'today', 'environment': {'torch': '2', 'cuda': '13'},
              'steps': [{'step': 'benchmark', 'status': 'pass', 'seconds': 1.0, 'detail': 'a|b',
                         'figures': figures}]}
    text = gpu_check.markdown(report)
    assert '| cuda_extension | 19 | [256, 512] | 0.050 | 800.0 | 0.80 |' in text and 'a\\|b' in text


@pytest.mark.slow
def test_training_step_commands_run(tmp_path, monkeypatch):
    """The AMP chain (segmentation, flow, dmnet from both, correction from dmnet) with the check's own options,
    on the CPU with bf16 autocast instead of the GPU."""
    monkeypatch.setattr(gpu_check, 'DATA_OPTS',
                        tuple('device=cpu' if opt == 'device=cuda' else opt for opt in gpu_check.DATA_OPTS))
    runner = gpu_check.Runner(str(tmp_path / 'out'), timeout=600)
    runner.env['OMP_NUM_THREADS'] = '1'
    data = gpu_check.make_data(runner, str(tmp_path))
    gpu_check.step_amp(runner, data, str(tmp_path), 'bf16')
    assert [(step['step'], step['status']) for step in runner.steps] == [
        (f'amp_bf16_{stage}', 'pass') for stage in gpu_check.STAGES], runner.steps


def test_report_is_written_and_failures_set_the_exit_status(tmp_path, monkeypatch):
    """main() with every GPU step left out and one recorded failure: report.json/report.md and exit status 1."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(gpu_check, 'step_pytest',
                        lambda runner, name, paths, require_cuda: runner.record(name, 'fail', 1.0, 'boom'))
    out = tmp_path / 'report'
    skip = [step for step in gpu_check.STEPS if step != 'cuda_tests']
    assert gpu_check.main(gpu_check.parse_args(['--output', str(out), '--skip', *skip])) == 1
    report = json.loads((out / 'report.json').read_text())
    assert read_marker(out) == 'gpu check' and report['summary'] == '1 failed (cuda_tests)'
    assert '| cuda_tests | fail | 1.0 | boom |' in (out / 'report.md').read_text()


def fake_toolkit(root):
    (root / 'bin').mkdir(parents=True)
    (root / 'include').mkdir()
    (root / 'bin' / 'nvcc').write_text('#!/bin/sh\necho "Cuda compilation tools, release 13.0, V13.0.88"\n')
    (root / 'bin' / 'nvcc').chmod(0o755)
    (root / 'include' / 'cuda_runtime.h').write_text('')
    return root


def test_toolkit_is_torchs_guess_unless_that_is_no_toolkit(tmp_path, monkeypatch):
    """cuda_toolkit.find_cuda_home: CUDA_HOME/CUDA_PATH as named; else torch's guess
    (torch.utils.cpp_extension.CUDA_HOME) when it is a toolkit; else the real folder of the nvcc on PATH, where
    torch took the folder of a link or wrapper (/usr/local/bin/nvcc) for the toolkit."""
    import torch.utils.cpp_extension as cpp_extension

    from lib.ops import cuda_toolkit

    toolkit = fake_toolkit(tmp_path / 'cuda-13.0')
    real_check = cuda_toolkit.is_toolkit_root
    monkeypatch.setattr(cuda_toolkit, 'is_toolkit_root',  # this machine's own /usr/local/cuda left out
                        lambda path: str(path).startswith(str(tmp_path)) and real_check(path))
    for variable in ('CUDA_HOME', 'CUDA_PATH'):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(cpp_extension, 'CUDA_HOME', str(toolkit))
    assert cuda_toolkit.find_cuda_home() == str(toolkit)

    wrapper = tmp_path / 'usr_local'  # torch's guess: the folder above a linked nvcc, no headers there
    (wrapper / 'bin').mkdir(parents=True)
    (wrapper / 'bin' / 'nvcc').symlink_to(toolkit / 'bin' / 'nvcc')
    monkeypatch.setattr(cpp_extension, 'CUDA_HOME', str(wrapper))
    monkeypatch.setenv('PATH', f'{wrapper / "bin"}{os.pathsep}{os.environ["PATH"]}')
    assert cuda_toolkit.find_cuda_home() == str(toolkit)

    monkeypatch.setenv('CUDA_HOME', str(tmp_path / 'named'))  # the user's choice stands; build_blocker says why
    assert cuda_toolkit.find_cuda_home() == str(tmp_path / 'named')
    if torch.version.cuda is not None:
        assert 'no nvcc in' in cuda_toolkit.build_blocker()
