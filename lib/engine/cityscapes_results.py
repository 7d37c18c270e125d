"""Predictions in the official Cityscapes result format: one label-id PNG per labelled frame.

``<city>_<seq>_<frame>_pred_labelIds.png`` holds Cityscapes label ids (``lib.utils.palette.CITYSCAPES_LABEL_IDS``),
the format cityscapesscripts' ``csEvalPixelLevelSemanticLabeling`` reads (it matches a prediction to
``<city>_<seq>_<frame>_gtFine_labelIds.png`` by the ``<city>_<seq>_<frame>`` prefix) and the benchmark server
accepts (a zip of these files).
"""
import os
import re

from lib.dataset.io import write_png_atomic
from lib.utils.errors import UserError
from lib.utils.palette import train_ids_to_label_ids

FORMATS = ('cityscapes', 'synthetic')  # the datasets labelled in Cityscapes train ids
_FRAME_NAME = re.compile(r'^(?P<prefix>[^_/]+_\d{6}_\d{6})_leftImg8bit\.png$')


def prediction_name(frame_path):
    """``leftImg8bit_sequence/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png`` ->
    ``frankfurt_000000_000294_pred_labelIds.png``."""
    match = _FRAME_NAME.match(os.path.basename(frame_path))
    if match is None:
        raise UserError(f'{frame_path}: not a Cityscapes frame name (<city>_<seq>_<frame>_leftImg8bit.png)')
    return f'{match["prefix"]}_pred_labelIds.png'


def save_prediction(folder, frame_path, train_ids):
    """Write one (H, W) train-id prediction (tensor or array; the ignore index is never predicted) as label ids."""
    if hasattr(train_ids, 'detach'):
        train_ids = train_ids.detach().cpu().numpy()
    write_png_atomic(os.path.join(folder, prediction_name(frame_path)), train_ids_to_label_ids(train_ids))
