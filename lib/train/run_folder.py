"""The experiment folder of a training run, ``<train.save_root>/<experiment>/`` (:mod:`lib.utils.outputs`): one
holding an earlier run's outputs (``RUN_FILES``, TensorBoard events) is refused unless ``--resume`` continues it or
``--overwrite`` deletes exactly those files before the new run writes anything; other files are never touched.
"""
import os

from lib.utils.errors import UserError
from lib.utils.outputs import OwnedFolder

KIND = 'training run'
RUN_FILES = ('config.yaml', 'log.txt', 'metrics.jsonl', 'now.pth', 'best.pth', 'final.pth')
EVENTS_PREFIX = 'events.out.tfevents.'


class RunFolder:
    """The experiment folder (and the TensorBoard folder, when ``train.tblog_root`` puts it elsewhere), claimed
    for one run: locked, checked against ``resume`` / ``overwrite``; :meth:`replace_previous` then deletes the
    earlier run's outputs (``--overwrite``)."""

    def __init__(self, save_dir, tblog_dir, resume=False, overwrite=False):
        if resume and overwrite:
            raise UserError('--resume and --overwrite: choose one (continue the run, or replace it)')
        self.folders = [OwnedFolder(path, KIND, 'experiment folder', own_files=RUN_FILES)
                        for path in dict.fromkeys((save_dir, tblog_dir))]
        self.resume, self.overwrite = resume, overwrite
        self.previous = []

    def claim(self):
        try:
            for folder in self.folders:
                folder.claim()
            found = [] if self.resume else self._previous_outputs()
            if found and not self.overwrite:
                names = ', '.join(os.path.basename(p) for p in found[:4]) + (', ...' if len(found) > 4 else '')
                raise UserError(f'{self.folders[0].path}: holds the outputs of an earlier run ({names}); pass --resume '
                                f'to continue it, --overwrite to replace it, or choose another experiment name')
        except BaseException:
            self.release()
            raise
        self.previous = found
        return self

    def _previous_outputs(self):
        found = [path for path in map(self.folders[0].file, RUN_FILES) if os.path.lexists(path)]
        for folder in self.folders:
            found += [folder.file(name) for name in sorted(os.listdir(folder.path)) if name.startswith(EVENTS_PREFIX)]
        return found

    def replace_previous(self):
        """Delete the earlier run's outputs found by :meth:`claim` (``--overwrite``)."""
        for path in self.previous:
            if os.path.lexists(path):
                os.remove(path)
        self.previous = []

    def release(self):
        for folder in self.folders:
            folder.release()
