"""lib.utils.profiling: FLOPs against hand counts, the peak probe's FLOPs against the counter, round-robin timing,
the busy-machine rule."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.ops import resample2d_reference
from lib.utils import profiling


@pytest.mark.parametrize('cin, cout, k, stride, groups', [(6, 12, 3, 2, 3), (8, 8, 3, 1, 8), (5, 7, 1, 1, 1)])
def test_one_conv_layer_flops_match_hand_count(cin, cout, k, stride, groups):
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups)
    x = torch.randn(1, cin, 20, 30)
    h_out, w_out = conv(x).shape[-2:]
    assert profiling.count_flops(lambda: conv(x)) == 2 * cin * cout * k * k * h_out * w_out // groups


def test_warps_and_resizes_count_four_multiply_adds_per_output_value_also_under_inference_mode():
    x = torch.randn(2, 19, 8, 12)
    flow = torch.randn(2, 2, 8, 12)
    for inference in (False, True):
        with torch.inference_mode(inference):
            assert profiling.count_flops(lambda: F.interpolate(x, scale_factor=4, mode='bilinear')) == \
                8 * 2 * 19 * 32 * 48
            assert profiling.count_flops(lambda: resample2d_reference(x, flow)) == 8 * 2 * 19 * 8 * 12
            conv_and_resize = profiling.flop_counts(lambda: F.interpolate(F.conv2d(x, torch.ones(3, 19, 1, 1)),
                                                                          size=(16, 24), mode='bilinear'))
            assert sum(conv_and_resize.values()) == 2 * 19 * 3 * 2 * 8 * 12 + 8 * 2 * 3 * 16 * 24


def test_peak_workloads_state_the_flops_they_do():
    work = profiling.peak_workloads(torch.device('meta'), torch.float32, torch.Generator().manual_seed(0))
    kinds = {label.split()[0] for label in work}
    assert kinds == {'conv3x3', 'conv1x1', 'matmul'}
    for label, (fn, flops) in work.items():
        assert profiling.count_flops(fn) == flops, label


def test_time_interleaved_times_every_callable_in_rounds():
    calls = []
    fns = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
    timings = profiling.time_interleaved(fns, torch.device('cpu'), warmup=1, repeats=3, budget_s=0.0)
    assert calls == ['a', 'b'] * 4  # one warm-up round, then three timed rounds, alternating
    assert all(len(seconds) == 3 and min(seconds) >= 0 for seconds, _, _ in timings.values())


def test_machine_busy_allows_half_a_core_over_the_measurements_own_threads():
    assert not profiling.machine_busy((2.4, 1.9), threads=2)
    assert profiling.machine_busy((2.4, 2.6), threads=2)
    assert profiling.machine_busy((1.6, 0.2), threads=1)
    assert not profiling.machine_busy((None, None), threads=1)  # no load average on this system: nothing to judge
