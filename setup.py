"""The two optional compiled extensions of ``lib`` (metadata: pyproject.toml), the resample2d CUDA extension
``lib.ops._resample2d_cuda`` and the fast path's CPU label kernels ``lib.ops._upsample_argmax_cpu``, compiled against
the installed torch by ``pip install --no-build-isolation -e .`` where a toolkit / C++ compiler exists; else ``lib``
uses its PyTorch paths. ``DAVSS_BUILD_CUDA`` / ``DAVSS_BUILD_CPU``: ``auto`` (default), ``1`` (cannot build: an
error), ``0`` (skip); the other variables: docs/resample2d.md.
"""
import os
import runpy
import shutil
import sys
from types import SimpleNamespace

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join('lib', 'ops', 'csrc')
# Overrides Python's own -g: debug info over torch's headers multiplies compile time and object size.
NO_DEBUG_INFO = '-g0'


def load_toolkit_helpers():
    # By path: importing the `lib` package itself would need it installed already.
    return SimpleNamespace(**runpy.run_path(os.path.join(ROOT, 'lib', 'ops', 'cuda_toolkit.py')))


def say(message):
    print(f'[davss setup] {message}', file=sys.stderr, flush=True)


def build_mode(variable):
    mode = os.environ.get(variable, 'auto').strip().lower()
    if mode not in ('auto', '0', '1'):
        raise SystemExit(f'setup.py: {variable} must be auto, 0 or 1, got {mode!r}')
    return mode


def skip(variable, mode, what, why, fallback):
    """None, after saying why ``what`` is not built; SystemExit where ``variable``=1 demands it."""
    if mode == '1':
        raise SystemExit(f'setup.py: {variable}=1 but {what} cannot be built: {why}')
    say(f'skipping {what} ({why}); {fallback}')


def cuda_extension(mode):
    """The resample2d CUDA extension, or None when it cannot be built here."""
    toolkit = load_toolkit_helpers()
    blocker = 'DAVSS_BUILD_CUDA=0' if mode == '0' else toolkit.build_blocker()
    if blocker is not None:
        return skip('DAVSS_BUILD_CUDA', mode, 'the resample2d CUDA extension', blocker,
                    'lib.ops.resample2d will use PyTorch')

    from torch.utils import cpp_extension
    # torch read CUDA_HOME once (and may have guessed an nvcc wrapper's folder): the toolkit found replaces it.
    os.environ['CUDA_HOME'] = cpp_extension.CUDA_HOME = toolkit.find_cuda_home()
    # torch's own default (the visible GPUs) fails where none is visible.
    arch_list = toolkit.arch_list_for_build()
    if arch_list:
        os.environ['TORCH_CUDA_ARCH_LIST'] = arch_list
    gap_fillers = [flag for path in toolkit.wheel_include_dirs() for flag in ('-isystem', path)]
    say(f'building the resample2d CUDA extension with the toolkit in {cpp_extension.CUDA_HOME} '
        f'for {"TORCH_CUDA_ARCH_LIST=" + arch_list if arch_list else "the visible GPUs"}')
    return cpp_extension.CUDAExtension(
        name='lib.ops._resample2d_cuda',
        sources=[os.path.join(CSRC, 'resample2d.cpp'), os.path.join(CSRC, 'resample2d_kernel.cu')],
        extra_compile_args={'cxx': ['-O3', NO_DEBUG_INFO] + gap_fillers, 'nvcc': ['-O3'] + gap_fillers},
    )


def cpu_extension(mode):
    """The fused label kernels of the fast CPU path, or None when there is no C++ compiler."""
    compiler = os.environ.get('CXX', 'c++')
    if mode == '0' or shutil.which(compiler) is None:
        why = 'DAVSS_BUILD_CPU=0' if mode == '0' else f'the C++ compiler "{compiler}" is not on PATH'
        return skip('DAVSS_BUILD_CPU', mode, 'the CPU label kernels', why, 'the fast path will use PyTorch')
    from torch.utils.cpp_extension import CppExtension

    say('building the CPU label kernels')
    # -ffp-contract=off: no fused multiply-adds, so every vector clone rounds as the reference formula does;
    # -fopenmp: at::parallel_for runs on torch's OpenMP threads.
    return CppExtension(
        name='lib.ops._upsample_argmax_cpu',
        sources=[os.path.join(CSRC, 'upsample_argmax_cpu.cpp')],
        extra_compile_args=['-O3', '-ffp-contract=off', '-fopenmp', NO_DEBUG_INFO],
        extra_link_args=['-fopenmp'],
    )


def torch_importable():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def extension_kwargs():
    """``ext_modules``/``cmdclass`` for ``setup()``: the extensions that can be built here."""
    modes = {variable: build_mode(variable) for variable in ('DAVSS_BUILD_CUDA', 'DAVSS_BUILD_CPU')}
    if not torch_importable():
        required = [variable for variable, mode in modes.items() if mode == '1']
        if required:
            raise SystemExit(f'setup.py: {required[0]}=1 but torch is not importable at build time; install torch, '
                             f'then `pip install --no-build-isolation -e .`')
        if set(modes.values()) != {'0'}:
            say('torch is not importable at build time (pip\'s build isolation): the compiled extensions are not '
                'built and lib uses its PyTorch implementations; to build them against the installed torch: '
                '`pip install --no-build-isolation -e .`')
        return {}
    extensions = [e for e in (cuda_extension(modes['DAVSS_BUILD_CUDA']), cpu_extension(modes['DAVSS_BUILD_CPU']))
                  if e is not None]
    if not extensions:
        return {}
    try:
        import ninja  # the pip package; pip does not put the venv's bin/ on PATH, where torch looks for ninja
        os.environ['PATH'] = getattr(ninja, 'BIN_DIR', '') + os.pathsep + os.environ.get('PATH', '')
    except ImportError:
        pass
    from torch.utils.cpp_extension import BuildExtension
    return {'ext_modules': extensions, 'cmdclass': {'build_ext': BuildExtension}}


setup(**extension_kwargs())
