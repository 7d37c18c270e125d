"""The resample2d CUDA build's needs beyond ``torch.utils.cpp_extension`` (``setup.py`` loads this file by path) and
the GPU code a built library holds."""
import glob
import os
import re
import shutil
import struct
import subprocess


def is_toolkit_root(path):
    return all(os.path.isfile(os.path.join(path, *part)) for part in (('bin', 'nvcc'), ('include', 'cuda_runtime.h')))


def find_cuda_home():
    """``CUDA_HOME`` / ``CUDA_PATH``; else the first toolkit of torch's guess (which may be the folder above an
    ``nvcc`` wrapper), ``/usr/local/cuda`` and the real folder of the ``nvcc`` on ``PATH``."""
    named = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    if named:
        return named
    from torch.utils.cpp_extension import CUDA_HOME
    nvcc = os.path.realpath(shutil.which('nvcc') or '/nonexistent')
    return next((root for root in (CUDA_HOME, '/usr/local/cuda', os.path.dirname(os.path.dirname(nvcc)))
                 if root and is_toolkit_root(root)), None)


def build_blocker():
    """Why the extension cannot be compiled here (one sentence), or None (``setup.py`` has checked torch imports)."""
    import torch
    if torch.version.cuda is None:
        return f'torch {torch.__version__} is a CPU-only build'
    home = find_cuda_home()
    if home is None:
        return 'no CUDA toolkit found (no CUDA_HOME or CUDA_PATH, no /usr/local/cuda, no nvcc on PATH)'
    try:
        found = subprocess.run([os.path.join(home, 'bin', 'nvcc'), '--version'], capture_output=True, text=True)
    except OSError:
        return f'no nvcc in {home}/bin (CUDA_HOME or CUDA_PATH should name a CUDA toolkit)'
    version = re.search(r'release (\d+\.\d+)', found.stdout)
    if version is None or version[1].split('.')[0] != torch.version.cuda.split('.')[0]:
        return (f'{home}/bin/nvcc is CUDA {version[1] if version else "(version unreadable)"} but torch is built for '
                f'CUDA {torch.version.cuda}')
    return None


def wheel_include_dirs():
    """Header folders of torch's ``nvidia-*`` wheels: a minimal toolkit lacks headers torch's own include."""
    import torch
    return sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), 'nvidia', '*', 'include')))


def arch_list_for_build(environ=None):
    """``TORCH_CUDA_ARCH_LIST`` as set; else None where GPUs are visible (torch builds for them); else every
    architecture torch supports, plus PTX of the newest."""
    chosen = (os.environ if environ is None else environ).get('TORCH_CUDA_ARCH_LIST', '').strip()
    import torch
    if chosen or torch.cuda.device_count():
        return chosen or None
    archs = sorted({(int(m[1]), int(m[2]), m[3]) for m in map(re.compile(r'sm_(\d+)(\d)([a-z]?)').fullmatch,
                                                              torch.cuda.get_arch_list()) if m})
    return ';'.join(f'{major}.{minor}{suffix}' for major, minor, suffix in archs) + '+PTX'


def fatbin_kernels(path):
    """The GPU code of a shared library, sorted ``(kind, sm)``, from the (never compressed) headers of its
    ``.nv_fatbin`` section: containers (u32 magic, u16, u16 header size, u64 size) of entries (u16 kind, u16,
    u32 header size, u64 size, ..., u32 sm at +28)."""
    with open(path, 'rb') as handle:
        data = handle.read()
    (shoff,), (size, count, names) = struct.unpack_from('<Q', data, 0x28), struct.unpack_from('<HHH', data, 0x3A)
    sections = [struct.unpack_from('<IIQQQQIIQQ', data, shoff + i * size) for i in range(count)]  # ELF64 headers
    strtab = sections[names][4]
    fatbin = next((data[s[4]:s[4] + s[5]] for s in sections
                   if data[strtab + s[0]:data.index(b'\0', strtab + s[0])] == b'.nv_fatbin'), b'')
    found, offset = set(), 0
    while offset + 16 <= len(fatbin):
        magic, _, header, payload = struct.unpack_from('<IHHQ', fatbin, offset)
        if magic != 0xBA55ED50:  # containers are padded to an alignment
            offset += 8
            continue
        entry, offset = offset + header, offset + header + payload
        while entry < offset:
            kind, _, entry_header, entry_size = struct.unpack_from('<HHIQ', fatbin, entry)
            if kind not in (1, 2):
                raise ValueError(f'{path}: unknown fatbin entry kind {kind} at offset {entry}')
            found.add(('ptx' if kind == 1 else 'sass', struct.unpack_from('<I', fatbin, entry + 28)[0]))
            entry += entry_header + entry_size
    return sorted(found)


def kernel_for(arch_sm, kernels):
    """The entry of ``kernels`` a GPU of compute capability ``arch_sm`` (e.g. 86) runs: SASS of its major and a minor
    not above, else PTX not above (JIT-compiled); None: "no kernel image"."""
    sass = [sm for kind, sm in kernels if kind == 'sass' and sm // 10 == arch_sm // 10 and sm <= arch_sm]
    ptx = [sm for kind, sm in kernels if kind == 'ptx' and sm <= arch_sm]
    return ('sass', max(sass)) if sass else ('ptx', max(ptx)) if ptx else None
