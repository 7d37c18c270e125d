"""tools/check_dataset.py and tools/make_lists.py: every problem reported at once; lists rebuilt exactly."""
import os

import cv2
import numpy as np
from helpers import H, W, load_tool, make_camvid, make_cityscapes

check_dataset = load_tool('check_dataset')
make_lists = load_tool('make_lists')


def test_check_dataset_reports_every_problem(tmp_path, capsys):
    root = str(tmp_path)
    list_path = make_cityscapes(root, labelled=(19, 25))
    with open(list_path, 'a') as f:
        f.write('garbage line here\n')
    os.remove(os.path.join(root, 'leftImg8bit_sequence/train/aachen/aachen_000000_000012_leftImg8bit.png'))
    cv2.imwrite(os.path.join(root, 'gtFine/train/aachen/aachen_000000_000025_gtFine_labelTrainIds.png'),
                np.full((H, W), 77, dtype=np.uint8))
    status = check_dataset.run(['--name', 'cityscapes', '--root', root, '--list', list_path, '--quiet'])
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert len(out) == 3, out
    assert any('list.txt:3' in line for line in out)
    assert any('aachen_000000_000012_leftImg8bit.png: file not found' in line for line in out)
    assert any('000025_gtFine_labelTrainIds.png' in line and 'found 77' in line for line in out)


def test_check_dataset_passes_the_synthetic_set(synthetic_root):
    status = check_dataset.run(['--name', 'synthetic', '--root', synthetic_root, '--quiet',
                                 '--list', os.path.join(synthetic_root, 'list', 'train.txt')])
    assert status == 0


def test_make_lists_rebuilds_the_synthetic_lists(synthetic_root, tmp_path):
    out = str(tmp_path / 'val.txt')
    assert make_lists.run(['--name', 'synthetic', '--root', synthetic_root, '--split', 'val', '--output', out,
                            '--check']) == 0
    with open(out) as f, open(os.path.join(synthetic_root, 'list', 'val.txt')) as g:
        assert f.read() == g.read()


def test_make_lists_camvid_frame_numbering(tmp_path):
    root = str(tmp_path)
    make_camvid(root)
    os.makedirs(os.path.join(root, 'video_image/Seq05VD'))
    cv2.imwrite(os.path.join(root, 'label/Seq05VD_f00030.png'), np.zeros((H, W), np.uint8))
    out = str(tmp_path / 'camvid.txt')
    assert make_lists.run(['--name', 'camvid', '--root', root, '--output', out]) == 0
    with open(out) as f:
        lines = f.read().splitlines()
    # The official lists pair these names exactly (data/list/camvid/*.txt).
    assert lines == ['video_image/0001TP/0001TP_000030.png label/0001TP_006690.png',
                     'video_image/Seq05VD/Seq05VD_000031.png label/Seq05VD_f00030.png']
