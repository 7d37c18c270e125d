"""What a person looks at: pda.png beside pda.json, the colour bar of show's distortion maps, and the class legend
and key-frame mark of infer_video's overlay video."""
import json
import os

import cv2
import numpy as np
import torch
from helpers import load_tool, moving_scene, run_infer_video, write_experiment, write_frame_folder
from PIL import Image

from lib.utils import visualize as vis
from lib.utils.palette import class_names, colorize, palette_for

PALETTE, NAMES = palette_for('cityscapes'), class_names('cityscapes')


def test_test_pda_draws_pda_png_from_the_result_it_writes(tmp_path, synthetic_data_cfg, monkeypatch):
    drawn = []
    real = vis.plot_pda
    monkeypatch.setattr('lib.eval.jobs.plot_pda', lambda result, path, title: drawn.append(result) or
                        real(result, path, title))
    config, checkpoint = write_experiment(tmp_path, synthetic_data_cfg)
    argv = [config, '--checkpoint', checkpoint, '--max-clips', '1', '--no-progress']
    assert load_tool('test_pda').run(argv) == 0
    out = tmp_path / 'pda_test' / 'final'
    assert sorted(os.listdir(out)) == ['.davss', 'pda.json', 'pda.md', 'pda.png']
    result = json.loads((out / 'pda.json').read_text())
    assert all(drawn[-1][key] == result[key] for key in ('distances', 'davss', 'propagation_only', 'per_frame'))
    picture = np.asarray(Image.open(out / 'pda.png').convert('RGB'))
    assert picture.shape[0] > 300 and picture.std() > 10


def test_colour_bar_shows_the_heat_map_scale_in_the_key_frames_cell():
    bar = vis.colour_bar(64, 128)
    assert bar.shape == (64, 128, 3)
    ramp = vis.heat_map(np.linspace(0.0, 1.0, 120)[None])[0]
    assert np.array_equal(bar[64 // 3 + 5, 4:124], ramp)  # the bar: 0 (black) at the left .. 1 at the right

    tiles = vis.TileMaker(PALETTE, 128)
    label = torch.zeros(64, 128, dtype=torch.long)
    trace = {'frames': [0, 1], 'merged': [label[None]] * 2, 'propagated': [label[None]] * 2,
             'distortion': [None, torch.full((1, 64, 128), 0.5)], 'per_frame': label[None]}
    picture, animation = vis.clip_pictures(trace, torch.rand(2, 3, 64, 128), label, tiles)
    row = 2 * (64 + 2)  # the third row of the grid: distortion maps
    assert np.array_equal(picture[row:row + 64, :128], bar)
    assert np.array_equal(animation[0][:, 2 * 128:3 * 128], bar)


def test_video_frame_names_the_classes_in_view_and_marks_key_frames():
    label = np.full((48, 200), 13, np.uint8)  # car
    label[:30] = 0  # road, more pixels
    image = colorize(label, PALETTE)
    frame = vis.video_frame(image, label, PALETTE, NAMES)
    strip = frame[-12:].reshape(-1, 3)
    colours = {tuple(c) for c in strip}
    assert tuple(PALETTE[0]) in colours and tuple(PALETTE[13]) in colours and tuple(PALETTE[10]) not in colours
    first_swatch = frame[-12 + 5, 2 + 3]
    assert tuple(first_swatch) == tuple(PALETTE[0])  # most pixels first
    assert np.array_equal(frame[:-12], image[:-12])  # nothing else changed on a non-key frame
    key = vis.video_frame(image, label, PALETTE, NAMES, key=True)
    assert np.array_equal(key[-12:], frame[-12:]) and (key[:10, :20] != image[:10, :20]).any()
    assert np.array_equal(key[16:-12], image[16:-12])


def test_overlay_video_carries_the_legend_and_the_key_marks_the_pngs_stay_exact(model_files, tmp_path):
    frames = write_frame_folder(tmp_path / 'frames', moving_scene(64, 96))
    out = tmp_path / 'out'
    assert run_infer_video(model_files, frames, out, '--policy', 'fixed:5', '--save-overlay', '--video') == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['key_frames'] == [0, 5, 10]
    capture = cv2.VideoCapture(str(out / summary['video']))
    for index in range(summary['frames']):
        ok, decoded = capture.read()
        assert ok
        overlay = cv2.imread(str(out / 'overlay' / f'{index:06d}.png')).astype(int)  # the PNG: no legend, no mark
        corner = np.abs(decoded[:10, :20].astype(int) - overlay[:10, :20]).mean()
        assert (corner > 40) == (index in summary['key_frames']), (index, corner)
        assert decoded[-11:].mean() < overlay[-11:].mean() - 20  # the dark legend strip
