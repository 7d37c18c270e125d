"""tools/benchmark.py (FLOP counting, a tiny end-to-end run) and lib/infer/fast.py (the fast inference path)."""
import json
import statistics

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import load_tool, width_opts

import lib.infer.labels as labels_module
from lib.infer.fast import (EXACT, FastConfig, FastSCNet, ShiftedDepthwiseConv2d, add_fast_arguments, config_from_args,
                            default_min_dilation, fold_batch_norms, resolve_dtype, shift_dilated_depthwise)
from lib.infer.labels import (DENSE_BOUNDARY_FRACTION, bilinear_argmax, channel_argmax, logits_to_labels,
                              sparse_merge_argmax, upsample_labels)
from lib.model import build_scnet
from lib.ops import resample2d_reference
from lib.ops import upsample_argmax as compiled_labels
from lib.utils.config import load_config
from lib.utils.errors import UserError

TINY_OPTS = width_opts(prefix='')  # --model-opts takes the keys without 'model.'


benchmark = load_tool('benchmark')


@pytest.fixture(params=['compiled', 'torch'])
def label_kernels(request, monkeypatch):
    """Runs a test with the compiled CPU label kernels and again with the PyTorch computation they replace."""
    if request.param == 'compiled':
        if not compiled_labels.available():
            pytest.skip('the CPU label kernels are not built (no C++ compiler at install time)')
    else:
        monkeypatch.setattr(labels_module, '_use_fused', lambda maps: False)
    return request.param


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


def test_channel_argmax_is_argmax_with_first_index_on_ties():
    x = torch.randint(0, 4, (2, 19, 9, 11)).float()  # many ties
    assert torch.equal(channel_argmax(x), x.argmax(1))


def naive_bilinear_argmax(logits, size, align_corners):
    """float64 bilinear resize written out per output row and column (PyTorch's source-index rule), then argmax."""
    n, c, h, w = logits.shape
    x = logits.double()

    def source(n_out, n_in):
        out = []
        for i in range(n_out):
            if align_corners:
                pos = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
            else:
                pos = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            lo = min(int(pos), n_in - 1)
            out.append((lo, min(lo + 1, n_in - 1), pos - lo))
        return out
    rows, cols = source(size[0], h), source(size[1], w)
    out = torch.empty(n, *size, dtype=torch.int64)
    for i, (y0, y1, wy) in enumerate(rows):
        top = x[:, :, y0] * (1 - wy) + x[:, :, y1] * wy  # (N, C, w)
        for j, (x0, x1, wx) in enumerate(cols):
            out[:, i, j] = (top[:, :, x0] * (1 - wx) + top[:, :, x1] * wx).argmax(1)
    return out


@pytest.mark.parametrize('align_corners', [True, False])
def test_bilinear_argmax_matches_resize_then_argmax(align_corners, label_kernels):
    generator = torch.Generator().manual_seed(0)
    # Region-like logits (blocks of one class: few boundaries, the sparse path) and noise (boundaries everywhere:
    # the dense path).
    blocks = torch.randint(0, 19, (2, 3, 4), generator=generator).repeat_interleave(12, 1).repeat_interleave(12, 2)
    one_hot = F.one_hot(blocks, 19).permute(0, 3, 1, 2).float()
    smooth = 3 * one_hot + 0.3 * torch.randn(2, 19, 36, 48, generator=generator)
    noisy = torch.randn(2, 19, 36, 48, generator=generator)
    for logits, dense in ((smooth, False), (noisy, True)):
        assert (boundary_cells(logits.argmax(1)) > DENSE_BOUNDARY_FRACTION) == dense
        got = bilinear_argmax(logits, (144, 192), align_corners)
        resized = F.interpolate(logits, size=(144, 192), mode='bilinear', align_corners=align_corners)
        reference = naive_bilinear_argmax(logits, (144, 192), align_corners)
        # Where the two best classes are not within float32 rounding, all three agree exactly.
        top2 = resized.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-5
        assert torch.equal(got[clear], reference[clear])
        assert torch.equal(got[clear], resized.argmax(1)[clear])
        assert clear.float().mean() > 0.99
    assert torch.equal(logits_to_labels(smooth, (144, 192), align_corners, 'quarter_merge'),
                       bilinear_argmax(smooth, (144, 192), align_corners))


