"""tools/benchmark.py (FLOP counting, a tiny end-to-end run) and lib/engine/fast.py (the fast inference path)."""
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import load_tool
from lib.engine.fast import (EXACT, FastConfig, FastSCNet, add_fast_arguments, config_from_args, logits_to_labels,
                             resolve_dtype, upsample_labels)
from lib.model import build_scnet
from lib.ops import resample2d_reference
from lib.utils.config import load_config

TINY_OPTS = ['deeplab.width_mult=0.125', 'deeplab.middle_blocks=1', 'flownet.width_mult=0.25', 'cfnet.width_mult=0.25']


benchmark = load_tool('benchmark')


def tiny_scnet(seed=0):
    torch.manual_seed(seed)
    cfg = load_config(None, [f'model.{opt}' for opt in TINY_OPTS])['model']
    return build_scnet(cfg).eval()


# ------------------------------------------------------------------------------------------------- FLOP counting
@pytest.mark.parametrize('cin, cout, k, stride, groups', [(6, 12, 3, 2, 3), (8, 8, 3, 1, 8), (5, 7, 1, 1, 1)])
def test_one_conv_layer_flops_match_hand_count(cin, cout, k, stride, groups):
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups)
    x = torch.randn(1, cin, 20, 30)
    h_out, w_out = conv(x).shape[-2:]
    counted, hand, _ = benchmark.count_flops(lambda: conv(x))
    assert counted == 2 * cin * cout * k * k * h_out * w_out // groups
    assert hand == 0


def test_bilinear_ops_are_counted_by_hand_also_under_inference_mode():
    x = torch.randn(2, 19, 8, 12)
    flow = torch.randn(2, 2, 8, 12)
    for inference in (False, True):
        with torch.inference_mode(inference):
            counted, hand, _ = benchmark.count_flops(lambda: F.interpolate(x, scale_factor=4, mode='bilinear'))
            assert (counted, hand) == (0, 8 * 2 * 19 * 32 * 48)
            counted, hand, _ = benchmark.count_flops(lambda: resample2d_reference(x, flow))
            assert (counted, hand) == (0, 8 * 2 * 19 * 8 * 12)


# --------------------------------------------------------------------------------------------------- fast path
def naive_nearest(labels, size, align_corners):
    """Per-pixel loop: output pixel (y, x) reads the source pixel nearest to its position on the input grid."""
    n, h, w = labels.shape
    out = torch.empty(n, *size, dtype=labels.dtype)
    for y in range(size[0]):
        sy = y * (h - 1) / (size[0] - 1) if align_corners else (y + 0.5) * h / size[0] - 0.5
        for x in range(size[1]):
            sx = x * (w - 1) / (size[1] - 1) if align_corners else (x + 0.5) * w / size[1] - 0.5
            iy = min(max(int(torch.tensor(sy).round()), 0), h - 1)
            ix = min(max(int(torch.tensor(sx).round()), 0), w - 1)
            out[:, y, x] = labels[:, iy, ix]
    return out


@pytest.mark.parametrize('align_corners', [True, False])
def test_upsample_labels_matches_naive_loop(align_corners):
    labels = torch.randint(0, 19, (2, 5, 7))
    expected = naive_nearest(labels, (20, 28), align_corners)
    assert torch.equal(upsample_labels(labels, (20, 28), align_corners), expected)


def test_logits_to_labels_full_tail_is_bilinear_then_argmax():
    logits = torch.randn(1, 19, 6, 8)
    expected = F.interpolate(logits, size=(24, 32), mode='bilinear', align_corners=True).argmax(1)
    assert torch.equal(logits_to_labels(logits, (24, 32), True, 'full'), expected)
    assert torch.equal(logits_to_labels(logits, (6, 8), True, 'full'), logits.argmax(1))


def test_exact_runner_reproduces_scnet_bit_for_bit():
    net = tiny_scnet()
    frames = benchmark.synthetic_clip(2, (64, 128), seed=1)
    runner = FastSCNet(net, EXACT)
    state, labels = runner.key_step(frames[0])
    _, non_key_labels = runner.non_key_step(state, frames[1], frames[0])
    with torch.no_grad():
        reference_state = net.key_frame(frames[0])
        assert torch.equal(labels, net.to_full_resolution(reference_state.logits).argmax(1))
        propagated = net.propagate(reference_state, net.estimate_flow(frames[1], frames[0]))
        merged = net.correct(propagated, frames[1], full_resolution=True)['merged']
    assert torch.equal(non_key_labels, merged.argmax(1))
    assert torch.equal(non_key_labels, benchmark.original_non_key_step(net, state, frames[1], frames[0]))


