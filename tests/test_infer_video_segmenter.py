"""The Python API (lib.VideoSegmenter), the onnxruntime backend of video inference, and hubconf.py."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, load_tool, write_video_model

from lib import VideoSegmenter
from lib.utils.errors import UserError

N_FRAMES = 7

infer_video = load_tool('infer_video')


def moving_frames(height, width, n_frames=N_FRAMES):
    """RGB uint8 frames: a smooth texture panning right by 2 pixels per frame, a bright square moving faster."""
    rng = np.random.default_rng(1)
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width + 2 * n_frames, 3), dtype=np.uint8), (9, 9), 0)
    frames = []
    for t in range(n_frames):
        frame = background[:, 2 * t:2 * t + width].copy()
        frame[height // 3:height // 3 + 12, 4 + 4 * t:16 + 4 * t] = (240, 230, 20)
        frames.append(frame)
    return frames


@pytest.fixture(scope='module')
def model_files(tmp_path_factory):
    return write_video_model(str(tmp_path_factory.mktemp('model')))


def reference_labels(net, frames, interval):
    """Independent loop over SCNet's steps in the paper's order: pad to a multiple of 4 (replicate), key frame
    every ``interval`` frames, full-resolution merge and argmax, crop."""
    out, state, previous = [], None, None
    for t, frame in enumerate(frames):
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, -w % 4, 0, -h % 4), mode='replicate')
        with torch.no_grad():
            if t % interval == 0:
                state = net.key_frame(x)
                logits = net.to_full_resolution(state.logits)
            else:
                state = net.propagate(state, net.estimate_flow(x, previous))
                logits = net.correct(state, x, full_resolution=True)['merged']
        previous = x
        out.append(logits.argmax(1)[0, :h, :w].to(torch.uint8).numpy())
    return out


def test_segmenter_on_numpy_frames_matches_the_reference_loop(model_files):
    config, checkpoint, net = model_files
    frames = moving_frames(62, 90)
    seg = VideoSegmenter.from_config(config, checkpoint, policy='fixed:3')
    labels = list(seg(frames))
    expected = reference_labels(net, frames, 3)
    assert len(labels) == N_FRAMES and seg.key_frames == [0, 3, 6]
    for got, want in zip(labels, expected):
        assert got.dtype == np.uint8 and got.shape == (62, 90)
        np.testing.assert_array_equal(got, want)
    # a second stream starts with a key frame again, and gives the same result
    np.testing.assert_array_equal(next(iter(seg(frames[::-1]))), reference_labels(net, frames[::-1], 3)[0])


def test_segmenter_bgr_and_tensor_frames_agree_with_rgb(model_files):
    config, checkpoint, _ = model_files
    frames = moving_frames(64, 96, n_frames=4)
    rgb = list(VideoSegmenter.from_config(config, checkpoint, policy='fixed:2')(frames))
    bgr = VideoSegmenter.from_config(config, checkpoint, policy='fixed:2', channels='bgr')
    for a, b in zip(rgb, bgr(f[..., ::-1].copy() for f in frames)):
        np.testing.assert_array_equal(a, b)
    tensors = (torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames)
    for a, b in zip(rgb, VideoSegmenter.from_config(config, checkpoint, policy='fixed:2')(tensors)):
        assert b.dtype == torch.int64 and b.shape == (64, 96)
        np.testing.assert_array_equal(a, b.numpy())


def test_segmenter_rejects_bad_frames_and_options(model_files):
    config, checkpoint, _ = model_files
    seg = VideoSegmenter.from_config(config, checkpoint)
    with pytest.raises(UserError, match='uint8'):
        next(iter(seg([np.zeros((32, 32), np.uint8)])))
    with pytest.raises(UserError, match=r'H, W > 0'):
        next(iter(seg([np.zeros((0, 32, 3), np.uint8)])))
    with pytest.raises(UserError, match='frame 1 is 40x32'):
        list(seg([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)]))
    for bad in (torch.full((3, 32, 32), 200.0), torch.full((3, 32, 32), float('nan'))):
        with pytest.raises(UserError, match=r'finite values in \[0, 1\]'):
            next(iter(seg([bad])))
    with pytest.raises(UserError, match='channels'):
        VideoSegmenter.from_config(config, checkpoint, channels='rbg')
    with pytest.raises(UserError, match='backend'):
        VideoSegmenter.from_config(config, checkpoint, backend='tensorrt')


def write_folder(folder, frames):
    os.makedirs(folder)
    for t, frame in enumerate(frames):
        cv2.imwrite(os.path.join(folder, f'f{t}.png'), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return str(folder)


def test_run_writes_what_the_command_line_tool_writes(model_files, tmp_path):
    config, checkpoint, net = model_files
    frames = moving_frames(61, 99)
    source = write_folder(tmp_path / 'clip', frames)
    seg = VideoSegmenter.from_config(config, checkpoint, policy='fixed:5')
    summary = seg.run(source, str(tmp_path / 'api'), save_labels=True)
    assert summary['frames'] == N_FRAMES and summary['key_frames'] == [0, 5]
    assert infer_video.run([config, '--checkpoint', checkpoint, source, str(tmp_path / 'cli'),
                             '--save-labels', '--video']) == 0
    for t in range(N_FRAMES):
        api = cv2.imread(str(tmp_path / 'api' / 'labels' / f'{t:06d}.png'), cv2.IMREAD_UNCHANGED)
        cli = cv2.imread(str(tmp_path / 'cli' / 'labels' / f'{t:06d}.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(api, cli)
    assert os.path.isfile(tmp_path / 'api' / summary['video'])
    assert json.loads((tmp_path / 'api' / 'summary.json').read_text())['frames'] == N_FRAMES
    with pytest.raises(UserError, match='already exists'):
        seg.run(source, str(tmp_path / 'api'))


@pytest.mark.slow
@pytest.mark.parametrize('tail', ['full', 'sparse', 'quarter_merge'])
def test_onnxruntime_backend_gives_the_torch_labels(model_files, tail):
    pytest.importorskip('onnxruntime')
    config, checkpoint, _ = model_files
    frames = moving_frames(62, 90, n_frames=4)
    fast = False if tail == 'full' else {'dtype': 'fp32', 'channels_last': False, 'tail': tail}
    torch_labels = list(VideoSegmenter.from_config(config, checkpoint, policy='fixed:3', fast=fast)(frames))
    ort = VideoSegmenter.from_config(config, checkpoint, policy='fixed:3', fast=fast, backend='onnxruntime',
                                     threads=1)
    ort_labels = list(ort(frames))
    assert ort.key_frames == [0, 3]
    agreement = np.mean([np.mean(a == b) for a, b in zip(torch_labels, ort_labels)])
    assert agreement > 0.999  # float32 rounding in another order may flip a tie, nothing more


@pytest.mark.slow
def test_infer_video_backend_option(model_files, tmp_path):
    pytest.importorskip('onnxruntime')
    config, checkpoint, _ = model_files
    source = write_folder(tmp_path / 'clip', moving_frames(62, 90, n_frames=3))
    out = tmp_path / 'out'
    assert infer_video.run([config, '--checkpoint', checkpoint, source, str(out), '--backend',
                             'onnxruntime', '--threads', '1', '--policy', 'fixed:2']) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['backend'] == 'onnxruntime' and summary['key_frames'] == [0, 2]


def test_hubconf_entry_points_load_local_weights(model_files, tmp_path):
    config, checkpoint, net = model_files
    hub_net = torch.hub.load(REPO_ROOT, 'scnet', source='local', checkpoint=checkpoint, config=config)
    for (name, a), b in zip(net.state_dict().items(), hub_net.state_dict().values()):
        assert torch.equal(a, b), name
    assert not hub_net.training
    deeplab = torch.hub.load(REPO_ROOT, 'deeplabv3plus', source='local', checkpoint=checkpoint,
                             width_mult=0.0625, middle_blocks=1)
    for name, value in deeplab.state_dict().items():
        assert torch.equal(value, net.deeplab.state_dict()[name]), name
    dmnet_only = tmp_path / 'dmnet.pth'
    torch.save(net.dmnet.state_dict(), dmnet_only)
    with pytest.raises(UserError, match='does not fit deeplab'):
        torch.hub.load(REPO_ROOT, 'deeplabv3plus', source='local', checkpoint=str(dmnet_only),
                       width_mult=0.0625, middle_blocks=1)
    seg = torch.hub.load(REPO_ROOT, 'video_segmenter', source='local', config=config, checkpoint=checkpoint)
    assert isinstance(seg, VideoSegmenter)


def test_readme_snippet_runs(model_files, monkeypatch, capsys):
    """The README's "Video in Python" block, run as written with the tiny model's config and weights."""
    config, checkpoint, _ = model_files
    with open(os.path.join(REPO_ROOT, 'README.md')) as f:
        readme = f.read()
    section = readme[readme.index('## Video in Python'):]
    start = section.index('```python\n') + len('```python\n')
    code = section[start:section.index('\n```', start)]
    assert "config = 'exp/synthetic/correction.yaml'" in code
    code = code.replace("'exp/synthetic/correction.yaml'", repr(config))
    code = code.replace("'saved_model/synthetic_correction/final.pth'", repr(checkpoint))
    exec(compile(code, 'README.md', 'exec'), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[:6] == ['(128, 256) uint8'] * 6 and printed[6] == '[0, 5]'
