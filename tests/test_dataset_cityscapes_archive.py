"""tools/extract_cityscapes.py and lib.dataset.cityscapes_archive on small archives in the official layout: only the
members a purpose needs, resumable, CRC-checked, nothing partial under a member's name, bad input in one line."""
import os
import struct
import zipfile

import cv2
import numpy as np
import pytest
from helpers import load_tool

from lib.dataset import cityscapes_archive
from lib.utils import cli
from lib.utils.errors import UserError

tool = load_tool('extract_cityscapes')
# (split, city, sequence, labelled frame): val has a snippet labelled at another frame than 19, as the real val does.
LABELLED = {'train': [('train', 'aachen', 0, 19), ('train', 'bochum', 3, 19)],
            'val': [('val', 'frankfurt', 0, 19), ('val', 'munster', 7, 25)]}
OTHER_SNIPPETS = [('test', 'berlin', 1, 19)]  # in the archives, in no list
FRAMES_PER_SNIPPET = 30
GT_SUFFIXES = ('_gtFine_color.png', '_gtFine_instanceIds.png', '_gtFine_labelIds.png', '_gtFine_polygons.json')


def frame_name(split, city, seq, frame):
    return f'leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png'


def gt_stem(split, city, seq, frame):
    return f'gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}'


def png(seed):
    image = np.random.default_rng(seed).integers(0, 256, (4, 8, 3), dtype=np.uint8)
    return cv2.imencode('.png', image)[1].tobytes()


@pytest.fixture
def dataset(tmp_path):
    """The two official archives (every frame of every snippet; all four gtFine files of each labelled frame, plus
    the archives' top-level text files) and the two lists, in ``tmp_path``."""
    archives, lists = tmp_path / 'downloads', tmp_path / 'lists'
    archives.mkdir()
    lists.mkdir()
    contents = {}
    snippets = [s for split in LABELLED.values() for s in split] + OTHER_SNIPPETS
    with zipfile.ZipFile(archives / cityscapes_archive.SEQUENCE_ARCHIVE, 'w', zipfile.ZIP_STORED) as archive:
        archive.writestr('license.txt', 'licence')
        for number, (split, city, seq, _) in enumerate(snippets):
            for frame in range(FRAMES_PER_SNIPPET):
                name = frame_name(split, city, seq, frame)
                contents[name] = png(1000 * number + frame)
                archive.writestr(name, contents[name])
    with zipfile.ZipFile(archives / cityscapes_archive.GTFINE_ARCHIVE, 'w', zipfile.ZIP_DEFLATED) as archive:
        archive.writestr('README', 'readme')
        for number, (split, city, seq, frame) in enumerate(snippets):
            for suffix in GT_SUFFIXES:
                name = gt_stem(split, city, seq, frame) + suffix
                contents[name] = b'{"objects": []}' if suffix.endswith('.json') else png(10 ** 6 + number)
                archive.writestr(name, contents[name])
    for split, entries in LABELLED.items():
        (lists / f'{split}.txt').write_text(''.join(
            f'{frame_name(*entry)} {gt_stem(*entry)}_gtFine_labelTrainIds.png\n' for entry in entries))
    return {'archives': archives, 'lists': lists, 'root': tmp_path / 'cityscapes', 'contents': contents}


def argv(dataset, purpose, *extra):
    return ['--for', purpose, '--archives', str(dataset['archives']), '--root', str(dataset['root']),
            '--train-list', str(dataset['lists'] / 'train.txt'), '--val-list', str(dataset['lists'] / 'val.txt'),
            *extra]


