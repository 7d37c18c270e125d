"""Only the Cityscapes frames a run needs, read from the official zip archives (the sequence archive is ~324 GB).

For each labelled frame of a list: the frames ``t + offset`` of :func:`frame_offsets`, its ``_gtFine_labelIds.png``
and ``_gtFine_polygons.json`` (``csCreateTrainIdLabelImgs`` makes the lists' ``_labelTrainIds.png`` from it).
:func:`extract` writes each member under a temporary name, checked, then renamed; running again resumes."""
import os
import shutil
import zipfile
import zlib
from contextlib import ExitStack
from typing import NamedTuple

from tqdm import tqdm

from lib.dataset.build import PDA_CLIP_LENGTH
from lib.dataset.frame_list import read_list
from lib.utils.errors import UserError

SEQUENCE_ARCHIVE = 'leftImg8bit_sequence_trainvaltest.zip'
GTFINE_ARCHIVE = 'gtFine_trainvaltest.zip'
PURPOSES = ('pda', 'train')
LIST_LABEL_SUFFIX = '_gtFine_labelTrainIds.png'  # made by csCreateTrainIdLabelImgs, not in the archive
LABEL_FILES = ('_gtFine_labelIds.png', '_gtFine_polygons.json')
CHUNK = 1 << 20


def frame_offsets(purpose, max_gap):
    """Offsets from a labelled frame ``t`` to the frames ``purpose`` reads: the PDA clip ``t-9 .. t``, or every
    frame a training triplet ``[t-j, t-i, t]`` (``1 <= i < j <= max_gap``) can reach, ``t-max_gap .. t``."""
    return tuple(range(1 - PDA_CLIP_LENGTH if purpose == 'pda' else -max_gap, 1))


class Plan(NamedTuple):
    """``{archive key: sorted [member name, ...]}`` a purpose needs, and the list line that first asked for each."""
    members: dict
    source: dict


def _check_name(name, prefix, source):
    if not name.startswith(prefix + '/') or os.path.normpath(name) != name or os.path.isabs(name):
        raise UserError(f'{source}: "{name}" is not a member of the official layout ({prefix}/<split>/<city>/...)')
    return name


def plan(purpose, lists, max_gap):
    """Which members ``purpose`` needs: ``pda`` (the PDA clips of ``lists['val']``) or ``train`` (the triplets of
    ``lists['train']`` up to ``max_gap``, plus the val PDA clips that select ``best.pth``)."""
    if purpose not in PURPOSES:
        raise UserError(f'--for: expected one of {", ".join(PURPOSES)}, got "{purpose}"')
    wanted = [('val', 'pda')] if purpose == 'pda' else [('train', 'train'), ('val', 'pda')]
    source = {}
    for split, use in wanted:
        for entry in read_list(lists[split], 'cityscapes'):
            if not entry.label.endswith(LIST_LABEL_SUFFIX):
                raise UserError(f'{entry.source}: label "{entry.label}" does not end in {LIST_LABEL_SUFFIX}')
            stem = entry.label[:-len(LIST_LABEL_SUFFIX)]
            for offset in frame_offsets(use, max_gap):
                name = _check_name(entry.frame(offset), 'leftImg8bit_sequence', entry.source)
                source.setdefault(('sequence', name), entry.source)
            for suffix in LABEL_FILES:
                name = _check_name(stem + suffix, 'gtFine', entry.source)
                source.setdefault(('gtfine', name), entry.source)
    members = {key: sorted(name for archive, name in source if archive == key) for key in ('sequence', 'gtfine')}
    return Plan(members, {name: where for (_, name), where in source.items()})


def open_archive(path, expected_name, prefix):
    """``zipfile.ZipFile`` of ``path``, refused in one line unless it is a zip holding ``prefix/`` members."""
    if not os.path.isfile(path):
        raise UserError(f'{path}: archive not found (expected the official {expected_name})')
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(f'{path}: not a readable zip archive ({err}); expected the official {expected_name}') from None
    if not any(name.startswith(prefix + '/') for name in archive.namelist()):
        archive.close()
        raise UserError(f'{path}: holds no {prefix}/ member; expected the official {expected_name}')
    return archive


