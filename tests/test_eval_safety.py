"""Evaluation and data input that lose nothing and say what is wrong in one line: test_pda under a full disk, a
damaged frame in the last clip, an interrupted run beside an old pda.json, locked result folders, and the input
errors of the datasets and checkpoints (UTF-8 BOM lists, JPEG labels, frame sizes, weights_only refusals)."""
import os
import resource
import shutil
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from helpers import load_tool, write_experiment

from lib.dataset import build_dataset
from lib.dataset.checks import find_problems
from lib.dataset.io import read_label
from lib.eval import jobs as pda_run
from lib.model.checkpoint import read_checkpoint
from lib.utils.config import REPO_ROOT
from lib.utils.errors import UserError
from lib.utils.outputs import FolderLock

test_pda = load_tool('test_pda')
show = load_tool('show')


def one_error_line(text):
    lines = [line for line in text.replace('\r', '\n').splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith('error:')]
    assert len(errors) == 1 and 'Traceback' not in text, text[-3000:]
    return errors[0]


def copied_data(tmp_path, synthetic_root, synthetic_data_cfg):
    root = tmp_path / 'data'
    shutil.copytree(synthetic_root, root)
    return root, dict(synthetic_data_cfg, root=str(root), train_list=str(root / 'list' / 'train.txt'),
                      val_list=str(root / 'list' / 'val.txt'))


def lines_of(list_file):
    with open(list_file) as f:
        return [line.split() for line in f if line.strip()]


# --- a full disk costs the files, not the table ---

@pytest.mark.slow
def test_full_disk_prints_the_table_then_fails_in_one_line(tmp_path, synthetic_data_cfg):
    config, checkpoint = write_experiment(tmp_path, synthetic_data_cfg)

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))  # pda.json (confusion matrices) is larger

    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tools', 'test_pda.py'), config, '--checkpoint',
                           checkpoint, '--max-clips', '1', '--no-progress'], preexec_fn=limited,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert '| distance | DAVSS mIoU |' in done.stdout and 'upper bound' in done.stdout
    assert 'pda.json' in one_error_line(done.stderr)
    assert not os.path.exists(tmp_path / 'pda_test' / 'final')  # created by the run, which left nothing in it


# --- damaged frames are found before the long run, or named in one line ---

def test_truncated_frame_in_the_last_clip_fails_before_the_evaluation(tmp_path, synthetic_root, synthetic_data_cfg,
                                                                      capsys):
    root, data_cfg = copied_data(tmp_path, synthetic_root, synthetic_data_cfg)
    last_clip_frame = lines_of(data_cfg['train_list'])[-1][0].replace('000019_leftImg8bit', '000015_leftImg8bit')
    path = root / last_clip_frame
    path.write_bytes(path.read_bytes()[:-200])  # cut short: header intact, the end missing
    config, _ = write_experiment(tmp_path, data_cfg)
    # The checkpoint does not exist: the frame check comes first, so no clip was evaluated.
    assert test_pda.run([config, '--checkpoint', str(tmp_path / 'none.pth'), '--no-progress']) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(path) in line and 'truncated PNG' in line


def test_frame_damaged_in_its_middle_fails_in_one_line_from_a_worker(tmp_path, synthetic_root, synthetic_data_cfg,
                                                                     capsys):
    root, data_cfg = copied_data(tmp_path, synthetic_root, synthetic_data_cfg)
    config, checkpoint = write_experiment(tmp_path, dict(data_cfg, num_workers=1))
    argv = [config, '--checkpoint', checkpoint, '--no-progress']
    assert test_pda.run(argv) == 0
    capsys.readouterr()
    path = root / lines_of(data_cfg['train_list'])[-1][0]
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # header and end intact: passes the pre-flight check
    path.write_bytes(bytes(data))
    assert test_pda.run(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == f'error: {path}: not a readable image (corrupt or unsupported format)'
    assert sorted(os.listdir(tmp_path / 'pda_test' / 'final')) == [
        '.davss', 'pda.previous.json', 'pda.previous.md', 'pda.previous.png']


@pytest.mark.slow
def test_interrupted_run_does_not_leave_the_previous_results_looking_current(tmp_path, synthetic_data_cfg,
                                                                             monkeypatch):
    config, checkpoint = write_experiment(tmp_path, synthetic_data_cfg)
    argv = [config, '--checkpoint', checkpoint, '--max-clips', '1', '--no-progress']
    assert test_pda.run(argv) == 0
    out = tmp_path / 'pda_test' / 'final'  # <experiment>/<checkpoint file stem>
    old = (out / 'pda.json').read_text()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pda_run, 'evaluate_pda', interrupted)
    assert test_pda.run(argv) == 130
    assert sorted(os.listdir(out)) == ['.davss', 'pda.previous.json', 'pda.previous.md', 'pda.previous.png']
    assert (out / 'pda.previous.json').read_text() == old
    monkeypatch.undo()
    assert test_pda.run(argv) == 0
    assert sorted(os.listdir(out)) == ['.davss', 'pda.json', 'pda.md', 'pda.png']


