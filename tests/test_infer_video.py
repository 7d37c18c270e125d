"""tools/infer_video.py end to end on short synthetic videos with a tiny random-init SCNet, and lib.infer.streaming."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, load_tool, moving_scene, run_infer_video, write_frame_folder

from lib.infer.keyframe_policy import parse_policy
from lib.infer.streaming import StreamingSegmenter
from lib.infer.video_io import frame_to_tensor, labels_to_frame, pad_to_multiple
from lib.model import build_scnet
from lib.utils.config import load_config
from lib.utils.errors import UserError
from lib.utils.outputs import MARKER, StagedFolder

N_FRAMES = 12  # of moving_scene


infer_video = load_tool('infer_video')


@pytest.fixture(scope='module')
def video_file(tmp_path_factory):
    """12 frames 62x98 (even, as mp4 needs, but not multiples of 4: the tool must pad)."""
    path = str(tmp_path_factory.mktemp('video') / 'clip.mp4')
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 10, (98, 62))
    assert writer.isOpened()
    for frame in moving_scene(62, 98):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope='module')
def frame_folder(tmp_path_factory):
    """12 PNG frames of the odd size 61x99 (lossless, so the outputs can be checked against a reference)."""
    return write_frame_folder(tmp_path_factory.mktemp('frames') / 'clip', moving_scene(61, 99))


def read_video(path):
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@pytest.mark.parametrize('policy, expected_keys', [
    ('fixed:5', [0, 5, 10]),
    ('per-frame', list(range(N_FRAMES))),
    ('distortion:0.0,max=4', None),  # tau 0: every non-key frame triggers, so keys alternate
    ('distortion:1.0,max=4', [0, 4, 8]),  # tau 1 never triggers: the max interval alone decides
])
def test_video_in_all_outputs_out(model_files, video_file, tmp_path, policy, expected_keys):
    out = tmp_path / 'out'
    assert run_infer_video(model_files, video_file, out, '--policy', policy, '--save-labels', '--save-overlay',
                    '--video') == 0
    assert not os.path.exists(f'{out}.partial')
    labels = sorted(os.listdir(out / 'labels'))
    overlays = sorted(os.listdir(out / 'overlay'))
    assert labels == overlays == [f'{t:06d}.png' for t in range(N_FRAMES)]
    for name in labels:
        label = cv2.imread(str(out / 'labels' / name), cv2.IMREAD_UNCHANGED)
        assert label.shape == (62, 98) and label.dtype == np.uint8 and label.max() < 19
        assert cv2.imread(str(out / 'overlay' / name)).shape == (62, 98, 3)
    summary = json.loads((out / 'summary.json').read_text())
    frames = read_video(str(out / summary['video']))
    assert len(frames) == summary['frames'] == N_FRAMES
    assert all(frame.shape == (62, 98, 3) for frame in frames)
    assert summary['model_size'] == [62, 98]
    if expected_keys is None:
        expected_keys = list(range(0, N_FRAMES, 2))
    assert summary['key_frames'] == expected_keys


def reference_logits(model, frames, keys):
    """The DAVSS stream written out by hand with the SCNet protocol, for frames padded to 64x100."""
    outputs = []
    previous = state = None
    with torch.no_grad():
        for t, frame in enumerate(frames):
            image = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
            image = torch.nn.functional.pad(image, (0, 1, 0, 3), mode='replicate')  # 61x99 -> 64x100
            if t in keys:
                state = model.key_frame(image)
                logits = torch.nn.functional.interpolate(state.logits, scale_factor=4, mode='bilinear',
                                                         align_corners=True)
            else:
                state = model.propagate(state, model.estimate_flow(image, previous))
                logits = model.correct(state, image)['merged']
            outputs.append(logits[0, :, :61, :99].argmax(0).numpy())
            previous = image
    return outputs


def test_labels_match_the_hand_written_protocol_on_an_odd_frame_size(model_files, frame_folder, tmp_path):
    out = tmp_path / 'out'
    assert run_infer_video(model_files, frame_folder, out, '--policy', 'fixed:4', '--save-labels') == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['video'] is None and summary['model_size'] == [61, 99]
    assert not (out / 'overlay').exists()
    config, checkpoint = model_files
    model = build_scnet(load_config(config)['model'])
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    expected = reference_logits(model, moving_scene(61, 99), keys={0, 4, 8})
    for t in range(N_FRAMES):
        label = cv2.imread(str(out / 'labels' / f'{t:06d}.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(label, expected[t], err_msg=f'frame {t}')


def test_resized_inference_restores_the_frame_size(model_files, frame_folder, tmp_path):
    out = tmp_path / 'out'
    assert run_infer_video(model_files, frame_folder, out, '--size', 30, 50, '--save-labels', '--policy', 'fixed:3') == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['model_size'] == [30, 50] and summary['frame_size'] == [61, 99]
    label = cv2.imread(str(out / 'labels' / '000007.png'), cv2.IMREAD_UNCHANGED)
    assert label.shape == (61, 99)
    # Default output when no --save-* option is given: the video only.
    assert run_infer_video(model_files, frame_folder, tmp_path / 'video_only', '--size', 30, 50) == 0
    assert sorted(os.listdir(tmp_path / 'video_only')) == [MARKER, 'segmentation.mp4', 'summary.json']


def test_unreadable_and_empty_videos(model_files, tmp_path, capsys):
    garbage = tmp_path / 'garbage.mp4'
    garbage.write_bytes(b'this is not a video' * 10)
    assert run_infer_video(model_files, garbage, tmp_path / 'a') == 1
    assert_one_line_error(capsys, str(garbage), 'cannot be opened as a video')
    empty = tmp_path / 'empty.mp4'
    empty.write_bytes(b'')
    assert run_infer_video(model_files, empty, tmp_path / 'b') == 1
    assert_one_line_error(capsys, str(empty), 'zero length')
    no_frames = str(tmp_path / 'no_frames.mp4')  # a valid container header, zero frames
    cv2.VideoWriter(no_frames, cv2.VideoWriter_fourcc(*'mp4v'), 10, (64, 48)).release()
    assert run_infer_video(model_files, no_frames, tmp_path / 'e') == 1
    assert_one_line_error(capsys, no_frames)
    assert run_infer_video(model_files, tmp_path / 'missing.mp4', tmp_path / 'c') == 1
    assert_one_line_error(capsys, 'missing.mp4', 'no such')
    (tmp_path / 'no_images').mkdir()
    assert run_infer_video(model_files, tmp_path / 'no_images', tmp_path / 'd') == 1
    assert_one_line_error(capsys, 'no_images', 'no image files')
    for name in 'abcde':
        assert not (tmp_path / name).exists() and not (tmp_path / f'{name}.partial').exists()


def test_frame_size_change_mid_stream_leaves_only_a_marked_partial_output(model_files, tmp_path, capsys):
    frames = moving_scene(40, 60, 4) + moving_scene(44, 60, 2)
    folder = write_frame_folder(tmp_path / 'mixed', frames)
    out = tmp_path / 'out'
    assert run_infer_video(model_files, folder, out, '--save-labels') == 1
    assert_one_line_error(capsys, os.path.join(folder, 'frame4.png'), 'frame 4 is 60x44', 'started at 60x40')
    assert not out.exists()
    assert os.path.isdir(f'{out}.partial') and not os.path.exists(f'{out}.partial/summary.json')


def test_existing_output_is_refused_unless_overwrite(model_files, frame_folder, tmp_path, capsys):
    out = tmp_path / 'out'
    assert run_infer_video(model_files, frame_folder, out, '--save-labels') == 0
    assert run_infer_video(model_files, frame_folder, out) == 1
    assert_one_line_error(capsys, str(out), '--overwrite')
    assert (out / 'labels').is_dir()
    assert run_infer_video(model_files, frame_folder, out, '--overwrite', '--policy', 'fixed:6') == 0
    assert sorted(os.listdir(out)) == [MARKER, 'segmentation.mp4', 'summary.json']


def test_bad_policy_and_checkpoint(model_files, frame_folder, tmp_path, capsys):
    assert run_infer_video(model_files, frame_folder, tmp_path / 'a', '--policy', 'sometimes') == 1
    assert_one_line_error(capsys, 'sometimes', 'fixed:K')
    config, _ = model_files
    wrong = tmp_path / 'wrong.pth'
    torch.save({'deeplab.unknown.weight': torch.zeros(1)}, wrong)
    assert infer_video.run([config, '--checkpoint', str(wrong), frame_folder, str(tmp_path / 'b')]) == 1
    assert_one_line_error(capsys, 'wrong.pth', 'does not fit')
    dmnet_only = tmp_path / 'dmnet.pth'
    torch.save(build_scnet(load_config(config)['model']).dmnet.state_dict(), dmnet_only)
    assert infer_video.run([config, '--checkpoint', str(dmnet_only), frame_folder,
                             str(tmp_path / 'c')]) == 1
    assert_one_line_error(capsys, 'dmnet.pth', 'only the dmnet weights')
    for name in 'abc':
        assert not (tmp_path / name).exists()


def test_padding_round_trip_and_label_restore():
    x = torch.rand(1, 3, 61, 99)
    padded, size = pad_to_multiple(x)
    assert padded.shape == (1, 3, 64, 100) and size == (61, 99)
    assert torch.equal(padded[..., :61, :99], x)
    assert torch.equal(padded[..., 63, :99], x[..., 60, :])  # replicated border, not zeros
    frame = (np.random.default_rng(1).random((61, 99, 3)) * 255).astype(np.uint8)
    image, model_size = frame_to_tensor(frame, size=(30, 50))
    assert image.shape == (1, 3, 32, 52) and model_size == (30, 50)
    # Labels = column index // 10 at model size, padding columns 50.. hold class 5: it must be cropped away.
    labels = (torch.arange(52) // 10).expand(1, 32, 52)
    label = labels_to_frame(labels, (30, 50), (61, 99))
    assert label.shape == (61, 99) and set(np.unique(label)) == set(range(5))
    assert (label[:, 0] == 0).all() and (label[:, -1] == 4).all()


def test_staged_folder_commit_replaces_atomically(tmp_path):
    target = tmp_path / 'result'
    with StagedFolder(str(target), 'video segmentation', 'OUTPUT') as folder:
        with open(folder.file('labels', 'x.png'), 'w') as f:
            f.write('new')
        assert not target.exists()
        folder.commit()
    assert (target / 'labels' / 'x.png').read_text() == 'new'
    with pytest.raises(UserError, match='--overwrite'):
        StagedFolder(str(target), 'video segmentation', 'OUTPUT')
    with StagedFolder(str(target), 'video segmentation', 'OUTPUT', overwrite=True) as second:
        second.commit()
    assert os.listdir(target) == [MARKER] and not os.path.exists(f'{target}.old')
    assert not os.path.exists(f'{target}.lock')


def test_streaming_segmenter_feeds_the_policy_the_merge_distortion():
    torch.manual_seed(0)
    model = build_scnet(load_config(None, [f'model.{k}={v}' for k, v in
                                           (('deeplab.width_mult', 0.0625), ('deeplab.middle_blocks', 1),
                                            ('flownet.width_mult', 0.125), ('cfnet.width_mult', 0.125))])['model'])
    segmenter = StreamingSegmenter(model.eval(), parse_policy('distortion:0.5,max=10'))
    frames = moving_scene(32, 48, 3)
    segmenter.step(frame_to_tensor(frames[0])[0])
    _, is_key, distortion = segmenter.step(frame_to_tensor(frames[1])[0])
    assert not is_key and distortion.shape == (1, 1, 32, 48)
    assert segmenter.policy.last_score == pytest.approx(distortion.double().mean().item())


def test_fast_path_runs_and_mostly_agrees_with_the_exact_path(model_files, frame_folder, tmp_path):
    assert run_infer_video(model_files, frame_folder, tmp_path / 'exact', '--policy', 'fixed:4', '--save-labels') == 0
    assert run_infer_video(model_files, frame_folder, tmp_path / 'fast', '--policy', 'fixed:4', '--save-labels',
                    '--fast', '--fast-dtype', 'fp32') == 0
    summary = json.loads((tmp_path / 'fast' / 'summary.json').read_text())
    assert summary['fast']['tail'] == 'sparse' and summary['key_frames'] == [0, 4, 8]
    for t in range(N_FRAMES):
        exact = cv2.imread(str(tmp_path / 'exact' / 'labels' / f'{t:06d}.png'), cv2.IMREAD_UNCHANGED)
        fast = cv2.imread(str(tmp_path / 'fast' / 'labels' / f'{t:06d}.png'), cv2.IMREAD_UNCHANGED)
        assert fast.shape == exact.shape == (61, 99)
        # Key frames: same logits, same bilinear upsample. Others: the merge at 1/4 moves a few boundary pixels.
        assert (fast == exact).mean() == 1.0 if t % 4 == 0 else (fast == exact).mean() > 0.9
