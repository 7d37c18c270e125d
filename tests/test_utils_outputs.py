"""Nothing of the user's lost, nothing half-written reported as done: infer_video's --overwrite, output locks, checked
writes under a per-file size limit, and damaged media (OpenCV's own sample videos)."""
import glob
import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, moving_scene, run_infer_video, write_frame_folder

from lib.infer.video_io import VideoFileSource, VideoWriter
from lib.utils import atomic
from lib.utils.config import REPO_ROOT
from lib.utils.errors import UserError
from lib.utils.outputs import LOCK, MARKER, FolderLock, OwnedFolder, StagedFolder

# OpenCV's sample videos (Debian's opencv-doc), fetched once by `make samples` (make test does it).
OPENCV_SAMPLES = os.environ.get('OPENCV_SAMPLES_DIR') or os.path.join(REPO_ROOT, '.cache', 'opencv-samples')


@pytest.fixture(scope='session')
def opencv_samples():
    if not glob.glob(os.path.join(OPENCV_SAMPLES, '*.avi')):
        pytest.skip(f'needs the opencv-doc sample videos in {OPENCV_SAMPLES}: run `make samples`')
    return OPENCV_SAMPLES


@pytest.fixture
def frames_in(tmp_path):
    return write_frame_folder(tmp_path / 'in', moving_scene(40, 60, 4))


def tree_listing(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files)


# --- --overwrite replaces only what the command wrote ---

def test_overwrite_refuses_a_folder_infer_video_did_not_write(model_files, frames_in, tmp_path, capsys):
    out = tmp_path / 'photos'
    out.mkdir()
    (out / 'holiday.jpg').write_text('precious')
    assert run_infer_video(model_files, frames_in, out, '--overwrite') == 1
    assert_one_line_error(capsys, str(out), 'not written by DAVSS')
    assert (out / 'holiday.jpg').read_text() == 'precious'
    assert not os.path.exists(f'{out}.partial')


@pytest.mark.parametrize('where', ['same', 'inside', 'parent'])
def test_output_equal_to_inside_or_around_the_input_is_refused(model_files, tmp_path, where, capsys):
    frames = write_frame_folder(tmp_path / 'data' / 'clip', moving_scene(40, 60, 3))
    out = {'same': frames, 'inside': os.path.join(frames, 'seg'), 'parent': str(tmp_path / 'data')}[where]
    before = tree_listing(tmp_path / 'data')
    assert run_infer_video(model_files, frames, out, '--overwrite') == 1
    assert_one_line_error(capsys, 'must lie outside', 'and must not contain it')
    assert tree_listing(tmp_path / 'data') == before


def test_overwrite_replaces_an_earlier_output_of_the_tool(model_files, frames_in, tmp_path):
    out = tmp_path / 'out'
    assert run_infer_video(model_files, frames_in, out, '--save-labels') == 0
    assert (out / MARKER).is_file()
    assert run_infer_video(model_files, frames_in, out, '--overwrite') == 0
    assert sorted(os.listdir(out)) == [MARKER, 'segmentation.mp4', 'summary.json']
    assert not os.path.exists(f'{out}.lock') and not os.path.exists(f'{out}.old')


# --- one writer per folder; the lock file is the project's own ---

def test_second_run_into_a_locked_output_refuses_and_names_the_holder(model_files, frames_in, tmp_path, capsys):
    out = tmp_path / 'out'
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; from lib.utils.outputs import FolderLock; '
                               f'FolderLock({str(out) + ".lock"!r}, {str(out)!r}).acquire(); '
                               'print("locked", flush=True); time.sleep(60)'],
                              env=dict(os.environ, PYTHONPATH=REPO_ROOT), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        assert run_infer_video(model_files, frames_in, out) == 1
        assert_one_line_error(capsys, str(out), 'in use by another run', f'pid {holder.pid}')
        assert not out.exists() and not os.path.exists(f'{out}.partial')
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock is taken over.
    assert run_infer_video(model_files, frames_in, out) == 0
    assert not os.path.exists(f'{out}.lock')


def test_lock_of_a_dead_run_is_taken_over_and_only_its_own_torn_files_removed(tmp_path):
    folder = tmp_path / 'exp'
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    folder.mkdir()
    (folder / MARKER).write_text(json.dumps({'kind': 'training run'}))
    (folder / f'now.tmp{dead_pid}.pth').write_text('torn')
    (folder / 'now.pth').write_text('good')
    (folder / f'photo.tmp{dead_pid}.jpg').write_text('the user\'s')  # named like a temporary, not ours
    (folder / LOCK).write_text(json.dumps({'pid': dead_pid, 'host': 'h', 'started': 'then'}))
    with OwnedFolder(str(folder), 'training run', 'experiment folder', own_files=['now.pth']):
        assert json.loads((folder / LOCK).read_text())['pid'] == os.getpid()
        with pytest.raises(UserError, match=rf'in use by another run \(pid {os.getpid()} '):
            OwnedFolder(str(folder), 'training run', 'experiment folder').claim()
    assert sorted(os.listdir(folder)) == [MARKER, 'now.pth', f'photo.tmp{dead_pid}.jpg']


def test_a_users_folder_is_refused_before_anything_in_it_is_touched(tmp_path):
    """A folder the command did not mark is never locked, cleaned or written (files named like temporaries of a
    dead process included)."""
    folder = tmp_path / 'mine'
    folder.mkdir()
    names = ['photo.tmp99999.jpg', 'budget.tmp2023.xlsx', 'pda.tmp31337.json', 'now.pth']
    for name in names:
        (folder / name).write_text(name)
    for claim in (lambda: OwnedFolder(str(folder), 'evaluation results', '--output', own_files=['pda.json']).claim(),
                  lambda: OwnedFolder(str(folder), 'training run', 'experiment folder').claim(),
                  lambda: StagedFolder(str(folder), 'export', '--output', overwrite=True)):
        with pytest.raises(UserError, match='holds files and is not written by DAVSS'):
            claim()
    assert sorted(os.listdir(folder)) == sorted(names)
    assert all((folder / name).read_text() == name for name in names)


