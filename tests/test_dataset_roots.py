"""One root variable per dataset, and the synthetic generator never writing into a folder it did not make."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers import labels as cs_labels
from helpers import REPO_ROOT

from lib import synthetic
from lib.utils.config import load_config
from lib.utils.errors import UserError
from lib.utils.outputs import read_marker
from lib.utils.palette import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_IDS, train_ids_to_label_ids

CONFIGS = {
    'exp/dmnet_cityscapes/config.yaml': 'CITYSCAPES_ROOT', 'exp/spatial_correction_cityscapes/config.yaml':
    'CITYSCAPES_ROOT', 'exp/dmnet_camvid/config.yaml': 'CAMVID_ROOT', 'exp/spatial_correction_camvid/config.yaml':
    'CAMVID_ROOT', 'exp/synthetic/segmentation.yaml': 'SYNTHETIC_ROOT', 'exp/synthetic/flow.yaml': 'SYNTHETIC_ROOT',
    'exp/synthetic/dmnet.yaml': 'SYNTHETIC_ROOT', 'exp/synthetic/correction.yaml': 'SYNTHETIC_ROOT',
}
DEFAULT_ROOTS = {'CITYSCAPES_ROOT': 'data/cityscapes', 'CAMVID_ROOT': 'data/camvid',
                 'SYNTHETIC_ROOT': 'data/synthetic'}


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_each_config_reads_its_own_dataset_variable(config, monkeypatch):
    for variable in DEFAULT_ROOTS:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv('DATA_ROOT', '/shared/by/everything')  # no longer read: it cannot send one set into another
    assert load_config(os.path.join(REPO_ROOT, config))['data']['root'] == DEFAULT_ROOTS[CONFIGS[config]]
    for variable in DEFAULT_ROOTS:
        monkeypatch.setenv(variable, f'/data/{variable.lower()}')
    cfg = load_config(os.path.join(REPO_ROOT, config))
    mine = f'/data/{CONFIGS[config].lower()}'
    assert cfg['data']['root'] == mine
    for key in ('train_list', 'val_list'):
        path = cfg['data'][key]
        assert not path or path.startswith(mine) or path.startswith('data/list/'), (key, path)


def fake_dataset(folder):
    folder = Path(folder)
    (folder / 'gtFine' / 'val').mkdir(parents=True)
    (folder / 'gtFine' / 'val' / 'x_gtFine_labelIds.png').write_bytes(b'not ours')
    return folder


def tree(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob('*'))}


def test_generator_refuses_a_folder_holding_other_files(tmp_path):
    users = fake_dataset(tmp_path / 'cityscapes')
    before = tree(users)
    with pytest.raises(UserError, match=f'synthetic root {users}: holds files and is not written by DAVSS'):
        synthetic.generate(str(users), size=(32, 64), n_train=1, n_val=0, workers=1, n_frames=12, labelled_frame=10)
    assert tree(users) == before
    a_file = tmp_path / 'file'
    a_file.write_text('x')
    with pytest.raises(UserError, match='exists and is not a folder'):
        synthetic.generate(str(a_file), size=(32, 64), n_train=1, n_val=0, workers=1, n_frames=12, labelled_frame=10)


def test_generator_replaces_its_own_set_whole(tmp_path):
    kwargs = dict(size=(32, 64), n_train=1, n_val=0, workers=1, n_frames=12, labelled_frame=10)
    root = tmp_path / 'synthetic'
    synthetic.generate(str(root), **kwargs)
    assert read_marker(str(root)) == 'synthetic set'
    first = tree(root)
    synthetic.generate(str(root), **dict(kwargs, n_train=2))  # its own set: replaced by the new one
    assert (root / 'list' / 'train.txt').read_text().count('\n') == 2 and tree(root) != first
    assert sorted(os.listdir(tmp_path)) == ['synthetic']  # no .partial, .old or .lock left
    empty = tmp_path / 'empty'
    empty.mkdir()
    synthetic.generate(str(empty), **kwargs)
    assert (empty / 'list' / 'train.txt').is_file()


@pytest.mark.slow
def test_make_synthetic_refuses_with_one_line(tmp_path):
    users = fake_dataset(tmp_path / 'cityscapes')
    before = tree(users)
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'tools', 'make_synthetic.py'), '--root',
                           str(users), '--size', '32', '64', '--train', '1', '--val', '0', '--frames', '12',
                           '--labelled-frame', '10', '--workers', '1'], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f'error: synthetic root {users}: holds files and is not written '
                                                f'by DAVSS; refusing to write into it (give a new or empty folder)']
    assert tree(users) == before


def test_label_ids_are_the_cityscapes_ones(synthetic_root):
    """The synthetic gtFine also holds *_gtFine_labelIds.png, the train ids mapped as cityscapesscripts maps them."""
    labels = cs_labels
    with open(os.path.join(synthetic_root, 'list', 'val.txt')) as f:
        train_ids_rel = f.read().split()[1]
    train_ids = cv2.imread(os.path.join(synthetic_root, train_ids_rel), cv2.IMREAD_UNCHANGED)
    label_ids = cv2.imread(os.path.join(synthetic_root, train_ids_rel.replace('labelTrainIds', 'labelIds')),
                           cv2.IMREAD_UNCHANGED)
    assert label_ids.shape == train_ids.shape and label_ids.dtype == np.uint8
    for train_id in np.unique(train_ids):
        ids = np.unique(label_ids[train_ids == train_id])
        assert len(ids) == 1, train_id
        label = labels.id2label[int(ids[0])]
        if train_id == 255:
            assert label.ignoreInEval
        else:
            assert label.trainId == train_id and label.name == CITYSCAPES_CLASSES[train_id]
    assert len(np.unique(train_ids)) >= 5


def test_label_id_table_is_cityscapesscripts_one():
    official = {train_id: label.id for train_id, label in cs_labels.trainId2label.items() if 0 <= train_id < 19}
    assert dict(enumerate(CITYSCAPES_LABEL_IDS)) == official
    mapped = train_ids_to_label_ids(np.array([[0, 18, 255]], dtype=np.uint8))
    assert mapped.tolist() == [[7, 33, 0]] and cs_labels.id2label[0].ignoreInEval
