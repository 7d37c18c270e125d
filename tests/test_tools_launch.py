"""tools/launch.sh and the scripts of exp/*/script/ and tools/*.sh: every environment variable is checked before the
shell uses it (one line, status 2, nothing run, no injected command executed), and good values give the expected
command line. PYTHON points at a fake interpreter that records its argv, so no training starts."""
import json
import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

SYNTHETIC_TRAIN = ['bash', os.path.join(REPO_ROOT, 'exp', 'synthetic', 'script', 'train.sh'), 'flow']
FAKE_PYTHON = f"""#!{sys.executable}
import json, os, sys
with open(os.environ['FAKE_RECORD'], 'w') as handle:
    json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': dict(os.environ)}}, handle)
"""
# Names the scripts unset when empty (what ${VAR:-default} means), so Python never reads an empty path or number.
EMPTY_MEANS_UNSET = ('SAVE_ROOT', 'TBLOG_ROOT', 'RESULT_ROOT', 'CITYSCAPES_ROOT', 'CAMVID_ROOT', 'SYNTHETIC_ROOT',
                     'DIST_TIMEOUT')
LAUNCH_VARIABLES = ('GPUS', 'NNODES', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'DIST_TIMEOUT', 'PYTHON', 'STAGE',
                    'CHECKPOINT', 'VENV', *EMPTY_MEANS_UNSET)


@pytest.fixture
def fake(tmp_path):
    """(run, record, marker): run(command, **variables) runs a script with the fake interpreter as PYTHON and the
    caller's variables (none of the user's inherited); record() is what the interpreter saw, or None if it never
    ran; marker is the file an injected command would create."""
    python = tmp_path / 'fake python'  # a space: the interpreter path must stay one word
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    record_path = tmp_path / 'record.json'
    marker = tmp_path / 'injected'

    def run(command, **variables):
        env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
        env.update(PYTHON=str(python), FAKE_RECORD=str(record_path))
        env.update({k: v.format(marker=marker) for k, v in variables.items()})
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    def record():
        return json.loads(record_path.read_text()) if record_path.exists() else None

    return run, record, marker


def refused(done, record, marker, prefix):
    """Status 2, one line on stderr starting with ``prefix``, the interpreter never started, no injection."""
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(prefix), (done.returncode, done.stderr)
    assert record() is None
    assert not marker.exists()
    return lines[0]


INJECTION = 'PATH[$(touch {marker})]'


@pytest.mark.parametrize('name, value, extra', [
    ('GPUS', INJECTION, {}),
    ('GPUS', 'x[$(touch {marker})]+1', {}),
    ('GPUS', '2.5', {}),
    ('GPUS', '0', {}),
    ('GPUS', '-1', {}),
    ('GPUS', '08', {}),
    ('GPUS', ' 2', {}),
    ('GPUS', '1e3', {}),
    ('GPUS', '99999999999999999999', {}),
    ('NNODES', INJECTION, {}),
    ('NNODES', '2.0', {}),
    ('NODE_RANK', INJECTION, {'NNODES': '2', 'MASTER_ADDR': 'node0'}),
    ('NODE_RANK', '2', {'NNODES': '2', 'MASTER_ADDR': 'node0'}),
    ('MASTER_PORT', INJECTION, {}),
    ('MASTER_PORT', '65536', {}),
    ('MASTER_PORT', 'http', {}),
    ('DIST_TIMEOUT', 'abc', {}),
    ('DIST_TIMEOUT', '0', {}),
    ('DIST_TIMEOUT', INJECTION, {}),
    ('MASTER_ADDR', '$(touch {marker})', {'NNODES': '2', 'NODE_RANK': '0'}),
    ('MASTER_ADDR', 'node0;touch {marker}', {'NNODES': '2', 'NODE_RANK': '0'}),
    ('MASTER_ADDR', 'node 0', {}),
    ('MASTER_ADDR', '-node0', {}),
])
def test_bad_numbers_and_addresses_are_refused_before_use(fake, name, value, extra):
    run, record, marker = fake
    done = run(SYNTHETIC_TRAIN, **{name: value}, **extra)
    line = refused(done, record, marker, f'launch.sh: {name}=')
    assert 'expected' in line


def test_a_value_with_a_newline_is_still_one_line(fake):
    run, record, marker = fake
    line = refused(run(SYNTHETIC_TRAIN, GPUS='2\n3'), record, marker, 'launch.sh: GPUS=2?3: expected')
    assert 'whole number' in line


@pytest.mark.parametrize('script', ['spatial_correction_camvid/script/test_PDA.sh',
                                    'dmnet_cityscapes/script/train.sh', 'synthetic/script/test_PDA.sh'])
def test_every_launching_script_refuses_the_injection(fake, script):
    run, record, marker = fake
    refused(run(['bash', os.path.join(REPO_ROOT, 'exp', script)], GPUS=INJECTION), record, marker,
            'launch.sh: GPUS=')


