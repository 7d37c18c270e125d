"""The experiment folder of a training run: who may write it and what ``--overwrite`` replaces.

A run writes ``config.yaml``, ``log.txt``, ``now.pth``, ``best.pth``, ``final.pth`` (and TensorBoard event files) into
``<train.save_root>/<experiment>/``.  A folder that already holds any of them belongs to an earlier run: a new run
refuses it, unless it continues that run (``--resume``) or is told to replace it (``--overwrite``, which deletes
exactly those files, before the new run writes anything, so that no old checkpoint survives beside the new config).
Other files in the folder are never touched.  While a run writes the folder it holds its lock
(:class:`lib.utils.output_lock.OutputLock`, ``<folder>/.lock``), so a concurrent run into the same folder stops
with one line naming the holder.
"""
import os

from lib.utils.output_lock import OutputLock

RUN_FILES = ('config.yaml', 'log.txt', 'now.pth', 'best.pth', 'final.pth')
EVENTS_PREFIX = 'events.out.tfevents.'


class ExperimentFolderError(ValueError):
    """The experiment folder holds an earlier run's outputs (or cannot be claimed); the message says what to do."""


def previous_outputs(save_dir, tblog_dir):
    """Paths of an earlier run's outputs in the experiment folder and its TensorBoard folder."""
    found = [os.path.join(save_dir, name) for name in RUN_FILES if os.path.lexists(os.path.join(save_dir, name))]
    for folder in dict.fromkeys((save_dir, tblog_dir)):
        if os.path.isdir(folder):
            found += [os.path.join(folder, name) for name in sorted(os.listdir(folder))
                      if name.startswith(EVENTS_PREFIX)]
    return found


def claim(save_dir, tblog_dir, resume=False, overwrite=False):
    """Lock ``save_dir`` for this run and check that it may write there.

    Returns ``(lock, to_replace)``: the held lock and, with ``overwrite``, the earlier outputs to delete (with
    :func:`replace_previous`, once the run has passed its other checks).  Raises :class:`ExperimentFolderError` for a
    folder of an earlier run without ``--resume`` / ``--overwrite``, and the lock's errors for a folder in use.
    """
    if resume and overwrite:
        raise ExperimentFolderError('--resume and --overwrite: choose one (continue the run, or replace it)')
    lock = OutputLock(save_dir).acquire()
    found = [] if resume else previous_outputs(save_dir, tblog_dir)
    if found and not overwrite:
        lock.release()
        names = ', '.join(os.path.basename(p) for p in found[:4]) + (', ...' if len(found) > 4 else '')
        raise ExperimentFolderError(f'{save_dir}: holds the outputs of an earlier run ({names}); pass --resume to '
                                    f'continue it, --overwrite to replace it, or choose another experiment name')
    return lock, found


def replace_previous(paths):
    """Delete the earlier run's outputs listed by :func:`claim` (``--overwrite``)."""
    for path in paths:
        if os.path.lexists(path):
            os.remove(path)