# --- result folders of test_pda and show are locked while written ---

def test_result_folders_are_locked_while_written(tmp_path, synthetic_data_cfg, capsys):
    config, checkpoint = write_experiment(tmp_path, synthetic_data_cfg)
    result = tmp_path / 'pda_test' / 'final'
    result.mkdir(parents=True)
    with FolderLock(str(result / '.lock'), str(result)):
        assert test_pda.run([config, '--checkpoint', checkpoint, '--max-clips', '1', '--no-progress']) == 1
        assert 'in use by another run' in one_error_line(capsys.readouterr().err)
    with FolderLock(str(result / 'show.lock'), str(result / 'show')):
        assert show.run([config, '--checkpoint', checkpoint, '--clips', '0']) == 1
        assert 'in use by another run' in one_error_line(capsys.readouterr().err)
    assert not os.path.exists(tmp_path / 'pda_test' / 'final' / 'pda.json')


# --- input errors in one line ---

def test_list_with_a_utf8_byte_order_mark_reads(tmp_path, synthetic_root, synthetic_data_cfg):
    root, data_cfg = copied_data(tmp_path, synthetic_root, synthetic_data_cfg)
    list_file = root / 'list' / 'val.txt'
    list_file.write_bytes(b'\xef\xbb\xbf' + list_file.read_bytes())
    frames, label = build_dataset(data_cfg, 'val', 'pda')[0]
    assert frames.shape[0] == 10 and label.ndim == 2
    assert find_problems(data_cfg, 'val', progress=False) == []


def test_jpeg_renamed_png_label_is_refused_and_reported(tmp_path, synthetic_root, synthetic_data_cfg):
    root, data_cfg = copied_data(tmp_path, synthetic_root, synthetic_data_cfg)
    label_path = root / lines_of(data_cfg['val_list'])[0][1]
    label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    ok, jpeg = cv2.imencode('.jpg', label)
    label_path.write_bytes(jpeg.tobytes())
    with pytest.raises(UserError, match=r'not a PNG file \(JPEG data\); labels must be lossless PNG'):
        read_label(str(label_path), 19)
    problems = find_problems(data_cfg, 'val', progress=False)
    assert len(problems) == 1 and str(label_path) in problems[0] and 'JPEG' in problems[0]


def test_frames_whose_size_is_not_a_multiple_of_4_are_named(tmp_path, synthetic_root, synthetic_data_cfg, capsys):
    root, data_cfg = copied_data(tmp_path, synthetic_root, synthetic_data_cfg)
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith('.png'):
                path = os.path.join(folder, name)
                cv2.imwrite(path, cv2.imread(path, cv2.IMREAD_UNCHANGED)[:62, :126])
    with pytest.raises(UserError, match=r'frame is 62x126 \(HxW\); the networks need sides that are multiples'):
        build_dataset(data_cfg, 'val', 'pda')[0]
    problems = find_problems(data_cfg, 'val', progress=False)
    assert any('62x126' in p and 'multiples of 4' in p for p in problems)
    config, checkpoint = write_experiment(tmp_path, data_cfg)
    assert test_pda.run([config, '--checkpoint', checkpoint, '--no-progress']) == 1
    assert 'multiples of 4' in one_error_line(capsys.readouterr().err)


def test_checkpoint_refused_by_weights_only_shows_the_reason_and_a_safe_look(tmp_path, synthetic_data_cfg, capsys):
    path = tmp_path / 'numpy_inside.pth'
    torch.save({'model': {'w': torch.zeros(1)}, 'best': np.float64(0.5)}, path)
    with pytest.raises(UserError) as caught:
        read_checkpoint(str(path))
    message = str(caught.value)
    assert '\n' not in message and 'loading it would run numpy' in message
    assert 'get_unsafe_globals_in_checkpoint' in message and 'weights_only=True' in message
    config, _ = write_experiment(tmp_path, synthetic_data_cfg)
    assert test_pda.run([config, '--checkpoint', str(path), '--no-progress']) == 1
    assert 'loading it would run numpy' in one_error_line(capsys.readouterr().err)

