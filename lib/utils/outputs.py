"""The one owner of output folders: which a command may write, how, what it may remove (docs/guarantees.md)."""
import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time

from lib.utils.errors import UserError

MARKER = '.davss'
LOCK = '.lock'


def read_marker(folder):
    """The kind of output that marked ``folder``, or None."""
    try:
        with open(os.path.join(folder, MARKER)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record.get('kind') if isinstance(record, dict) else None


def write_marker(folder, kind):
    with open(os.path.join(folder, MARKER), 'w') as f:
        json.dump({'kind': kind, 'note': 'written by DAVSS; its commands may replace what they wrote here'}, f)
        f.write('\n')


def check_writable(path, kind, what):
    """Refuse ``path`` unless it is new, an empty folder, or a folder marked ``kind``; ``what``: its option or key."""
    if os.path.islink(path):
        raise UserError(f'{what} {path}: is a symbolic link; give the folder itself')
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path):
        raise UserError(f'{what} {path}: exists and is not a folder')
    found = read_marker(path)
    if set(os.listdir(path)) - {LOCK} and found != kind:  # its lock: taken by this very claim
        owner = f'the output of a {found}' if found else 'not written by DAVSS'
        raise UserError(f'{what} {path}: holds files and is {owner}; refusing to write into it (give a new or '
                        f'empty folder)')


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_torn_copies(folder, names):
    """Remove the temporary copies ``<stem>.tmp<pid><ext>`` of ``names`` in ``folder`` whose writer is dead."""
    for name in names:
        stem, ext = os.path.splitext(name)
        pattern = re.compile(rf'^{re.escape(stem)}\.tmp(\d+){re.escape(ext)}$')
        for entry in os.listdir(folder):
            match = pattern.match(entry)
            path = os.path.join(folder, entry)
            if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))) \
                    and os.path.isfile(path) and not os.path.islink(path):
                os.remove(path)


class FolderLock:
    """Exclusive lock of one writer on the lock file ``path``; a second run stops at once naming the holder."""

    def __init__(self, path, folder):
        self.path = path
        self.folder = folder  # named in the messages
        self.fd = None

    def acquire(self):
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        while True:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(self.path, flags)
                except FileNotFoundError:  # released between our two opens: try again
                    continue
                except OSError:  # a symbolic link (ELOOP) or unreadable
                    raise UserError(f'{self.path}: exists and is not a lock file of DAVSS; refusing to use it') \
                        from None
                created = False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._describe(self._read(fd))
                os.close(fd)
                raise UserError(f'{self.folder}: in use by another run ({holder}); wait for it to end or stop it') \
                    from None
            # The previous holder unlinks the file when it releases it: if that happened between our open and our
            # flock, we would hold a lock nobody else sees; start again on the current file.
            try:
                current = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        if not created and self._read(fd) is None:
            os.close(fd)  # someone's file that happens to have the lock file's name: not ours to take over
            raise UserError(f'{self.path}: exists and is not a lock file of DAVSS; refusing to use it')
        record = {'pid': os.getpid(), 'host': socket.gethostname(), 'command': list(sys.argv),
                  'started': time.strftime('%Y-%m-%d %H:%M:%S')}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
        self.fd = fd
        return self

    @staticmethod
    def _read(fd):
        try:
            record = json.loads(os.pread(fd, 65536, 0).decode() or 'null')
        except (ValueError, OSError):
            return None
        return record if isinstance(record, dict) and 'pid' in record else None

    @staticmethod
    def _describe(record):
        if not record:
            return 'holder unknown'
        command = ' '.join(record.get('command', []))
        return (f'pid {record.get("pid")} on {record.get("host")}, started {record.get("started")}'
                + (f': {command}' if command else ''))

    def release(self):
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)  # still ours: we hold the flock on this very file
        os.close(self.fd)  # releases the flock
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class OwnedFolder:
    """A folder a command writes in place (a run's experiment folder, a result folder): :meth:`claim` checks, creates,
    marks and locks it (``<folder>/.lock``) and removes the torn copies of ``own_files`` a killed run left;
    :meth:`release` unlocks it and removes it again if this run created it and wrote nothing into it."""

    def __init__(self, path, kind, what, own_files=()):
        self.path = os.path.normpath(path)
        self.kind = kind
        self.what = what
        self.own_files = tuple(own_files)
        self.lock = FolderLock(os.path.join(self.path, LOCK), self.path)
        self.created = False
        self._aside = []

    def claim(self):
        check_writable(self.path, self.kind, self.what)
        try:
            if not os.path.isdir(self.path):
                os.makedirs(self.path)
                self.created = True
            self.lock.acquire()
            check_writable(self.path, self.kind, self.what)  # again, under the lock
            if read_marker(self.path) != self.kind:
                write_marker(self.path, self.kind)
        except OSError as err:
            self.release()
            raise UserError(f'{self.what} {self.path}: cannot be created or written ({err.strerror or err})') \
                from None
        except BaseException:
            self.release()
            raise
        remove_torn_copies(self.path, self.own_files)
        return self

    def file(self, name):
        return os.path.join(self.path, name)

    def set_aside(self, names):
        """Rename ``names`` to ``<stem>.previous<ext>`` (a failed run leaves no earlier result under a current name)."""
        self._aside = []
        for name in names:
            stem, ext = os.path.splitext(name)
            previous = self.file(f'{stem}.previous{ext}')
            if os.path.isfile(self.file(name)):
                os.replace(self.file(name), previous)
            if os.path.isfile(previous):
                self._aside.append(previous)

    def drop_aside(self):
        for path in self._aside:
            if os.path.isfile(path):
                os.remove(path)
        self._aside = []

    def release(self):
        self.lock.release()
        if self.created and os.path.isdir(self.path) and set(os.listdir(self.path)) <= {MARKER}:
            shutil.rmtree(self.path)  # a failed run that wrote nothing leaves no trace
        self.created = False

    def __enter__(self):
        return self.claim()

    def __exit__(self, *exc):
        self.release()


