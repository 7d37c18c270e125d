"""Measurement helpers of every benchmark: wall-clock time with the device synchronised (CUDA events on a GPU),
round-robin timing, peak memory of one call, FLOPs with ``torch.utils.flop_counter``, parameter counts."""
import ctypes
import ctypes.util
import re
import resource
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device):
    """Wait for the device's queued work (a no-op on the CPU), so that a timer measures the work itself."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def flop_counts(fn, custom_mapping=None):
    """``{op name: FLOPs}`` of one call of ``fn()`` as ``FlopCounterMode`` counts them (convolutions and matrix
    products), with ``custom_mapping`` (``{op: formula}``) for ops it does not count."""
    with FlopCounterMode(display=False, custom_mapping=custom_mapping or {}) as counter:
        fn()
    return {str(op): int(n) for op, n in counter.get_flop_counts().get('Global', {}).items()}


def count_flops(fn):
    """Total FLOPs of one call of ``fn()`` (convolutions and matrix products)."""
    return sum(flop_counts(fn).values())


def median_ms(fn, repeats, device):
    """Median milliseconds of ``repeats`` calls of ``fn()`` after one warm-up call (allocations, cudnn autotuning)."""
    times = []
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(1000.0 * (time.perf_counter() - start))
    return float(np.median(times[1:]))


class PeakMemory:
    """Peak memory of one call above what was allocated before it.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.  CPU: growth of the resident set's
    high-water mark (``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs``, Linux) over the resident set before
    the call, after freed heap pages are returned to the OS; small temporaries served from pages the allocator
    still holds are not seen (rows of a few MiB read 0).  Where ``clear_refs`` is not writable,
    ``resource.getrusage`` gives only the process-lifetime peak and the row is marked so.
    """

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
    """Memory a computation on ``device`` may still use: free GPU memory, or the kernel's ``MemAvailable``;
    None where it cannot be read."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.mem_get_info(device)[0]
    try:
        return _proc_kib('MemAvailable', '/proc/meminfo') * 1024
    except OSError:
        return None


def _release_free_heap():
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so that memory a call reuses from earlier calls
    shows up as growth of the resident set; a no-op where glibc is not the allocator."""
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
    """Latencies of several callables measured round-robin, so that the load of a shared machine falls on all alike.

    Args:
        fns: {label: zero-argument callable}.
        repeats: timed rounds at least; more (up to ``max_repeats``) while all rounds so far took under
            ``budget_s`` seconds, so cheap rows get a steadier median at little cost.
    Returns:
        {label: (list of seconds, peak memory bytes of its first timed call, memory method)}.
    """
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




def count_params(*modules):
    """Parameters of the modules together."""
    return sum(p.numel() for m in modules for p in m.parameters())
