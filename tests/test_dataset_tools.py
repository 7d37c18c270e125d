"""tools/check_dataset.py, tools/make_lists.py and tools/make_synthetic.py: every problem reported at once; lists
rebuilt exactly; bad counts refused before anything is written."""
import os

import cv2
import numpy as np
from helpers import H, W, load_tool, make_camvid, make_cityscapes, write_image

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


def segnet_like_label():
    """An 11-class CamVid-like label at half the video size (as SegNet's 360x480 release): sky, buildings, road,
    pavement, a car, a tree and poles one pixel wide."""
    label = np.full((60, 80), 1, dtype=np.uint8)  # building
    label[:15] = 0  # sky
    label[40:] = 3  # road
    label[34:40] = 4  # pavement
    label[30:48, 20:45] = 8  # car
    label[10:34, 55:70] = 5  # tree
    label[15:40, [10, 50, 75]] = 2  # poles, one pixel wide
    label[0, :3] = 255
    return label


def test_check_dataset_catches_labels_resized_with_interpolation(tmp_path, capsys):
    """The video frames are twice the label's size; only a nearest-neighbour resize keeps the classes."""
    small = segnet_like_label()
    results = {}
    for name, interpolation in (('nearest', cv2.INTER_NEAREST), ('bilinear', cv2.INTER_LINEAR),
                                ('bicubic', cv2.INTER_CUBIC)):
        root = tmp_path / name
        for index in range(18, 31):
            write_image(str(root / 'video_image/0001TP' / f'0001TP_{index:06d}.png'),
                        np.full((120, 160, 3), index, dtype=np.uint8))
        source = small.copy()
        if name == 'bilinear':
            source[source == 255] = 0  # without void every interpolated value is a class id: only the edges tell
        resized = cv2.resize(source, (160, 120), interpolation=interpolation)
        if name == 'bilinear':
            assert set(np.unique(resized).tolist()) <= set(range(11))
        write_image(str(root / 'label/0001TP_006690.png'), resized)
        (root / 'list.txt').write_text('video_image/0001TP/0001TP_000030.png label/0001TP_006690.png\n')
        status = check_dataset.run(['--name', 'camvid', '--root', str(root), '--list', str(root / 'list.txt'),
                                    '--quiet'])
        results[name] = (status, capsys.readouterr().out)
    assert results['nearest'] == (0, '')
    status, out = results['bilinear']  # every value a class id: found by its edges alone
    assert status == 1 and 'as after a bilinear or bicubic resize; resize labels with nearest-neighbour' in out
    status, out = results['bicubic']  # overshoots and the void edges give values that are no class
    assert status == 1 and 'label values must be in [0, 11) or 255' in out
    # The native (half-size) label, thin poles and all, is not mistaken for a resized one.
    from lib.dataset.checks import RAMP_SHARE, interpolation_ramps
    ramps, edges = interpolation_ramps(small)
    assert ramps <= RAMP_SHARE * edges


def test_make_synthetic_refuses_a_negative_count_before_writing(tmp_path, capsys):
    root = tmp_path / 'set'
    assert load_tool('make_synthetic').run(['--root', root, '--train', '-1', '--val', '1', '--size', '32', '64']) == 1
    assert capsys.readouterr().err.strip() == 'error: train snippets: expected a count >= 0, got -1'
    assert not root.exists()
