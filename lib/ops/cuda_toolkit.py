"""What a build of the resample2d CUDA extension needs beyond ``torch.utils.cpp_extension``.

torch guesses the toolkit (``CUDA_HOME``), picks architectures (``TORCH_CUDA_ARCH_LIST``, else the visible GPUs')
and fails a build whose nvcc has another CUDA major version. Added here: a toolkit where torch's guess is none (an
``nvcc`` wrapper script on ``PATH``), why a build cannot happen (so ``setup.py`` skips instead of failing), every
architecture torch supports where no GPU is visible (torch's default fails there), headers a minimal toolkit lacks,
and which GPU code a built library holds (without cuobjdump). ``setup.py`` loads this file by path (``lib`` is not
installed yet); ``tools/gpu_check.py`` and the tests import it, so "it should have been built here" means the same
everywhere. Only the standard library and torch.
"""
import glob
import os
import re
import shutil
import struct
import subprocess


def is_toolkit_root(path):
    """True when ``path`` holds ``bin/nvcc`` and the CUDA runtime headers."""
    return (os.path.isfile(os.path.join(path, 'bin', 'nvcc'))
            and os.path.isfile(os.path.join(path, 'include', 'cuda_runtime.h')))


def find_cuda_home():
    """Root of the CUDA toolkit to compile with, or None.

    ``CUDA_HOME`` or ``CUDA_PATH`` when set; else torch's guess when it is a toolkit; else ``/usr/local/cuda`` or
    the real folder of the ``nvcc`` on ``PATH``, whichever is a toolkit: that ``nvcc`` may be a wrapper script
    (``/usr/local/bin/nvcc``) whose parent folder torch takes for the toolkit.
    """
    named = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    if named:
        return named
    from torch.utils.cpp_extension import CUDA_HOME as guess  # made once, when torch.utils.cpp_extension was imported
    if guess and is_toolkit_root(guess):
        return guess
    nvcc = os.path.realpath(shutil.which('nvcc') or '/nonexistent')
    return next((root for root in ('/usr/local/cuda', os.path.dirname(os.path.dirname(nvcc)))
                 if is_toolkit_root(root)), None)


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
    nvcc = os.path.join(home, 'bin', 'nvcc')
    if not os.path.isfile(nvcc):
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


def arch_to_list_entry(arch):
    """``'sm_86'`` -> ``'8.6'``, ``'sm_90a'`` -> ``'9.0a'`` (``TORCH_CUDA_ARCH_LIST`` spelling); None for others."""
    match = re.fullmatch(r'sm_(\d+)(\d)([a-z]?)', arch)
    return f'{match.group(1)}.{match.group(2)}{match.group(3)}' if match else None


def _arch_key(entry):
    major, minor = entry.rstrip('abcdefghijklmnopqrstuvwxyz').split('.')
    return int(major), int(minor), entry


def default_arch_list():
    """``TORCH_CUDA_ARCH_LIST`` to build for when the user gives none.

    With visible GPUs, torch's own default: their compute capabilities, capped at the newest architecture torch
    supports. Without (a CI machine, a login node), where torch's default fails: every ``sm_*`` architecture of
    ``torch.cuda.get_arch_list()``, so the extension runs on every GPU torch runs on. PTX of the newest entry
    either way, for GPUs newer than the toolkit.
    """
    import torch
    supported = sorted({entry for entry in map(arch_to_list_entry, torch.cuda.get_arch_list()) if entry}, key=_arch_key)
    if not supported:
        raise RuntimeError(f'torch {torch.__version__} lists no sm_* architecture ({torch.cuda.get_arch_list()})')
    newest = _arch_key(supported[-1])[:2]
    visible = {'%d.%d' % min(tuple(torch.cuda.get_device_capability(i)), newest)
               for i in range(torch.cuda.device_count())}
    chosen = sorted(visible, key=_arch_key) or supported
    return ';'.join(chosen) + '+PTX'


def arch_list_for_build(environ=None):
    """``TORCH_CUDA_ARCH_LIST`` from the environment when set (the user's choice wins), else
    :func:`default_arch_list`."""
    environ = os.environ if environ is None else environ
    return environ.get('TORCH_CUDA_ARCH_LIST', '').strip() or default_arch_list()


# ---- reading which GPU code a built library holds, without cuobjdump ---------------------------------------------
# A CUDA fat binary (ELF section .nv_fatbin) is a sequence of containers, each a 16-byte header (magic 0xBA55ED50,
# u16 version, u16 header size, u64 payload size) followed by entries, each starting with a header: u16 kind
# (1 = PTX, 2 = ELF/SASS), u16, u32 header size, u64 payload size, u32 compressed size, u32, u16 minor, u16 major,
# u32 architecture (sm number, e.g. 86). The payload may be compressed; the headers never are.
FATBIN_MAGIC = 0xBA55ED50
FATBIN_KINDS = {1: 'ptx', 2: 'sass'}


def _elf_section(data, name):
    """Bytes of the section called ``name`` of a 64-bit little-endian ELF file, or None."""
    if data[:4] != b'\x7fELF' or data[4] != 2 or data[5] != 1:
        raise ValueError('not a 64-bit little-endian ELF file')
    shoff, = struct.unpack_from('<Q', data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3A)
    sections = [struct.unpack_from('<IIQQQQIIQQ', data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = sections[shstrndx][4]
    for section in sections:
        start = names_offset + section[0]
        if data[start:data.index(b'\0', start)].decode() == name:
            return data[section[4]:section[4] + section[5]]
    return None


def fatbin_kernels(path):
    """The GPU code in a shared library: a sorted list of ``(kind, sm)``, kind ``'sass'`` or ``'ptx'``, e.g.
    ``[('ptx', 120), ('sass', 75), ...]``; empty when it holds none."""
    with open(path, 'rb') as handle:
        data = handle.read()
    fatbin = _elf_section(data, '.nv_fatbin')
    found = set()
    offset = 0
    while fatbin is not None and offset + 16 <= len(fatbin):
        magic, _, header_size, payload_size = struct.unpack_from('<IHHQ', fatbin, offset)
        if magic != FATBIN_MAGIC:  # containers are padded to an alignment
            offset += 8
            continue
        entry, end = offset + header_size, offset + header_size + payload_size
        while entry < end:
            kind, _, entry_header, entry_size = struct.unpack_from('<HHIQ', fatbin, entry)
            arch, = struct.unpack_from('<I', fatbin, entry + 28)
            if kind not in FATBIN_KINDS:
                raise ValueError(f'{path}: unknown fatbin entry kind {kind} at offset {entry}')
            found.add((FATBIN_KINDS[kind], arch))
            entry += entry_header + entry_size
        offset = end
    return sorted(found)


def kernel_for(arch_sm, kernels):
    """The entry of ``kernels`` (from :func:`fatbin_kernels`) that a GPU of compute capability ``arch_sm`` (e.g.
    86) runs: SASS of the same major version and a minor version not above it (the newest such), else PTX of a
    version not above it (compiled by the driver on first use); None when there is none ("no kernel image")."""
    sass = [sm for kind, sm in kernels if kind == 'sass' and sm // 10 == arch_sm // 10 and sm <= arch_sm]
    if sass:
        return 'sass', max(sass)
    ptx = [sm for kind, sm in kernels if kind == 'ptx' and sm <= arch_sm]
    return ('ptx', max(ptx)) if ptx else None
