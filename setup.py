"""Installs the ``lib`` package and, where possible, two compiled extensions: the resample2d CUDA extension
``lib.ops._resample2d_cuda`` and the fused label kernels of the fast CPU path ``lib.ops._upsample_argmax_cpu``.

    pip install --no-build-isolation -e . --config-settings editable_mode=compat

The extension is compiled when torch is a CUDA build and a toolkit whose nvcc has torch's CUDA major version is
found (``CUDA_HOME``, ``CUDA_PATH``, ``/usr/local/cuda`` or the nvcc on ``PATH``); otherwise the install goes on
without it and ``lib.ops.resample2d`` uses its PyTorch implementation. A compile error fails the install, so a
broken kernel is caught wherever a toolkit exists. Environment:

- ``DAVSS_BUILD_CUDA``: ``auto`` (default) builds when possible; ``1`` makes "cannot build" an error; ``0`` skips.
- ``DAVSS_BUILD_CPU``: the same for the CPU kernels (``auto`` builds when a C++ compiler is found; without them
  the fast path computes its labels with PyTorch operations, ``lib/engine/fast.py``).
- ``TORCH_CUDA_ARCH_LIST``: GPU architectures. Default: the visible GPUs' when there are some, else every
  architecture the installed torch supports (``torch.cuda.get_arch_list()``), plus PTX of the newest.
- ``MAX_JOBS``: parallel compile jobs (ninja).
"""
import importlib.util
import os
import shutil
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


def build_mode(variable):
    mode = os.environ.get(variable, 'auto').strip().lower()
    if mode not in ('auto', '0', '1'):
        raise SystemExit(f'setup.py: {variable} must be auto, 0 or 1, got {mode!r}')
    return mode


def use_ninja():
    try:
        import ninja  # the pip package; pip does not put the venv's bin/ on PATH, where torch looks for ninja
        os.environ['PATH'] = getattr(ninja, 'BIN_DIR', '') + os.pathsep + os.environ.get('PATH', '')
    except ImportError:
        pass


def cuda_extension():
    """The resample2d CUDA extension, or None when it cannot be built here."""
    mode = build_mode('DAVSS_BUILD_CUDA')
    if mode == '0':
        say('DAVSS_BUILD_CUDA=0: skipping the resample2d CUDA extension')
        return None
    toolkit = load_toolkit_helpers()
    blocker = toolkit.build_blocker()
    if blocker is not None:
        if mode == '1':
            raise SystemExit(f'setup.py: DAVSS_BUILD_CUDA=1 but the resample2d CUDA extension cannot be built: '
                             f'{blocker}')
        say(f'skipping the resample2d CUDA extension ({blocker}); lib.ops.resample2d will use PyTorch')
        return None

    # Before torch.utils.cpp_extension is imported: it reads CUDA_HOME once, at import.
    os.environ['CUDA_HOME'] = toolkit.find_cuda_home()
    # torch's own default is the visible GPUs only, and it fails outright when none is visible (a CI machine, a
    # login node); building for every architecture torch runs on makes the build work on any of them.
    os.environ['TORCH_CUDA_ARCH_LIST'] = toolkit.arch_list_for_build()
    from torch.utils.cpp_extension import CUDAExtension

    gap_fillers = [flag for path in toolkit.wheel_include_dirs() for flag in ('-isystem', path)]
    say(f'building the resample2d CUDA extension with {toolkit.nvcc_path()} '
        f'for TORCH_CUDA_ARCH_LIST={os.environ["TORCH_CUDA_ARCH_LIST"]}')
    return CUDAExtension(
        name='lib.ops._resample2d_cuda',
        sources=[os.path.join(CSRC, 'resample2d.cpp'), os.path.join(CSRC, 'resample2d_kernel.cu')],
        extra_compile_args={'cxx': ['-O3'] + gap_fillers, 'nvcc': ['-O3'] + gap_fillers},
    )


def cpu_extension():
    """The fused label kernels of the fast CPU path, or None when there is no C++ compiler."""
    mode = build_mode('DAVSS_BUILD_CPU')
    if mode == '0':
        say('DAVSS_BUILD_CPU=0: skipping the CPU label kernels')
        return None
    compiler = os.environ.get('CXX', 'c++')
    if shutil.which(compiler) is None:
        if mode == '1':
            raise SystemExit(f'setup.py: DAVSS_BUILD_CPU=1 but the C++ compiler "{compiler}" is not on PATH')
        say(f'skipping the CPU label kernels (no C++ compiler "{compiler}"); the fast path will use PyTorch')
        return None
    from torch.utils.cpp_extension import CppExtension

    say('building the CPU label kernels')
    # -ffp-contract=off: no fused multiply-adds, so every vector clone rounds as the reference formula does;
    # -fopenmp: at::parallel_for runs on torch's OpenMP threads.
    return CppExtension(
        name='lib.ops._upsample_argmax_cpu',
        sources=[os.path.join(CSRC, 'upsample_argmax_cpu.cpp')],
        extra_compile_args=['-O3', '-ffp-contract=off', '-fopenmp'],
        extra_link_args=['-fopenmp'],
    )


def extension_kwargs():
    """``ext_modules``/``cmdclass`` for ``setup()``: the extensions that can be built here."""
    extensions = [e for e in (cuda_extension(), cpu_extension()) if e is not None]
    if not extensions:
        return {}
    use_ninja()
    from torch.utils.cpp_extension import BuildExtension
    return {'ext_modules': extensions, 'cmdclass': {'build_ext': BuildExtension}}


setup(
    name='davss',
    version='0.1.0',
    description='Video semantic segmentation with distortion-aware feature correction (DAVSS), in PyTorch 2',
    packages=find_packages(include=['lib', 'lib.*']),
    python_requires='>=3.9',
    install_requires=requirements('requirements.txt'),
    extras_require={'dev': requirements('requirements-dev.txt')},
    license='MIT',
    **extension_kwargs(),
)
