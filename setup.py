"""Installs the ``lib`` package and, where possible, the resample2d CUDA extension ``lib.ops._resample2d_cuda``.

    pip install --no-build-isolation -e . --config-settings editable_mode=compat

The extension is compiled when torch is a CUDA build and a toolkit whose nvcc has torch's CUDA major version is
found (``CUDA_HOME``, ``CUDA_PATH``, ``/usr/local/cuda`` or the nvcc on ``PATH``); otherwise the install goes on
without it and ``lib.ops.resample2d`` uses its PyTorch implementation. A compile error fails the install, so a
broken kernel is caught wherever a toolkit exists. Environment:

- ``DAVSS_BUILD_CUDA``: ``auto`` (default) builds when possible; ``1`` makes "cannot build" an error; ``0`` skips.
- ``TORCH_CUDA_ARCH_LIST``: GPU architectures. Default: the visible GPUs' when there are some, else every
  architecture the installed torch supports (``torch.cuda.get_arch_list()``), plus PTX of the newest.
- ``MAX_JOBS``: parallel compile jobs (ninja).
"""
import importlib.util
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join('lib', 'ops', 'csrc')


def load_toolkit_helpers():
    # By path: importing the `lib` package itself would need it installed already.
    path = os.path.join(ROOT, 'lib', 'ops', 'cuda_toolkit.py')
    spec = importlib.util.spec_from_file_location('davss_cuda_toolkit', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def requirements(name):
    """The requirement lines of ``name`` (comments, blank lines and ``-r`` includes left out)."""
    with open(os.path.join(ROOT, name)) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def say(message):
    print(f'[davss setup] {message}', file=sys.stderr, flush=True)


def cuda_extension_kwargs():
    """``ext_modules``/``cmdclass`` for ``setup()``: the extension, or nothing when it cannot be built here."""
    mode = os.environ.get('DAVSS_BUILD_CUDA', 'auto').strip().lower()
    if mode not in ('auto', '0', '1'):
        raise SystemExit(f'setup.py: DAVSS_BUILD_CUDA must be auto, 0 or 1, got {mode!r}')
    if mode == '0':
        say('DAVSS_BUILD_CUDA=0: skipping the resample2d CUDA extension')
        return {}
    toolkit = load_toolkit_helpers()
    blocker = toolkit.build_blocker()
    if blocker is not None:
        if mode == '1':
            raise SystemExit(f'setup.py: DAVSS_BUILD_CUDA=1 but the resample2d CUDA extension cannot be built: '
                             f'{blocker}')
        say(f'skipping the resample2d CUDA extension ({blocker}); lib.ops.resample2d will use PyTorch')
        return {}

    # Before torch.utils.cpp_extension is imported: it reads CUDA_HOME once, at import.
    os.environ['CUDA_HOME'] = toolkit.find_cuda_home()
    # torch's own default is the visible GPUs only, and it fails outright when none is visible (a CI machine, a
    # login node); building for every architecture torch runs on makes the build work on any of them.
    os.environ['TORCH_CUDA_ARCH_LIST'] = toolkit.arch_list_for_build()
    try:
        import ninja  # the pip package; pip does not put the venv's bin/ on PATH, where torch looks for ninja
        os.environ['PATH'] = getattr(ninja, 'BIN_DIR', '') + os.pathsep + os.environ.get('PATH', '')
    except ImportError:
        pass
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    gap_fillers = [flag for path in toolkit.wheel_include_dirs() for flag in ('-isystem', path)]
    say(f'building the resample2d CUDA extension with {toolkit.nvcc_path()} '
        f'for TORCH_CUDA_ARCH_LIST={os.environ["TORCH_CUDA_ARCH_LIST"]}')
    extension = CUDAExtension(
        name='lib.ops._resample2d_cuda',
        sources=[os.path.join(CSRC, 'resample2d.cpp'), os.path.join(CSRC, 'resample2d_kernel.cu')],
        extra_compile_args={'cxx': ['-O3'] + gap_fillers, 'nvcc': ['-O3'] + gap_fillers},
    )
    return {'ext_modules': [extension], 'cmdclass': {'build_ext': BuildExtension}}


setup(
    name='davss',
    version='0.1.0',
    description='Video semantic segmentation with distortion-aware feature correction (DAVSS), in PyTorch 2',
    packages=find_packages(include=['lib', 'lib.*']),
    python_requires='>=3.9',
    install_requires=requirements('requirements.txt'),
    extras_require={'dev': requirements('requirements-dev.txt')},
    license='MIT',
    **cuda_extension_kwargs(),
)
