"""Measurement helpers of every benchmark: timing, peak memory, FLOPs, the machine's compute peak and its load."""
import ctypes
import ctypes.util
import math
import os
import platform
import re
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

FLOP_CONVENTION = ('2 FLOPs per multiply-add of convolutions and matrix products (torch.utils.flop_counter), '
                   '8 FLOPs per output value of a bilinear sample (warp, resize); elementwise ops and argmax not '
                   'counted')
BILINEAR_FLOPS_PER_VALUE = 8


def synchronize(device):
    """Wait for the device's queued work (a no-op on the CPU), so that a timer measures the work itself."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def _bilinear_ops():
    """The bilinear-sampling ops, every overload (inference_mode shows the composite ones), resample2d's if built."""
    packets = [torch.ops.aten.grid_sampler, torch.ops.aten.grid_sampler_2d, torch.ops.aten.upsample_bilinear2d]
    if hasattr(torch.ops.davss, 'resample2d_forward'):
        packets.append(torch.ops.davss.resample2d_forward)
    return [op for packet in packets for op in [packet] + [getattr(packet, name) for name in packet.overloads()]]


def _bilinear_flops(*args, out_shape=None, **kwargs):
    return BILINEAR_FLOPS_PER_VALUE * math.prod(out_shape)


def flop_counts(fn):
    """``{op name: FLOPs}`` of one call of ``fn()`` under :data:`FLOP_CONVENTION`."""
    mapping = dict.fromkeys(_bilinear_ops(), _bilinear_flops)
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return {str(op): int(n) for op, n in counter.get_flop_counts().get('Global', {}).items()}


def count_flops(fn):
    """Total FLOPs of one call of ``fn()`` under :data:`FLOP_CONVENTION`."""
    return sum(flop_counts(fn).values())


def median_ms(fn, repeats, device):
    """Median milliseconds of ``repeats`` calls of ``fn()`` after one warm-up call (allocations, cudnn autotuning)."""
    fn()
    return 1000.0 * float(np.median([_time_one(fn, torch.device(device)) for _ in range(repeats)]))


class PeakMemory:
    """Peak memory of one call above what was allocated before it: CUDA's allocator statistics, or on the CPU the
    growth of the resident set's high-water mark (Linux; temporaries from pages the allocator still holds are not
    seen), else the process-lifetime peak, marked so in :attr:`method`."""

    def __init__(self, device):
        self.device = device
        self.method = 'cuda.max_memory_allocated' if device.type == 'cuda' else 'rss_hwm'
        self.base = 0

    def start(self):
        if self.device.type == 'cuda':
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        _release_free_heap()
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            self.base = _proc_kib('VmRSS') * 1024
        except OSError:
            self.method = 'ru_maxrss_lifetime'
            self.base = 0

    def stop(self):
        if self.device.type == 'cuda':
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self.method == 'rss_hwm':
            return _proc_kib('VmHWM') * 1024 - self.base
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_memory_bytes(fn, device):
    """Peak memory of one call of ``fn()`` above what was allocated before it (:class:`PeakMemory`)."""
    memory = PeakMemory(torch.device(device))
    memory.start()
    with torch.no_grad():
        fn()
    return memory.stop()


def available_memory_bytes(device):
    """Free memory of ``device`` (the kernel's ``MemAvailable`` on the CPU); None where it cannot be read."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0]
    try:
        return _proc_kib('MemAvailable', '/proc/meminfo') * 1024
    except OSError:
        return None


def _release_free_heap():
    """Return freed heap pages to the OS (glibc), so that memory a call reuses shows up as growth of the RSS."""
    try:
        ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _proc_kib(field, path='/proc/self/status'):
    """A ``<field>: N kB`` line of a /proc file, in KiB."""
    with open(path) as f:
        match = re.search(rf'^{field}:\s+(\d+) kB', f.read(), re.MULTILINE)
    if match is None:
        raise OSError(f'{path} has no {field}')
    return int(match.group(1))


def time_interleaved(fns, device, warmup, repeats, budget_s=0.0, max_repeats=25):
    """``{label: callable}`` -> ``{label: (seconds of each round, peak memory bytes of its first round, memory
    method)}``, timed round-robin so that a shared machine's load falls on all alike; ``repeats`` rounds at least,
    more (up to ``max_repeats``) while all rounds took under ``budget_s`` seconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    seconds = {label: [] for label in fns}
    peaks = {}
    i = 0
    while i < repeats or (i < max_repeats and sum(sum(v) for v in seconds.values()) * (i + 1) / i < budget_s):
        i += 1
        for label, fn in fns.items():
            memory = PeakMemory(device) if i == 1 else None
            if memory is not None:
                memory.start()
            seconds[label].append(_time_one(fn, device))
            if memory is not None:
                peaks[label] = (memory.stop(), memory.method)
    return {label: (seconds[label],) + peaks[label] for label in fns}


def _time_one(fn, device):
    if device.type == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def load_average():
    """The 1-minute load average, None where the system does not give one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_busy(loads, threads):
    """Whether other work ran beside a measurement: a load average (at its start or end) over its threads + 0.5."""
    return any(load is not None and load > threads + 0.5 for load in loads)


def machine_description(device):
    """The GPU's name, or the CPU's model name with its logical CPU count."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    try:
        with open('/proc/cpuinfo') as f:
            match = re.search(r'^model name\s*:\s*(.+)$', f.read(), re.MULTILINE)
    except OSError:
        match = None
    return f'{match.group(1).strip() if match else platform.machine()}, {os.cpu_count()} logical CPUs'


PEAK_MATMUL = 1024  # the peak probe's square matrix product


def peak_workloads(device, dtype, generator):
    """``{label: (callable, FLOPs)}``: the friendliest work for the device's libraries in ``dtype``; the best of them
    is the machine's peak."""
    def tensor(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator) * scale).to(device, dtype)

    work = {}
    # (channels, height, width): 3x3 on the 1/8 .. 1/32 grid of a 512x1024 frame, 1x1 as DeepLab's middle flow
    for k, shapes in ((3, ((256, 64, 128), (512, 32, 64), (1024, 16, 32))), (1, ((728, 32, 64),))):
        for c, h, w in shapes:
            x = tensor(1, c, h, w).contiguous(memory_format=torch.channels_last)
            weight = tensor(c, c, k, k, scale=0.02).contiguous(memory_format=torch.channels_last)
            work[f'conv{k}x{k} C={c} {h}x{w}'] = (lambda x=x, weight=weight, k=k: F.conv2d(x, weight, padding=k // 2),
                                                   2 * c * c * k * k * h * w)
    a, b = tensor(PEAK_MATMUL, PEAK_MATMUL), tensor(PEAK_MATMUL, PEAK_MATMUL, scale=0.02)
    work[f'matmul {PEAK_MATMUL}^3'] = (lambda: a @ b, 2 * PEAK_MATMUL ** 3)
    return work
