"""A result folder of an evaluation (``tools/test_pda.py``, ``tools/show.py``): one writer at a time, and earlier
results never left looking current.

The run locks the folder (:class:`lib.utils.output_lock.OutputLock`) before its work and releases it at the end.
Before it starts it renames the results it is about to replace, ``pda.json`` -> ``pda.previous.json``: a run that
fails or is killed leaves no file of the old run under the name of a current one (and keeps the old numbers under
a name that says what they are); a run that completes writes the new files and removes the set-aside ones.
"""
import os

from lib.utils import distributed
from lib.utils.config import resolve_path
from lib.utils.output_lock import OutputLock, OutputLockError


class ResultFolderError(ValueError):
    """The result folder is in use or cannot be written (the message names it)."""


def default_result_dir(cfg, checkpoint):
    """``<eval.result_root>/<experiment>/<checkpoint file stem>``: ``best.pth`` -> ``.../best``, so the results of
    different checkpoints of one experiment stay apart."""
    stem = os.path.splitext(os.path.basename(checkpoint))[0]
    return os.path.join(resolve_path(cfg['eval']['result_root']), cfg['experiment'], stem)


def previous_name(path):
    stem, ext = os.path.splitext(path)
    return f'{stem}.previous{ext}'


def set_aside(folder, names):
    """Rename the existing ``names`` in ``folder`` to their ``.previous`` names; returns every ``.previous`` file
    of them (also those an earlier failed run left), for :func:`drop_aside` once the new results are written."""
    aside = []
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.replace(path, previous_name(path))
        if os.path.isfile(previous_name(path)):
            aside.append(previous_name(path))
    return aside


def drop_aside(paths):
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


def lock_results(folder):
    """Rank 0 locks ``folder``; every rank learns the outcome (a refusal stops all of them with one line).
    Returns the lock on rank 0, None elsewhere."""
    return distributed.locked_on_main(lambda: (OutputLock(folder).acquire(), None), (OutputLockError, OSError),
                                      ResultFolderError)[0]
