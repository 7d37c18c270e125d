"""The README's table of environment variables names every variable the scripts, configs, tools and the Makefile
read."""
import glob
import os
import re

from helpers import REPO_ROOT

# Read but not the user's to set: torchrun's own (LOCAL_RANK, WORLD_SIZE), set by the code itself
# (CUBLAS_WORKSPACE_CONFIG), the shell's PATH, and the placeholders of comments (${NAME}, ${VAR}).
NOT_USER_SETTINGS = {'LOCAL_RANK', 'WORLD_SIZE', 'CUBLAS_WORKSPACE_CONFIG', 'PATH', 'NAME', 'VAR'}
# Makefile variables that are its own (not read from the user).
MAKE_OWN = {'BIN', 'DIGITS', 'MAKECMDGOALS'}


def read(pattern):
    for path in glob.glob(os.path.join(REPO_ROOT, pattern), recursive=True):
        with open(path) as f:
            yield f.read()


def variables_read():
    found = set()
    for text in read('exp/**/*.sh'):
        found |= set(re.findall(r'\$\{?([A-Z][A-Z0-9_]+)', text))
    for text in read('tools/*.sh'):
        found |= set(re.findall(r'\$\{!?([A-Z][A-Z0-9_]+)', text)) | set(re.findall(r'\$([A-Z][A-Z0-9_]+)', text))
    for text in [*read('exp/**/*.yaml'), *read('lib/utils/config.py')]:
        found |= set(re.findall(r'\$\{([A-Z][A-Z0-9_]+)', text))
    for text in [*read('lib/**/*.py'), *read('tools/*.py'), *read('setup.py')]:
        found |= set(re.findall(r"environ(?:\.get)?\(\s*'([A-Z][A-Z0-9_]+)'", text))
        found |= set(re.findall(r"ENV_VAR = '([A-Z][A-Z0-9_]+)'", text))
        found |= set(re.findall(r"'(DAVSS_[A-Z0-9_]+)'", text))
    for text in read('Makefile'):
        found |= set(re.findall(r'\$\((?:value )?([A-Z][A-Z0-9_]+)\)', text)) - MAKE_OWN
    return found - NOT_USER_SETTINGS


def test_every_variable_is_in_the_readme_table():
    with open(os.path.join(REPO_ROOT, 'README.md')) as f:
        readme = f.read()
    section = readme[readme.index('## Environment variables'):]
    table = section[:section.index('\n## ')]
    listed = set(re.findall(r'`([A-Z][A-Z0-9_]+)`', table))
    found = variables_read()
    assert {'SAVE_ROOT', 'CITYSCAPES_ROOT', 'GPUS', 'DAVSS_RESAMPLE2D', 'THREADS'} <= found  # the search works
    assert found - listed == set()