def _crc32(path):
    crc = 0
    with open(path, 'rb') as handle:
        while chunk := handle.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _copy_member(archive, info, destination, progress):
    """``info`` to a temporary name next to ``destination``, checked, then renamed; on any failure (a bad CRC,
    Ctrl-C, a full disk) the temporary file is removed and nothing is left under the member's name."""
    temporary = destination + '.partial'
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    try:
        with archive.open(info) as source, open(temporary, 'wb') as target:
            while chunk := source.read(CHUNK):  # the last read checks the CRC-32 (zipfile.BadZipFile)
                target.write(chunk)
                progress.update(len(chunk))
            target.flush()
            os.fsync(target.fileno())
        if os.path.getsize(temporary) != info.file_size:
            raise zipfile.BadZipFile(f'{os.path.getsize(temporary)} bytes written, {info.file_size} expected')
        os.replace(temporary, destination)
    except BaseException as err:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(err, (zipfile.BadZipFile, zlib.error, EOFError)):
            raise UserError(f'{archive.filename}: member {info.filename} is corrupt ({err}); '
                            f'nothing was written under its name') from None
        raise


class Summary(NamedTuple):
    extracted: int
    extracted_bytes: int
    skipped: int
    skipped_bytes: int


def extract(archives, the_plan, root, progress_bar=None):
    """Extract ``the_plan``'s members from ``archives`` (``{'sequence': path, 'gtfine': path}``) into ``root``;
    ``progress_bar``: ``callable(total_bytes) -> tqdm-like`` or None.  Returns a :class:`Summary`."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise UserError(f'--root {root}: exists and is not a folder')
    opened = {'sequence': (SEQUENCE_ARCHIVE, 'leftImg8bit_sequence'), 'gtfine': (GTFINE_ARCHIVE, 'gtFine')}
    with ExitStack() as stack:
        handles = {key: stack.enter_context(open_archive(archives[key], expected, prefix))
                   for key, (expected, prefix) in opened.items()}
        there, todo = [], []  # (archive, ZipInfo, destination) of the members already extracted, of the others
        for key, names in the_plan.members.items():
            index = {info.filename: info for info in handles[key].infolist()}
            missing = [name for name in names if name not in index]
            if missing:
                raise UserError(f'{archives[key]}: lacks {len(missing)} member(s) the lists need, e.g. {missing[0]} '
                                f'({the_plan.source[missing[0]]})')
            for name in names:
                destination = os.path.join(root, name)
                present = os.path.lexists(destination)
                if present and (not os.path.isfile(destination)
                                or os.path.getsize(destination) != index[name].file_size):
                    raise UserError(f'{destination}: exists and differs from {archives[key]}\'s member (size); '
                                    f'remove it to extract it again')
                (there if present else todo).append((handles[key], index[name], destination))
        total = sum(info.file_size for _, info, _ in there + todo)
        to_write = sum(info.file_size for _, info, _ in todo)
        existing = os.path.abspath(root)
        while not os.path.isdir(existing):  # the root is made by the first write
            existing = os.path.dirname(existing)
        free = shutil.disk_usage(existing).free
        if to_write > free:
            raise UserError(f'--root {root}: {to_write / 1e9:.1f} GB to extract, {free / 1e9:.1f} GB free')
        progress = progress_bar(total) if progress_bar is not None else tqdm(total=total, disable=True)
        done = 0
        try:
            for archive, info, destination in there:  # checked before any write
                if _crc32(destination) != info.CRC:
                    raise UserError(f'{destination}: exists and differs from {archive.filename}\'s member '
                                    f'(CRC-32); remove it to extract it again')
                progress.update(info.file_size)
            for archive, info, destination in todo:
                _copy_member(archive, info, destination, progress)
                done += 1
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f'{done} file(s) extracted into {root}, none partial; the same command '
                                    f'resumes') from None
        finally:
            progress.close()
        return Summary(done, to_write, len(there), total - to_write)
