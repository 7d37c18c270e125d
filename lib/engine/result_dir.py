"""The result folder of an evaluation (``tools/test_pda.py``, ``tools/show.py``, the key-frame policies): one per
checkpoint, one writer at a time, earlier results never left looking current.

The folder is an :class:`~lib.utils.outputs.OwnedFolder` of kind :data:`KIND`; a run sets aside the files it is
about to replace (``pda.json`` -> ``pda.previous.json``) and drops them once the new ones are written, so a run that
fails or is killed leaves no file of the old run under the name of a current one.
"""
import os

from lib.utils import distributed
from lib.utils.config import resolve_path
from lib.utils.outputs import OwnedFolder

KIND = 'evaluation results'


def default_result_dir(cfg, checkpoint):
    """``<eval.result_root>/<experiment>/<checkpoint file stem>``: ``best.pth`` -> ``.../best``, so the results of
    different checkpoints of one experiment stay apart."""
    stem = os.path.splitext(os.path.basename(checkpoint))[0]
    return os.path.join(resolve_path(cfg['eval']['result_root']), cfg['experiment'], stem)


def claim_results(path, files, what='--output'):
    """Rank 0 claims the result folder ``path`` (its own ``files`` set aside); every rank learns of a refusal.
    Returns the :class:`OwnedFolder` on rank 0, None elsewhere."""
    def claim():
        folder = OwnedFolder(path, KIND, what, own_files=files).claim()
        folder.set_aside(files)
        return folder
    return distributed.claimed_on_main(claim)
