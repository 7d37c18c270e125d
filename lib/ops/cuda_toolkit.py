"""Where the resample2d CUDA extension can be compiled.

Shared by ``setup.py`` (which loads this file by path, before ``lib`` is installed) and the tests, so that "the
extension should have been built here" means the same thing in both. Only the standard library and torch.
"""
import glob
import os
import re
import shutil
import subprocess


def is_toolkit_root(path):
    """True when ``path`` holds ``bin/nvcc`` and the CUDA runtime headers."""
    return (os.path.isfile(os.path.join(path, 'bin', 'nvcc'))
            and os.path.isfile(os.path.join(path, 'include', 'cuda_runtime.h')))


def find_cuda_home():
    """Root of the CUDA toolkit to compile with, or None.

    ``CUDA_HOME`` or ``CUDA_PATH`` when set; else ``/usr/local/cuda``; else the toolkit of the ``nvcc`` on
    ``PATH``. The order differs from torch's own guess (``PATH`` first, then ``/usr/local/cuda``) on purpose: an
    ``nvcc`` on ``PATH`` may be a wrapper script (``/usr/local/bin/nvcc``) whose parent folder is no toolkit.
    """
    for variable in ('CUDA_HOME', 'CUDA_PATH'):
        if os.environ.get(variable):
            return os.environ[variable]
    if is_toolkit_root('/usr/local/cuda'):
        return '/usr/local/cuda'
    on_path = shutil.which('nvcc')
    if on_path is not None:
        root = os.path.dirname(os.path.dirname(os.path.realpath(on_path)))
        if is_toolkit_root(root):
            return root
    return None


def nvcc_path():
    """Path of ``nvcc`` in :func:`find_cuda_home`, or None."""
    home = find_cuda_home()
    if home is None:
        return None
    path = os.path.join(home, 'bin', 'nvcc')
    return path if os.path.isfile(path) else None


def nvcc_version(nvcc):
    """``(major, minor)`` CUDA release of an ``nvcc`` binary, or None when it cannot be run or parsed."""
    try:
        text = subprocess.run([nvcc, '--version'], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r'release (\d+)\.(\d+)', text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def build_blocker():
    """Why the extension cannot be compiled in this environment (one sentence), or None when it can."""
    try:
        import torch
    except ImportError:
        return 'torch is not importable at build time (install with `pip install --no-build-isolation`)'
    if torch.version.cuda is None:
        return f'torch {torch.__version__} is a CPU-only build'
    home = find_cuda_home()
    if home is None:
        return 'no CUDA toolkit found (no CUDA_HOME or CUDA_PATH, no /usr/local/cuda, no nvcc on PATH)'
    nvcc = nvcc_path()
    if nvcc is None:
        return f'no nvcc in {home}/bin (CUDA_HOME or CUDA_PATH should name a CUDA toolkit)'
    version = nvcc_version(nvcc)
    if version is None:
        return f'cannot read the CUDA version of {nvcc}'
    torch_major = int(torch.version.cuda.split('.')[0])
    if version[0] != torch_major:
        return f'{nvcc} is CUDA {version[0]}.{version[1]} but torch is built for CUDA {torch.version.cuda}'
    return None


def wheel_include_dirs():
    """Header folders of the ``nvidia-*`` pip wheels that CUDA builds of torch depend on.

    A minimal toolkit (nvcc and the runtime only) lacks some headers torch's own headers may pull in (cuBLAS,
    cuSPARSE...); the wheels ship them. They are added after the toolkit's own folder, so they only fill gaps.
    """
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for root in getattr(nvidia, '__path__', []):
        found.extend(sorted(path for path in glob.glob(os.path.join(root, '*', 'include')) if os.path.isdir(path)))
    return found