@pytest.mark.parametrize('align_corners', [True, False])
def test_sparse_merge_argmax_gives_the_full_tail_labels(align_corners, label_kernels):
    generator = torch.Generator().manual_seed(1)
    blocks = torch.randint(0, 19, (2, 3, 4), generator=generator).repeat_interleave(12, 1).repeat_interleave(12, 2)
    propagated = 3 * F.one_hot(blocks, 19).permute(0, 3, 1, 2).float() + 0.3 * torch.randn(2, 19, 36, 48,
                                                                                           generator=generator)
    # CFNet mostly agrees, except in one block; the distortion is high there and varies smoothly elsewhere.
    correction = propagated + 0.2 * torch.randn(2, 19, 36, 48, generator=generator)
    correction[:, :, :12, :12] = torch.randn(2, 19, 12, 12, generator=generator) * 3
    distortion = torch.rand(2, 1, 36, 48, generator=generator) * 0.3
    distortion[:, :, :14, :14] = 0.9
    for p, d, c in ((propagated, distortion, correction),
                    (torch.randn(1, 19, 36, 48), torch.rand(1, 1, 36, 48), torch.randn(1, 19, 36, 48))):
        size = (4 * p.shape[-2], 4 * p.shape[-1])
        merged = {}
        for name, dtype in (('float', torch.float32), ('double', torch.float64)):
            up = [F.interpolate(x.to(dtype), size=size, mode='bilinear', align_corners=align_corners)
                  for x in (p, d, c)]
            merged[name] = up[0] * (1 - up[1]) + up[2] * up[1]
        got = sparse_merge_argmax(p, d, c, size, align_corners)
        top2 = merged['double'].topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-5
        assert clear.float().mean() > 0.99
        assert torch.equal(got[clear], merged['double'].argmax(1)[clear])
        assert torch.equal(got[clear], merged['float'].argmax(1)[clear])


def boundary_cells(labels):
    """Fraction of 2x2 cells (last row/column paired with itself) holding more than one class."""
    pad = torch.cat((labels, labels[:, -1:]), 1)
    pad = torch.cat((pad, pad[:, :, -1:]), 2)
    a, b, c, d = pad[:, :-1, :-1], pad[:, 1:, :-1], pad[:, :-1, 1:], pad[:, 1:, 1:]
    return 1 - ((a == b) & (a == c) & (a == d)).float().mean().item()