@pytest.mark.parametrize('content', ['my notes', ''])
def test_a_foreign_file_named_like_the_lock_is_left_alone(tmp_path, content):
    (tmp_path / LOCK).write_text(content)
    with pytest.raises(UserError, match='not a lock file'):
        FolderLock(str(tmp_path / LOCK), str(tmp_path)).acquire()
    assert (tmp_path / LOCK).read_text() == content


def test_a_lock_path_that_is_a_symbolic_link_is_not_followed(tmp_path):
    target = tmp_path / 'precious.txt'
    target.write_text('keep me')
    os.symlink(target, tmp_path / LOCK)
    with pytest.raises(UserError, match='not a lock file'):
        FolderLock(str(tmp_path / LOCK), str(tmp_path)).acquire()
    assert target.read_text() == 'keep me' and os.path.islink(tmp_path / LOCK)


def test_an_output_that_is_a_symbolic_link_is_refused(model_files, frames_in, tmp_path, capsys):
    earlier = tmp_path / 'earlier'
    assert run_infer_video(model_files, frames_in, earlier) == 0
    os.symlink(earlier, tmp_path / 'link')
    assert run_infer_video(model_files, frames_in, tmp_path / 'link', '--overwrite') == 1
    assert_one_line_error(capsys, 'is a symbolic link')
    assert os.path.islink(tmp_path / 'link') and (earlier / 'summary.json').is_file()
    assert not os.path.exists(tmp_path / 'link.old') and not os.path.exists(tmp_path / 'link.partial')


# --- a failed write is never committed as complete ---

def limited_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_video_cut_by_a_size_limit_fails_and_leaves_only_the_partial(model_files, tmp_path):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(8)]  # ~ 30 kB per mp4 frame
    frames = write_frame_folder(tmp_path / 'noise', noise)
    out = tmp_path / 'out'
    config, checkpoint = model_files
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tools', 'infer_video.py'), config,
                           '--checkpoint', checkpoint, frames, str(out), '--threads', '1'],
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True, text=True, timeout=300,
                          preexec_fn=limited_file_size(60_000))
    errors = [line for line in done.stderr.replace('\r', '\n').splitlines() if 'error:' in line]
    assert done.returncode == 1, done.stderr[-2000:]
    assert len(errors) == 1 and 'segmentation.mp4' in errors[0] and 'size limit' in errors[0], done.stderr[-2000:]
    assert not out.exists() and os.path.isdir(f'{out}.partial')
    assert not os.path.exists(f'{out}.partial/summary.json')


# --- damaged media are named ---

@pytest.mark.slow
def test_damaged_sample_video_reports_announced_and_decoded_frames(model_files, opencv_samples, tmp_path, capsys):
    video = os.path.join(opencv_samples, 'tree.avi')  # the container announces 444 frames, 68 decode
    source = VideoFileSource(video)
    assert source.announced == 444 and source.decoded is None
    assert sum(1 for _ in source) == 68 and source.decoded == 68
    assert '444 frames but 68 decoded' in source.count_mismatch()

    out = tmp_path / 'out'
    assert run_infer_video(model_files, video, out, '--size', '24', '32', '--policy', 'fixed:10', '--threads', '1') == 0
    err = capsys.readouterr().err.replace('\r', '\n')
    warnings = [line for line in err.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 1 and 'tree.avi' in warnings[0] and '444 frames but 68 decoded' in warnings[0], err
    summary = json.loads((out / 'summary.json').read_text())
    assert (summary['frames'], summary['frames_announced'], summary['frames_decoded']) == (68, 444, 68)


def test_intact_sample_video_gives_no_warning(opencv_samples):
    source = VideoFileSource(os.path.join(opencv_samples, 'Megamind.avi'))
    for index, _ in enumerate(source):
        if index == 2:
            break
    assert source.count_mismatch() is None  # a pass cut short by the consumer decides nothing
    assert source.announced == 270


def test_video_writer_close_checks_the_finished_file(tmp_path):
    writer = VideoWriter(str(tmp_path / 'v'), 10, (32, 48))
    for frame in moving_scene(32, 48, 3):
        writer.write(frame)
    writer.frames += 2  # as if two writes had been reported done that never reached the file
    with pytest.raises(UserError, match='decodes to 3 of the 5 frames'):
        writer.close()


def test_checkpoints_and_results_are_flushed_before_the_rename(tmp_path, monkeypatch):
    synced, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        synced.append(os.readlink(f'/proc/self/fd/{fd}'))
        real_fsync(fd)

    def replace(src, dst):
        synced.append(('rename', os.path.basename(dst)))
        real_replace(src, dst)
    monkeypatch.setattr(atomic.os, 'fsync', fsync)
    monkeypatch.setattr(atomic.os, 'replace', replace)
    atomic.save_torch({'w': torch.zeros(1)}, str(tmp_path / 'now.pth'))
    atomic.write_json(str(tmp_path / 'pda.json'), {'miou': 0.5})
    pid = os.getpid()
    assert synced == [str(tmp_path / f'now.tmp{pid}.pth'), ('rename', 'now.pth'), str(tmp_path),
                      str(tmp_path / f'pda.tmp{pid}.json'), ('rename', 'pda.json'), str(tmp_path)]