def test_fast_runner_keeps_state_fp32_and_agrees_mostly():
    net = tiny_scnet()
    frames = benchmark.synthetic_clip(2, (64, 128), seed=1)
    exact = FastSCNet(net, EXACT)
    fast = FastSCNet(tiny_scnet(), FastConfig(dtype='bf16', channels_last=True, tail='quarter_merge'))
    _, exact_labels = exact.non_key_step(exact.key_frame(frames[0]), frames[1], frames[0])
    state = fast.key_frame(frames[0])
    assert state.logits.dtype == torch.float32 and state.image.dtype == torch.float32
    state, fast_labels = fast.non_key_step(state, frames[1], frames[0])
    assert fast_labels.shape == exact_labels.shape == (1, 64, 128)
    assert state.logits.dtype == torch.float32
    # bf16 and a 1/4-resolution merge change a few boundary pixels, not the map
    assert (fast_labels == exact_labels).float().mean() > 0.9
    assert fast.align_corners is net.align_corners  # attributes fall through to the wrapped network


def test_fast_config_validation_and_arguments():
    with pytest.raises(ValueError, match='dtype'):
        FastConfig(dtype='int8')
    with pytest.raises(ValueError, match='tail'):
        FastConfig(tail='half')
    with pytest.raises(ValueError, match='unknown option'):
        FastConfig.from_dict({'dtpye': 'bf16'})
    assert resolve_dtype('fp32', 'cuda') is None and resolve_dtype('fp16', 'cpu') is torch.float16
    with pytest.raises(ValueError, match='cuda_graphs'):
        FastSCNet(tiny_scnet(), FastConfig(cuda_graphs=True))
    import argparse
    parser = add_fast_arguments(argparse.ArgumentParser())
    assert config_from_args(parser.parse_args([])) is None
    config = config_from_args(parser.parse_args(['--fast', '--fast-tail', 'full', '--no-channels-last']))
    assert config == FastConfig(tail='full', channels_last=False)


# ---------------------------------------------------------------------------------------------- end to end (tiny)
def test_tiny_benchmark_run_writes_complete_json(tmp_path):
    out = tmp_path / 'bench.json'
    result = benchmark.main([
        '--device', 'cpu', '--sizes', '64x128', '--flops-sizes', '128x256', '--resample-sizes', '64x128',
        '--repeats', '2', '--row-budget', '0', '--warmup', '0', '--agreement-frames', '1', '--fast',
        '--out', str(out), '--model-opts', *TINY_OPTS])
    on_disk = json.loads(out.read_text())
    assert on_disk['sizes'][0]['size'] == [64, 128] and on_disk['device'] == 'cpu'
    assert (tmp_path / 'bench.md').read_text().startswith('# Benchmark: cpu')

    rows = {(r['path'], r['name']): r for r in result['sizes'][0]['rows']}
    components = ('deeplab', 'resize_image', 'flownet', 'warp', 'dmnet', 'cfnet')
    expected = {(p, c) for p in ('exact', 'fast') for c in components}
    expected |= {('exact', t) for t in ('tail_full', 'tail_quarter_merge', 'tail_quarter_argmax')}
    expected |= {(p, f) for p in ('exact', 'fast') for f in ('key_frame', 'non_key_frame', 'average_k5', 'average_k10')}
    expected |= {('original', 'non_key_frame')}
    assert set(rows) == expected
    for key, row in rows.items():
        assert row['latency_ms'] > 0, key
        if row['kind'] != 'derived':
            assert len(row['latency_ms_runs']) == 2 and row['peak_memory_bytes'] is not None, key

    net = tiny_scnet()
    assert rows[('exact', 'deeplab')]['params'] == sum(p.numel() for p in net.deeplab.parameters())
    # a key frame is DeepLab plus resizes; its counted (convolution) FLOPs are exactly DeepLab's
    assert rows[('exact', 'key_frame')]['flops_counted'] == rows[('exact', 'deeplab')]['flops_counted'] > 0
    non_key_parts = sum(rows[('exact', c)]['flops_counted'] for c in ('flownet', 'dmnet', 'cfnet'))
    assert rows[('exact', 'non_key_frame')]['flops_counted'] == non_key_parts
    warp = rows[('exact', 'warp')]
    assert warp['flops_hand'] == 8 * (19 + 3) * 16 * 32 and warp['bytes'] == (2 * (19 + 3) + 2) * 16 * 32 * 4
    k5 = rows[('exact', 'average_k5')]
    assert k5['flops'] == pytest.approx((rows[('exact', 'key_frame')]['flops']
                                         + 4 * rows[('exact', 'non_key_frame')]['flops']) / 5)

    entry = result['sizes'][0]
    assert entry['agreement']['exact_vs_original_non_key'] == 1.0
    assert 0.0 <= entry['agreement']['fast_vs_exact']['min'] <= 1.0
    assert 0.0 < entry['agreement']['fast_vs_exact']['state_logits_rel_error'][0] < 0.05  # bf16: ~0.4% per value
    assert len(entry['agreement']['fast_vs_exact']['non_key_frames']) == 1
    assert set(result['flops_only']) == {'64x128', '128x256'}
    assert {r['impl'] for r in result['resample2d']} == {'grid_sample'}
    assert result['copy_bandwidth']['gb_per_s'] > 0
    assert all({'target', 'measured', 'holds'} <= set(t) for t in result['targets'])


def test_bad_size_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--sizes', '510x1024'])
    assert '--sizes: H and W must be multiples of 4' in capsys.readouterr().err