def test_fold_batch_norms_keeps_the_outputs(tmp_path):
    net = tiny_scnet()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = FastSCNet(net, FastConfig(dtype='fp32', channels_last=False, tail='full', fold_bn=True))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the network passed in is untouched
    remaining = [n for n, m in fast.net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert remaining == ['dmnet.conv1.1', 'dmnet.conv2.1', 'dmnet.conv3.1']  # DMNet's BN after a ReLU stays
    assert fold_batch_norms(fast.net) == 0
    frames = benchmark.synthetic_clip(2, (64, 128), seed=2)
    with torch.no_grad():
        for reference, folded in ((net.key_frame(frames[0]).logits, fast.key_frame(frames[0]).logits),
                                  (net.estimate_flow(frames[1], frames[0]), fast.estimate_flow(frames[1], frames[0])),
                                  (net.cfnet(frames[1]), fast.net.cfnet(frames[1]))):
            assert ((folded - reference).norm() / reference.norm()) < 1e-5


@pytest.mark.parametrize('dilation, size', [(1, (9, 13)), (2, (8, 8)), (12, (8, 16)), (18, (32, 20)), (6, (5, 40))])
@pytest.mark.parametrize('channels_last', [False, True])
def test_shifted_depthwise_matches_conv2d(dilation, size, channels_last):
    torch.manual_seed(dilation)
    conv = nn.Conv2d(6, 6, 3, padding=dilation, dilation=dilation, groups=6, bias=True)
    x = torch.randn(2, 6, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=dilation, dilation=dilation,
                            groups=6)
        got = ShiftedDepthwiseConv2d(conv)(x)
    assert got.dtype == x.dtype and got.shape == expected.shape
    assert torch.allclose(got.double(), expected, atol=1e-5)
    if channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_shift_dilated_replaces_only_the_large_dilations():
    net = tiny_scnet()
    reference = FastSCNet(tiny_scnet(), FastConfig(dtype='fp32', channels_last=False, tail='full', fold_bn=False,
                                                    shift_dilated=False))
    shifted = FastSCNet(net, FastConfig(dtype='fp32', channels_last=False, tail='full', fold_bn=False,
                                        shift_dilated=True))
    replaced = [n for n, m in shifted.net.named_modules() if isinstance(m, ShiftedDepthwiseConv2d)]
    # ASPP's rates are 6, 12 and 18; the default threshold depends on the CPU (default_min_dilation).
    aspp = {6: 'deeplab.aspp1', 12: 'deeplab.aspp2', 18: 'deeplab.aspp3'}
    assert replaced == [f'{name}.atrous_convolution.depthwise' for rate, name in aspp.items()
                        if rate >= default_min_dilation()]
    assert shift_dilated_depthwise(shifted.net) == 0
    for min_dilation, expected in ((8, 2), (3, 3), (19, 0)):
        assert shift_dilated_depthwise(tiny_scnet(), min_dilation) == expected
    assert not any(isinstance(m, ShiftedDepthwiseConv2d) for m in net.modules())  # the network passed in is kept
    frame = benchmark.synthetic_clip(1, (64, 128), seed=4)[0]
    a, b = reference.key_frame(frame).logits, shifted.key_frame(frame).logits
    assert ((a - b).norm() / a.norm()) < 1e-5


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
    with pytest.raises(UserError, match='dtype'):
        FastConfig(dtype='int8')
    with pytest.raises(UserError, match='tail'):
        FastConfig(tail='half')
    with pytest.raises(UserError, match='unknown option'):
        FastConfig.from_dict({'dtpye': 'bf16'})
    assert resolve_dtype('fp32', 'cuda') is None and resolve_dtype('fp16', 'cpu') is torch.float16
    with pytest.raises(UserError, match='cuda_graphs'):
        FastSCNet(tiny_scnet(), FastConfig(cuda_graphs=True))
    import argparse
    parser = add_fast_arguments(argparse.ArgumentParser())
    assert config_from_args(parser.parse_args([])) is None
    config = config_from_args(parser.parse_args(['--fast', '--fast-tail', 'full', '--no-channels-last']))
    assert config == FastConfig(tail='full', channels_last=False)
    assert config_from_args(parser.parse_args(['--fast', '--no-fold-bn'])) == FastConfig(fold_bn=False)


# ---------------------------------------------------------------------------------------------- end to end (tiny)
@pytest.mark.slow
def test_tiny_benchmark_run_writes_complete_json(tmp_path):
    out = tmp_path / 'bench.json'
    result = benchmark.benchmark(benchmark.parse_args([
        '--device', 'cpu', '--sizes', '64x128', '--flops-sizes', '128x256', '--resample-sizes', '64x128',
        '--repeats', '2', '--row-budget', '0', '--warmup', '0', '--agreement-frames', '1', '--fast',
        '--out', str(out), '--model-opts', *TINY_OPTS]))
    on_disk = json.loads(out.read_text())
    assert on_disk['sizes'][0]['size'] == [64, 128] and on_disk['device'] == 'cpu'
    assert (tmp_path / 'bench.md').read_text().startswith('# Benchmark: cpu')

    rows = {(r['path'], r['name']): r for r in result['sizes'][0]['rows']}
    components = ('deeplab', 'resize_image', 'flownet', 'warp', 'dmnet', 'cfnet')
    expected = {(p, c) for p in ('exact', 'fast') for c in components}
    expected |= {('exact', t) for t in ('tail_full', 'tail_sparse', 'tail_quarter_merge', 'tail_quarter_argmax')}
    expected |= {(p, f) for p in ('exact', 'fast') for f in ('key_frame', 'non_key_frame', 'average_k5', 'average_k10')}
    expected |= {('original', 'non_key_frame')}
    assert set(rows) == expected
    for key, row in rows.items():
        if row['kind'] != 'derived':
            assert len(row['latency_ms_runs']) == 2 and row['peak_memory_bytes'] is not None, key
            # the reported latency is the median of the timed runs, the minimum their least disturbed one
            assert row['latency_ms'] == pytest.approx(statistics.median(row['latency_ms_runs'])), key
            assert row['latency_ms_min'] == min(row['latency_ms_runs']), key

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
    chain = entry['agreement']['fast_vs_exact']
    assert chain['min'] == min([chain['key_frame']] + chain['non_key_frames'])  # the worst frame of the chain
    assert 0.0 < entry['agreement']['fast_vs_exact']['state_logits_rel_error'][0] < 0.05  # bf16: ~0.4% per value
    assert len(entry['agreement']['fast_vs_exact']['non_key_frames']) == 1
    assert set(result['flops_only']) == {'64x128', '128x256'}
    assert {r['impl'] for r in result['resample2d']} == {'grid_sample'}
    assert result['copy_bandwidth']['gb_per_s'] > 0
    assert 'targets' not in result  # targets live in docs/benchmarks.md, not in the measuring code

    assert set(result['peak_gflops']) == {'bf16_conv', 'fp32_conv'} and min(result['peak_gflops'].values()) > 0
    fast_dtype = resolve_dtype('auto', 'cpu')
    peak = result['peak_gflops']['bf16_conv' if fast_dtype is torch.bfloat16 else 'fp32_conv']
    assert result['fraction_of_peak']['key_frame'] == pytest.approx(
        rows[('fast', 'key_frame')]['achieved_gflops_per_s'] / peak)
    assert result['fraction_of_peak']['non_key_frame'] == pytest.approx(
        rows[('fast', 'non_key_frame')]['achieved_gflops_per_s'] / peak)
    assert entry['fraction_of_peak']['exact']['peak'] == 'fp32_conv'
    assert isinstance(entry['boundary_fraction'], float)


def test_boundary_fraction_counts_the_quarter_cells_holding_two_classes():
    labels = torch.zeros(1, 16, 16, dtype=torch.int64)
    assert benchmark.boundary_fraction(labels) == 0.0
    labels[:, :, 8:] = 1  # samples at columns 0, 4, 8, 12: one of the three cell columns straddles the edge
    assert benchmark.boundary_fraction(labels) == pytest.approx(1 / 3)
    labels[:, ::4, ::4] = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0]] * 2)  # a checkerboard of samples
    assert benchmark.boundary_fraction(labels) == 1.0


