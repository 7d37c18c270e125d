"""``load_scnet``: the whole SCNet of a config with the weights of a file, the one entry point of every tool and API
that needs a trained network for inference (evaluation, pictures, benchmarks, video)."""
from ..utils.checkpoint import compare, is_dmnet_only, load_checkpoint, strip_wrapper_prefixes
from ..utils.errors import UserError
from .scnet import build_scnet


def _class_count_mismatch(model, report):
    """(key, classes in the file) for a classifier whose output count differs from the model's, else None."""
    for key, file_shape, model_shape in report.mismatched:
        if model_shape[0] == model.n_classes and file_shape[0] != model.n_classes and file_shape[1:] == model_shape[1:]:
            return key, file_shape[0]
    return None


def load_scnet(model_cfg, path, device='cpu'):
    """The ``SCNet`` of ``model_cfg`` (a config's ``model:`` section) with the weights of the whole-SCNet file
    ``path``, in eval mode on ``device``.

    The file is checked against the config before anything is loaded: a checkpoint of another dataset (class
    count) or of another stage (a DMNet-only, DMNet-stage or pretrained file) or other widths is refused with one
    :class:`UserError` line saying so.
    """
    model = build_scnet(model_cfg, stage='correction')
    state = strip_wrapper_prefixes(load_checkpoint(path))
    report = compare(model, state)
    classes = _class_count_mismatch(model, report)
    if classes is not None:
        key, n_file = classes
        raise UserError(f'{path}: checkpoint predicts {n_file} classes ({key}) but the config has '
                        f'model.n_classes={model.n_classes}; use the config of the dataset it was trained on')
    if is_dmnet_only(model, state):
        raise UserError(f'{path}: holds only the dmnet weights; inference needs a whole SCNet (the correction '
                        f'stage output)')
    if not report.fits():
        raise UserError(f'{path}: does not fit SCNet: not a whole SCNet of this config (model widths, '
                        f'stage?): {report.problems()}')
    model.load_state_dict(state)
    return model.to(device).eval()
