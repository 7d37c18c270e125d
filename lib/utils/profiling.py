"""Measurement helpers of the benchmarks: wall-clock time with the device synchronised, FLOPs with
``torch.utils.flop_counter``."""
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device):
    """Wait for the device's queued work (a no-op on the CPU), so that a timer measures the work itself."""
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def count_flops(fn):
    """FLOPs of one call of ``fn()`` (convolutions and matrix products; ``torch.utils.flop_counter``)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


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