class StagedFolder:
    """A folder that appears under its name only when complete: written as ``<path>.partial/`` (left for inspection
    by a failed run) and renamed.  ``overwrite`` replaces only a ``<path>`` marked ``kind``; ``apart_from``: paths
    it must neither lie in nor contain; the lock is ``<path>.lock`` (``locked=False``: the caller holds one)."""

    def __init__(self, path, kind, what, overwrite=False, apart_from=(), locked=True):
        self.path = os.path.normpath(path)
        self.partial = self.path + '.partial'
        self.old = self.path + '.old'
        self.kind = kind
        self.what = what
        self.overwrite = overwrite
        self.apart_from = [p for p in apart_from if p]
        self.lock = FolderLock(self.path + LOCK, self.path) if locked else None
        self.check()

    def check(self):
        """Every refusal, before anything is written (and again under the lock)."""
        for other in self.apart_from:
            source = os.path.realpath(other)
            for target in (self.path, self.partial):
                target = os.path.realpath(target)
                if os.path.commonpath([source, target]) in (source, target):
                    raise UserError(f'{self.what} {self.path}: must lie outside {other} and must not contain it')
        if os.path.lexists(self.path) and not self.overwrite:
            raise UserError(f'{self.what} {self.path}: already exists (pass --overwrite to replace an earlier '
                            f'{self.kind})')
        for folder in (self.path, self.partial, self.old):
            check_writable(folder, self.kind, self.what)

    def start(self):
        try:
            os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        except OSError as err:
            raise UserError(f'{self.what} {self.path}: cannot create its parent folder ({err.strerror or err})') \
                from None
        if self.lock is not None:
            self.lock.acquire()
        try:
            self.check()
            if os.path.isdir(self.partial):
                shutil.rmtree(self.partial)  # marked: an interrupted run of this kind
            os.makedirs(self.partial)
            write_marker(self.partial, self.kind)
        except OSError as err:
            self.release()
            raise UserError(f'{self.what} {self.partial}: cannot be written ({err.strerror or err})') from None
        except BaseException:
            self.release()
            raise
        return self

    def file(self, *parts):
        """A path inside the partial folder, its sub-folder created."""
        path = os.path.join(self.partial, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def commit(self):
        """Rename the complete partial folder to its name (an earlier one moved aside first: a crash leaves one)."""
        if os.path.isdir(self.old):
            shutil.rmtree(self.old)
        if os.path.isdir(self.path):
            os.replace(self.path, self.old)
        os.replace(self.partial, self.path)
        if os.path.isdir(self.old):
            shutil.rmtree(self.old)
        return self.path

    def release(self):
        if self.lock is not None:
            self.lock.release()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.release()
