"""`make demo THREADS=N`: the thread count reaches tools/demo.py as --threads N, and anything but digits stops make
before a shell sees it."""
import os
import shutil
import subprocess

import pytest
from helpers import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which('make') is None, reason='needs GNU make')


def dry_run(tmp_path, *variables):
    # -n prints the recipes without running them; VENV points at a folder that does not exist, so nothing is reused.
    return subprocess.run(['make', '-n', 'demo', f'VENV={tmp_path / "venv"}', *variables], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def demo_line(done):
    return [line for line in done.stdout.splitlines() if 'tools/demo.py' in line]


def test_threads_reach_the_demo(tmp_path):
    assert demo_line(dry_run(tmp_path, 'THREADS=1'))[0].split('tools/demo.py')[1].split() == ['--threads', '1']
    assert '--threads' not in demo_line(dry_run(tmp_path))[0]


@pytest.mark.parametrize('value', ['x', '1 2', '-1', '$(shell touch hacked)', '2;true'])
def test_anything_but_digits_stops_make(tmp_path, value):
    done = dry_run(tmp_path, f'THREADS={value}')
    assert done.returncode == 2 and not demo_line(done)
    assert f'THREADS={value}: expected a whole number of threads' in done.stderr
    assert not os.path.exists(os.path.join(REPO_ROOT, 'hacked'))
