"""Class names and RGB colours of the label sets (cityscapesscripts' for Cityscapes, the SegNet benchmark's for
CamVid), label-map colouring, and Cityscapes label ids."""
import numpy as np

CITYSCAPES_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
                      'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
                      'motorcycle', 'bicycle')
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

# The Cityscapes label id of each train id (cityscapesscripts.helpers.labels), the ids its evaluator and the
# benchmark server read; the ignore index goes to 0 ('unlabeled', ignored in evaluation).
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
UNLABELED_ID = 0

CAMVID_CLASSES = ('sky', 'building', 'pole', 'road', 'sidewalk', 'tree', 'sign symbol', 'fence', 'car',
                  'pedestrian', 'bicyclist')
CAMVID_PALETTE = np.array([
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
], dtype=np.uint8)

_BY_DATASET = {
    'cityscapes': (CITYSCAPES_PALETTE, CITYSCAPES_CLASSES),
    'synthetic': (CITYSCAPES_PALETTE, CITYSCAPES_CLASSES),  # the synthetic set uses Cityscapes train ids
    'camvid': (CAMVID_PALETTE, CAMVID_CLASSES),
}


def _lookup(dataset_name):
    if dataset_name not in _BY_DATASET:
        raise ValueError(f'palette: unknown dataset "{dataset_name}", expected one of {sorted(_BY_DATASET)}')
    return _BY_DATASET[dataset_name]


def palette_for(dataset_name):
    """``(n_classes, 3)`` uint8 RGB colours of a dataset's classes."""
    return _lookup(dataset_name)[0]


def class_names(dataset_name):
    """The class names of a dataset, in train-id order."""
    return _lookup(dataset_name)[1]


def colorize(label, palette):
    """(H, W) integer label map (array or tensor; values >= len(palette), 255 among them, black) and (n_classes, 3)
    uint8 ``palette`` -> (H, W, 3) uint8 RGB."""
    if hasattr(label, 'detach'):
        label = label.detach().cpu().numpy()
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f'colorize: expected a (H, W) label map, got shape {label.shape}')
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:len(palette)] = palette
    return table[np.clip(label, 0, 255).astype(np.uint8)]


def train_ids_to_label_ids(label):
    """(H, W) Cityscapes train ids (255 = ignore) -> (H, W) uint8 label ids, as ``*_gtFine_labelIds.png`` hold."""
    table = np.full(256, UNLABELED_ID, dtype=np.uint8)
    table[:len(CITYSCAPES_LABEL_IDS)] = CITYSCAPES_LABEL_IDS
    return table[np.asarray(label, dtype=np.uint8)]