def test_several_nodes_need_a_rank_and_an_address(fake):
    run, record, marker = fake
    line = refused(run(SYNTHETIC_TRAIN, NNODES='2', MASTER_ADDR='node0'), record, marker, 'launch.sh: NNODES=2: set')
    assert 'NODE_RANK' in line and 'MASTER_ADDR' in line


@pytest.mark.parametrize('python', ['-c', 'no-such-interpreter-davss', 'python3 -u'])
def test_python_must_be_an_interpreter(fake, python):
    run, record, marker = fake
    refused(run(SYNTHETIC_TRAIN, PYTHON=python), record, marker, 'launch.sh: PYTHON=')


def test_one_process_runs_the_entry_point_from_the_repository_root(fake):
    run, record, _ = fake
    done = run(SYNTHETIC_TRAIN + ['--opts', 'train.max_iters=1'], SAVE_ROOT='', DIST_TIMEOUT='', GPUS='')
    assert done.returncode == 0, done.stderr
    seen = record()
    config = os.path.join(REPO_ROOT, 'exp', 'synthetic', 'flow.yaml')
    assert seen['argv'] == ['tools/train.py', config, '--opts', 'train.max_iters=1']
    assert os.path.realpath(seen['cwd']) == os.path.realpath(REPO_ROOT)
    assert 'SAVE_ROOT' not in seen['env'] and 'DIST_TIMEOUT' not in seen['env']  # empty means the default


def test_several_processes_and_nodes_go_through_torchrun(fake):
    run, record, _ = fake
    done = run(SYNTHETIC_TRAIN, GPUS='2', DIST_TIMEOUT='30')
    assert done.returncode == 0, done.stderr
    assert record()['argv'][:5] == ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                                    'tools/train.py']
    assert record()['env']['DIST_TIMEOUT'] == '30'
    done = run(SYNTHETIC_TRAIN, GPUS='4', NNODES='2', NODE_RANK='1', MASTER_ADDR='node-0.cluster', MASTER_PORT='29501')
    assert done.returncode == 0, done.stderr
    assert record()['argv'][:8] == ['-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1',
                                    '--master_addr=node-0.cluster', '--master_port=29501', '--nproc_per_node=4',
                                    'tools/train.py']


@pytest.mark.parametrize('script', ['synthetic/script/test_PDA.sh', 'spatial_correction_camvid/script/show.sh'])
def test_checkpoint_is_passed_only_when_set(fake, script):
    """Without CHECKPOINT (or with an empty one) the tool finds what the config trained; with it, that file."""
    run, record, _ = fake
    for value, expected in (('', []), (None, []), ('my dir/$(x).pth', ['--checkpoint=my dir/$(x).pth'])):
        done = run(['bash', os.path.join(REPO_ROOT, 'exp', script), '--help'],
                   **({} if value is None else {'CHECKPOINT': value}))
        assert done.returncode == 0, done.stderr
        assert record()['argv'][2:] == [*expected, '--help']


@pytest.mark.parametrize('script, entry', [('synthetic/script/show.sh', 'tools/show.py'),
                                           ('spatial_correction_cityscapes/script/show.sh', 'tools/show.py'),
                                           ('synthetic/script/demo.sh', 'tools/demo.py'),
                                           ('dmnet_cityscapes_release/script/pseudo_labels.sh',
                                            'tools/make_pseudo_labels.py')])
def test_one_process_scripts_check_python_and_ignore_gpus(fake, script, entry):
    run, record, marker = fake
    refused(run(['bash', os.path.join(REPO_ROOT, 'exp', script)], PYTHON='-c'), record, marker, 'launch.sh: PYTHON=')
    done = run(['bash', os.path.join(REPO_ROOT, 'exp', script), '--help'], GPUS=INJECTION, CHECKPOINT='my.pth')
    assert done.returncode == 0, done.stderr
    assert record()['argv'][0] == entry and record()['argv'][-1] == '--help'
    assert not marker.exists()


def test_synthetic_stage_is_checked(fake):
    run, record, marker = fake
    refused(run(SYNTHETIC_TRAIN[:2], STAGE='flow\n$(touch {marker})'), record, marker, SYNTHETIC_TRAIN[1])


@pytest.mark.parametrize('name, value', [('VENV', '$(touch {marker})'), ('VENV', '.venv x'),
                                         ('PYTHON', 'python3 $(touch {marker})'), ('VENV', '-n')])
def test_gpu_check_refuses_what_make_would_expand(fake, name, value):
    run, record, marker = fake
    variables = {'PYTHON': 'python3', name: value}  # the fake interpreter's path has a space, which make splits
    done = run(['bash', os.path.join(REPO_ROOT, 'tools', 'gpu_check.sh')], **variables)
    line = refused(done, record, marker, f'gpu_check.sh: {name}=')
    assert 'expected' in line