def test_bad_size_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--sizes', '510x1024'])
    assert '--sizes: H and W must be multiples of 4' in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_onnxruntime_rows_and_trained_agreement(tmp_path):
    """The backend rows and the agreement on given weights and frames (here a tiny random model on a clip)."""
    pytest.importorskip('onnxruntime')
    import cv2
    import yaml

    config = tmp_path / 'tiny.yaml'
    model = load_config(None, [f'model.{opt}' for opt in TINY_OPTS])['model']
    config.write_text(yaml.safe_dump({'model': model, 'data': {'name': 'cityscapes'}}))
    checkpoint = tmp_path / 'tiny.pth'
    torch.save(tiny_scnet().state_dict(), checkpoint)
    clip = tmp_path / 'clip'
    clip.mkdir()
    for t, frame in enumerate(benchmark.synthetic_clip(5, (64, 128), seed=3)):
        rgb = (frame[0].permute(1, 2, 0).numpy() * 255).round().astype('uint8')
        cv2.imwrite(str(clip / f'{t}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    result = benchmark.benchmark(benchmark.parse_args([
        '--device', 'cpu', '--sizes', '64x128', '--flops-sizes', '--resample-sizes', '64x128', '--repeats', '1',
        '--row-budget', '0', '--warmup', '0', '--agreement-frames', '1', '--fast', '--onnxruntime', '--threads', '1',
        '--out', str(tmp_path / 'bench.json'), '--model-opts', *TINY_OPTS, '--agreement-config', str(config),
        '--agreement-checkpoint', str(checkpoint), '--agreement-input', str(clip), '--agreement-interval', '3']))
    entry = result['sizes'][0]
    rows = {(r['path'], r['name']) for r in entry['rows']}
    assert {('onnxruntime', 'key_frame'), ('onnxruntime', 'non_key_frame')} <= rows
    assert entry['fraction_of_peak']['onnxruntime']['peak'] == 'fp32_conv'
    assert entry['agreement']['onnxruntime_vs_exact']['key_frame'] > 0.999  # fp32 graphs: rounding only
    trained = result['agreement_trained']
    assert trained['frames'] == 5 and set(trained['per_distance_mean']) == {0, 1, 2}
    assert trained['per_distance_mean'][0] == 1.0 or trained['per_distance_mean'][0] > 0.99
    assert 0.5 < trained['min'] <= 1.0
