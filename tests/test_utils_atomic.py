import os

import pytest

from lib.utils.atomic import atomic_path, write_json, write_text


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'sub' / 'out.json'  # the folder is created
    write_json(str(path), {'a': 1})
    write_text(str(path), 'second\n')
    assert path.read_text() == 'second\n'
    assert os.listdir(path.parent) == ['out.json']


def test_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / 'result.png'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp:
            assert tmp.endswith('.png') and os.path.dirname(tmp) == str(tmp_path)  # writers pick the format by it
            with open(tmp, 'w') as f:
                f.write('half')
            raise RuntimeError('interrupted')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['result.png']