def run(argv_, capsys):
    """The tool as its command line ends (``cli.run``): (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as ended:
        cli.run(tool.main, tool.parse_args(argv_))
    out, err = capsys.readouterr()
    return ended.value.code, out, err


def expected_members(purpose):
    """Independently of the module: frames t-9..t (pda, val list) or t-10..t (train list, data.max_gap = 10)."""
    uses = [('val', range(-9, 1))] + ([('train', range(-10, 1))] if purpose == 'train' else [])
    names = set()
    for split, offsets in uses:
        for entry in LABELLED[split]:
            names |= {frame_name(*entry[:3], entry[3] + offset) for offset in offsets}
            names |= {gt_stem(*entry) + suffix for suffix in ('_gtFine_labelIds.png', '_gtFine_polygons.json')}
    return names


def files_under(root):
    return {os.path.relpath(os.path.join(folder, name), root) for folder, _, names in os.walk(root) for name in names}


@pytest.mark.parametrize('purpose', ['pda', 'train'])
def test_extracts_only_the_members_the_purpose_needs(dataset, purpose, capsys):
    status, out, _ = run(argv(dataset, purpose), capsys)
    wanted = expected_members(purpose)
    assert status == 0 and files_under(dataset['root']) == wanted
    for name in wanted:
        assert (dataset['root'] / name).read_bytes() == dataset['contents'][name]
    size = sum(len(dataset['contents'][name]) for name in wanted)
    assert f'{len(wanted)} file(s) extracted ({size / 1e9:.2f} GB), 0 already complete' in out


def test_a_second_run_skips_everything(dataset, capsys):
    assert run(argv(dataset, 'pda'), capsys)[0] == 0
    written = {name: os.stat(dataset['root'] / name).st_mtime_ns for name in files_under(dataset['root'])}
    status, out, _ = run(argv(dataset, 'pda'), capsys)
    assert status == 0 and f'0 file(s) extracted (0.00 GB), {len(written)} already complete' in out
    assert {name: os.stat(dataset['root'] / name).st_mtime_ns for name in files_under(dataset['root'])} == written


def corrupt(zip_path, name):
    """Flip one byte of the stored data of ``name`` (its CRC-32 in the archive stays the original's)."""
    with zipfile.ZipFile(zip_path) as archive:
        offset = archive.getinfo(name).header_offset
    with open(zip_path, 'r+b') as handle:
        handle.seek(offset)
        name_length, extra_length = struct.unpack('<HH', handle.read(30)[26:30])
        handle.seek(offset + 30 + name_length + extra_length + 20)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_a_corrupt_member_is_reported_in_one_line_and_not_left(dataset, capsys):
    bad = frame_name('val', 'frankfurt', 0, 15)
    corrupt(dataset['archives'] / cityscapes_archive.SEQUENCE_ARCHIVE, bad)
    status, _, err = run(argv(dataset, 'pda'), capsys)
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert status == 1 and len(errors) == 1 and 'is corrupt' in errors[0] and bad in errors[0], err
    assert 'Bad CRC-32' in errors[0]
    assert not (dataset['root'] / bad).exists()
    present = files_under(dataset['root'])
    assert not [name for name in present if name.endswith('.partial')]
    assert all((dataset['root'] / name).read_bytes() == dataset['contents'][name] for name in present)


class Interrupting:
    """A progress bar that presses Ctrl-C once ``limit`` bytes were reported, in the middle of a member's copy,
    after noting what the root then holds."""

    def __init__(self, limit, root):
        self.limit, self.seen, self.root, self.snapshot = limit, 0, root, None

    def update(self, n):
        self.seen += n
        if self.seen > self.limit:
            self.snapshot = {name: (self.root / name).read_bytes() for name in files_under(self.root)}
            raise KeyboardInterrupt

    def close(self):
        pass


def test_an_interrupted_run_leaves_only_complete_files_and_resumes(dataset, capsys, monkeypatch):
    monkeypatch.setattr(cityscapes_archive, 'CHUNK', 16)  # members copied in pieces: the interruption falls inside one
    archives = {'sequence': str(dataset['archives'] / cityscapes_archive.SEQUENCE_ARCHIVE),
                'gtfine': str(dataset['archives'] / cityscapes_archive.GTFINE_ARCHIVE)}
    plan = cityscapes_archive.plan('train', {split: str(dataset['lists'] / f'{split}.txt') for split in LABELLED},
                                   max_gap=10)
    wanted = expected_members('train')
    half = sum(len(dataset['contents'][name]) for name in wanted) // 2
    bar = Interrupting(half, dataset['root'])
    with pytest.raises(KeyboardInterrupt, match='the same command resumes'):
        cityscapes_archive.extract(archives, plan, str(dataset['root']), progress_bar=lambda total: bar)
    # While a member was being copied, it was under a temporary name; every file under a member's name was whole.
    writing = [name for name in bar.snapshot if name.endswith('.partial')]
    assert len(writing) == 1 and len(bar.snapshot[writing[0]]) < len(dataset['contents'][writing[0][:-8]])
    assert all(data == dataset['contents'][name] for name, data in bar.snapshot.items() if name not in writing)
    done = files_under(dataset['root'])
    assert 0 < len(done) < len(wanted) and done < wanted  # no .partial file either
    assert all((dataset['root'] / name).read_bytes() == dataset['contents'][name] for name in done)

    status, out, _ = run(argv(dataset, 'train'), capsys)
    assert status == 0 and f'{len(wanted) - len(done)} file(s) extracted' in out
    assert f'{len(done)} already complete' in out and files_under(dataset['root']) == wanted


def bad_input(case, dataset, tmp_path):
    """Each bad input: (argv, what the one line must say)."""
    sequence_zip = dataset['archives'] / cityscapes_archive.SEQUENCE_ARCHIVE
    gtfine_zip = dataset['archives'] / cityscapes_archive.GTFINE_ARCHIVE
    if case == 'missing archive':
        return argv(dataset, 'pda', '--gtfine-zip', str(tmp_path / 'nowhere.zip')), 'nowhere.zip: archive not found'
    if case == 'not a zip':
        (tmp_path / 'fake.zip').write_text('not a zip')
        return argv(dataset, 'pda', '--sequence-zip', str(tmp_path / 'fake.zip')), 'fake.zip: not a readable zip'
    if case == 'archive without the expected members':
        return (argv(dataset, 'pda', '--sequence-zip', str(gtfine_zip)),
                'holds no leftImg8bit_sequence/ member')
    if case == 'list naming frames absent from the archive':
        extra = ('val', 'lindau', 4, 19)
        with open(dataset['lists'] / 'val.txt', 'a') as handle:
            handle.write(f'{frame_name(*extra)} {gt_stem(*extra)}_gtFine_labelTrainIds.png\n')
        return argv(dataset, 'pda'), f'{sequence_zip.name}: lacks 10 member(s) the lists need, e.g. ' \
                                     f'{frame_name("val", "lindau", 4, 10)} ({dataset["lists"] / "val.txt"}:3)'
    if case == 'list line that does not parse':
        (dataset['lists'] / 'val.txt').write_text('just-one-field\n')
        return argv(dataset, 'pda'), 'val.txt:1: expected "<frame image> <label image>"'
    if case == 'list escaping the layout':
        (dataset['lists'] / 'val.txt').write_text(
            'leftImg8bit_sequence/../../x_000000_000019_leftImg8bit.png gtFine/x_gtFine_labelTrainIds.png\n')
        return argv(dataset, 'pda'), 'is not a member of the official layout'
    if case == 'root is a file':
        dataset['root'].write_text('mine')
        return argv(dataset, 'pda'), 'exists and is not a folder'
    if case == 'a different file under a member name':
        name = frame_name('val', 'frankfurt', 0, 12)
        (dataset['root'] / name).parent.mkdir(parents=True)
        (dataset['root'] / name).write_bytes(b'x' * len(dataset['contents'][name]))  # same size, other bytes
        return argv(dataset, 'pda'), f'{name}: exists and differs from'
    raise AssertionError(case)


BAD_INPUTS = ['missing archive', 'not a zip', 'archive without the expected members',
              'list naming frames absent from the archive', 'list line that does not parse', 'list escaping the layout',
              'root is a file', 'a different file under a member name']


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_1(case, dataset, tmp_path, capsys):
    argv_, message = bad_input(case, dataset, tmp_path)
    before = files_under(dataset['root']) if dataset['root'].is_dir() else None
    status, _, err = run(argv_, capsys)
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert status == 1 and len(errors) == 1 and message in errors[0], err
    assert (files_under(dataset['root']) if dataset['root'].is_dir() else None) == before  # nothing written
    if case == 'a different file under a member name':  # the user's file is untouched
        name = frame_name('val', 'frankfurt', 0, 12)
        assert (dataset['root'] / name).read_bytes() == b'x' * len(dataset['contents'][name])
    if case == 'root is a file':
        assert dataset['root'].read_text() == 'mine'


def test_plan_reads_the_offsets_of_the_configs():
    from lib.dataset.build import PDA_CLIP_LENGTH
    from lib.utils.config import DEFAULTS
    assert cityscapes_archive.frame_offsets('pda', 10) == tuple(range(1 - PDA_CLIP_LENGTH, 1))
    assert cityscapes_archive.frame_offsets('train', DEFAULTS['data']['max_gap']) == tuple(range(-10, 1))
    with pytest.raises(UserError, match='--for: expected one of pda, train'):
        cityscapes_archive.plan('test', {}, 10)
