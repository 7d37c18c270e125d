"""One writer per output folder: a lock file that holds the writer's pid while a run writes the folder.

Every command that writes a folder (``tools/train.py`` its experiment folder, ``tools/test_pda.py`` and
``tools/show.py`` their result folders, ``tools/infer_video.py`` its OUTPUT) holds an :class:`OutputLock` from
before its first write until its last.  A second run on the same folder stops at once with one line naming the
holder (pid, host, command, start time).  The lock is an exclusive ``flock`` on the lock file, so the kernel
releases it when the holder dies however it dies (SIGKILL, OOM, power): a lock file left behind by a dead run is
taken over, and the torn temporary files (``*.tmp<pid>*``, see :mod:`lib.utils.atomic`) of that dead run are
removed.  ``flock`` is local to a machine (on NFS it depends on the server), so runs on several machines writing
one shared folder are not protected.
"""
import fcntl
import json
import os
import re
import socket
import sys
import time

LOCK_NAME = '.lock'
_TMP_PATTERN = re.compile(r'\.tmp(\d+)(\.|$)')


class OutputLockError(RuntimeError):
    """The output folder is being written by another run (the message names it)."""


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _describe(record):
    if not record:
        return 'holder unknown'
    command = ' '.join(record.get('command', []))
    return (f'pid {record.get("pid")} on {record.get("host")}, started {record.get("started")}'
            + (f': {command}' if command else ''))


def remove_torn_files(folder, own_pid=None):
    """Remove ``*.tmp<pid>*`` files in ``folder`` (top level) whose writer process is gone; returns their names."""
    own_pid = os.getpid() if own_pid is None else own_pid
    removed = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        match = _TMP_PATTERN.search(name)
        if match is None or int(match.group(1)) == own_pid or _pid_alive(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return sorted(removed)


class OutputLock:
    """Exclusive lock of ``folder`` for this process: ``with OutputLock(folder): ...`` or acquire()/release().

    Args:
        folder: the folder the run writes (created by :meth:`acquire` when ``lock_path`` lies inside it).
        lock_path: the lock file; default ``<folder>/.lock``.  A folder that is replaced by a rename (the output of
            ``infer_video``) keeps its lock beside it, ``<folder>.lock``.
    """

    def __init__(self, folder, lock_path=None):
        self.folder = os.path.normpath(folder)
        self.path = lock_path or os.path.join(self.folder, LOCK_NAME)
        self.fd = None
        self.torn_files = []  # removed temporary files of a dead earlier run
        self.created = None  # the folder this lock created, removed again by release() if the run left it empty

    def acquire(self):
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            if not os.path.isdir(folder):
                os.makedirs(folder)
                self.created = folder
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _describe(self._read(fd))
                    os.close(fd)
                    self._remove_created()
                    raise OutputLockError(f'{self.folder}: in use by another run ({holder}); wait for it to end '
                                          f'or stop it (lock file {self.path})') from None
                # The previous holder unlinks the file when it releases it: if that happened between our open and
                # our flock, we hold a lock on a file nobody else will see; start again on the current one.
                try:
                    current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    current = False
                if current:
                    break
                os.close(fd)
        except OSError as err:
            self._remove_created()
            raise OSError(f'{self.folder}: cannot create the output folder or its lock file '
                          f'({err.strerror or err})') from None
        if os.fstat(fd).st_size and self._read(fd) is None:
            os.close(fd)  # not ours: someone's file that happens to have the lock file's name
            raise OutputLockError(f'{self.path}: exists and is not a lock file of this project; refusing to use it')
        self.fd = fd
        record = {'pid': os.getpid(), 'host': socket.gethostname(), 'command': list(sys.argv),
                  'started': time.strftime('%Y-%m-%d %H:%M:%S')}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
        self.torn_files = remove_torn_files(self.folder) if os.path.isdir(self.folder) else []
        return self

    @staticmethod
    def _read(fd):
        try:
            record = json.loads(os.pread(fd, 65536, 0).decode() or 'null')
        except (ValueError, OSError):
            return None
        if isinstance(record, dict) and 'pid' in record:
            return record
        return None

    def release(self):
        if self.fd is None:
            return
        try:
            os.remove(self.path)  # still ours: we hold the flock on this very file
        except FileNotFoundError:
            pass
        os.close(self.fd)  # releases the flock
        self.fd = None
        self._remove_created()

    def _remove_created(self):
        if self.created is not None:
            try:
                os.rmdir(self.created)  # only if empty: a failed run that wrote nothing leaves no trace
            except OSError:
                pass
            self.created = None

    @property
    def held(self):
        return self.fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
