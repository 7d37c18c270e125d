"""tools/show.py and lib.utils.visualize: grids, heat maps, error maps, legend and GIF of a propagated clip."""
import os

import numpy as np
import pytest
import torch
from helpers import load_tool, write_experiment
from PIL import Image

from lib.utils import visualize as vis
from lib.utils.palette import CITYSCAPES_PALETTE

TILE_WIDTH = 64


def test_error_map_and_heat_map_colours():
    label = np.array([[0, 1], [255, 2]])
    pred = np.array([[0, 2], [5, 2]])
    errors = vis.error_map(pred, label)
    assert tuple(errors[0, 0]) == vis.ERROR_COLOURS['correct'] and tuple(errors[0, 1]) == vis.ERROR_COLOURS['wrong']
    assert tuple(errors[1, 0]) == vis.ERROR_COLOURS['ignored']
    assert vis.error_rate(pred, label) == pytest.approx(1 / 3)
    heat = vis.heat_map(torch.tensor([[0.0, 1.0]]))
    assert heat.dtype == np.uint8 and heat.shape == (1, 2, 3) and heat[0, 1].sum() > heat[0, 0].sum()


def test_grid_layout_and_legend():
    tile = np.full((4, 6, 3), 200, dtype=np.uint8)
    picture = vis.grid([[tile, None, tile], [tile]], gap=1)
    assert picture.shape == (2 * 4 + 1, 3 * 6 + 2, 3)
    assert picture[:4, 7:13].max() == 0  # a None cell is black
    assert picture[5:, 7:].min() == 255 and (picture[5:, :6] == 200).all()  # a short row ends early, on white
    legend = vis.legend(CITYSCAPES_PALETTE, ['road'] * 19)
    assert legend.shape[0] >= 20 * 18 and legend.std() > 0


def test_show_writes_grid_gif_and_legend(tmp_path, synthetic_data_cfg, capsys):
    config, checkpoint = write_experiment(tmp_path, synthetic_data_cfg, show_clips=[1])
    assert load_tool('show').run([config, '--checkpoint', checkpoint, '--distance', '3',
                                  '--tile-width', str(TILE_WIDTH)]) == 0
    folder = tmp_path / 'pda_test' / 'final' / 'show'  # <experiment>/<checkpoint stem>/show
    assert sorted(os.listdir(folder)) == ['.davss', 'clip1_d3.gif', 'clip1_d3.png', 'legend.png']

    grid = Image.open(folder / 'clip1_d3.png')
    tile_height = TILE_WIDTH * 64 // 128  # the synthetic frames are 64x128
    assert grid.size == (4 * TILE_WIDTH + 3 * 2, 5 * tile_height + 4 * 2)  # columns t-3..t; 5 rows
    pixels = np.asarray(grid.convert('RGB'))
    assert pixels.std() > 10
    rows = [pixels[r * (tile_height + 2) + 12:(r + 1) * (tile_height + 2) - 2] for r in range(5)]
    assert all(row.std() > 5 for row in rows)  # below the captions, no row is blank

    gif = Image.open(folder / 'clip1_d3.gif')
    assert gif.n_frames == 4 and gif.size == (4 * TILE_WIDTH, tile_height)
    gif.seek(3)
    assert np.asarray(gif.convert('RGB')).std() > 10
    assert Image.open(folder / 'legend.png').size[1] > 19 * 18


def test_show_refuses_a_clip_outside_the_split(tmp_path, synthetic_data_cfg, capsys):
    config, checkpoint = write_experiment(tmp_path, synthetic_data_cfg)
    assert load_tool('show').run([config, '--checkpoint', checkpoint, '--clips', '7']) == 1
    err = capsys.readouterr().err
    assert 'clips [7]' in err and 'has 2 clips' in err
