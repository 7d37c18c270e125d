"""``tools/test_pda.py --save-predictions D``: label-id PNGs in the official Cityscapes format, scored by
cityscapesscripts' own evaluator (``csEvalPixelLevelSemanticLabeling``) to the project's numbers."""
import glob
import json
import math
import os

import numpy as np
import pytest
import torch
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
from helpers import REPO_ROOT, TINY_OPTS, load_tool, varied_tiny_scnet
from PIL import Image

from lib.eval.jobs import prediction_name
from lib.utils.outputs import MARKER
from lib.utils.palette import CITYSCAPES_CLASSES

CONFIG = os.path.join(REPO_ROOT, 'exp', 'spatial_correction_cityscapes', 'config.yaml')


def pda_argv(root, checkpoint, out, *extra):
    return [CONFIG, '--checkpoint', str(checkpoint), '--output', str(out), '--no-progress', '--no-per-frame',
            '--no-propagation-only', *extra, '--opts', 'data.name=synthetic', f'data.root={root}',
            f'data.val_list={os.path.join(root, "list", "val.txt")}', 'data.num_workers=0', 'data.pin_memory=false',
            'eval.split=val', 'eval.distances=[1,5,9]', 'device=cpu', *TINY_OPTS]


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'model.pth'
    torch.save(varied_tiny_scnet().state_dict(), path)
    return path


def official_scores(root, predictions, monkeypatch):
    """cityscapesscripts' evaluation of the val ground truth of ``root`` against the PNGs in ``predictions``."""
    for name, value in {'predictionPath': str(predictions), 'predictionWalk': None, 'evalInstLevelScore': False,
                        'JSONOutput': False, 'quiet': True}.items():
        monkeypatch.setattr(cs_eval.args, name, value)
    ground_truth = sorted(glob.glob(os.path.join(root, 'gtFine', 'val', '*', '*_gtFine_labelIds.png')))
    assert ground_truth
    found = [cs_eval.getPrediction(cs_eval.args, gt) for gt in ground_truth]  # its own name matching
    return cs_eval.evaluateImgLists(found, ground_truth, cs_eval.args)


@pytest.mark.parametrize('distance', [5, 9])
def test_cityscapesscripts_scores_the_predictions_as_the_project(distance, synthetic_root, checkpoint, tmp_path,
                                                                 monkeypatch):
    out = tmp_path / 'out'
    argv = pda_argv(synthetic_root, checkpoint, out, '--save-predictions', str(distance))
    assert load_tool('test_pda').run(argv) == 0
    predictions = out / f'predictions_d{distance}'
    with open(os.path.join(synthetic_root, 'list', 'val.txt')) as f:
        frames = [line.split()[0] for line in f if line.strip()]
    assert sorted(os.listdir(predictions)) == sorted([MARKER] + [prediction_name(frame) for frame in frames])
    png = np.array(Image.open(predictions / prediction_name(frames[0])))
    assert png.dtype == np.uint8 and png.ndim == 2 and set(np.unique(png)) <= {7, 8, 11, 12, 13, 17, 19, 20, 21,
                                                                                22, 23, 24, 25, 26, 27, 28, 31, 32, 33}

    official = official_scores(synthetic_root, predictions, monkeypatch)
    ours = json.loads((out / 'pda.json').read_text())['davss']
    index = [1, 5, 9].index(distance)
    assert official['averageScoreClasses'] == pytest.approx(ours['miou'][index], abs=1e-9)
    for name, iou in zip(CITYSCAPES_CLASSES, ours['iou'][index]):
        theirs = official['classScores'][name]
        assert (iou is None and math.isnan(theirs)) or theirs == pytest.approx(iou, abs=1e-9), name
    assert sum(iou is not None for iou in ours['iou'][index]) >= 4  # several classes: not a trivial agreement


def test_bad_save_predictions_is_a_one_line_error_before_any_write(synthetic_root, checkpoint, tmp_path, capsys):
    tool = load_tool('test_pda')
    out = tmp_path / 'out'
    assert tool.run(pda_argv(synthetic_root, checkpoint, out, '--save-predictions', '4')) == 1
    err = capsys.readouterr().err.strip()
    assert err == 'error: --save-predictions: distance 4 is not evaluated (eval.distances: [1, 5, 9])'
    argv = pda_argv(synthetic_root, checkpoint, out, '--save-predictions', '5') + ['data.name=camvid', 'model.n_classes=11']
    assert tool.run(argv) == 1
    assert 'data.name=camvid has no such format' in capsys.readouterr().err
    assert not out.exists()


def test_a_later_run_leaves_only_its_own_predictions(synthetic_root, checkpoint, tmp_path):
    # The folder a user uploads holds one run's PNGs: a PNG of a clip an earlier run evaluated is not left beside them.
    tool, out = load_tool('test_pda'), tmp_path / 'out'
    assert tool.run(pda_argv(synthetic_root, checkpoint, out, '--save-predictions', '1')) == 0
    ours = sorted(os.listdir(out / 'predictions_d1'))
    (out / 'predictions_d1' / 'otherclip_000001_000019_pred_labelIds.png').write_bytes(b'an earlier run')
    assert tool.run(pda_argv(synthetic_root, checkpoint, out, '--save-predictions', '1')) == 0
    assert sorted(os.listdir(out / 'predictions_d1')) == ours and len(ours) >= 2
    assert not os.path.exists(f'{out}/predictions_d1.partial')
