"""lib.infer.fast: the exact runner against SCNet and the original order of operations, each rewrite of the fast
path against the module it replaces, the fast path's agreement, its options."""
import argparse

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import width_opts

from lib.infer.fast import (
    EXACT,
    FastConfig,
    FastSCNet,
    PairedDMNet,
    ShiftedDepthwiseConv2d,
    SubPixelConvTranspose2d,
    add_fast_arguments,
    config_from_args,
    default_min_dilation,
    fold_batch_norms,
    resolve_dtype,
    shift_dilated_depthwise,
)
from lib.model import build_scnet
from lib.synthetic.scene import Street, difficulty_with
from lib.utils.config import load_config
from lib.utils.errors import UserError


def tiny_scnet(seed=0):
    torch.manual_seed(seed)
    return build_scnet(load_config(None, width_opts())['model']).eval()


def clip(n_frames, size, seed):
    """Consecutive frames of a synthetic street, each (1, 3, H, W) in [0, 1]."""
    street = Street(np.random.default_rng(seed), *size, n_frames, difficulty_with('medium'))
    return [torch.from_numpy(street.render(t)[0]).permute(2, 0, 1)[None].float() for t in range(n_frames)]


def original_non_key_labels(net, state, cur, prev):
    """A non-key frame in the order of operations of the original evaluation script: flow; warp the logits, then
    the 1/4 key image; upsample the propagated logits, the distortion map and the correction x4; merge; argmax."""
    def resize(x, scale):
        return F.interpolate(x, scale_factor=scale, mode='bilinear', align_corners=net.align_corners)
    with torch.no_grad():
        flow = net.flownet(torch.cat([cur, prev], 1))
        logits, image = net.warpnet(state.logits, flow), net.warpnet(state.image, flow)
        distortion = resize(net.dmnet(image, resize(cur, 0.25)), 4)
        logits, correction = resize(logits, 4), resize(net.cfnet(cur), 4)
        return (logits * (1 - distortion) + correction * distortion).argmax(1)


def test_fold_batch_norms_keeps_the_outputs(tmp_path):
    net = tiny_scnet()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = FastSCNet(net, FastConfig(dtype='fp32', channels_last=False, tail='full', fold_bn=True,
                                     small_maps=False))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the network passed in is untouched
    remaining = [n for n, m in fast.net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert remaining == ['dmnet.conv1.1', 'dmnet.conv2.1', 'dmnet.conv3.1']  # DMNet's BN after a ReLU stays
    assert fold_batch_norms(fast.net) == 0
    frames = clip(2, (64, 128), seed=2)
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
    frame = clip(1, (64, 128), seed=4)[0]
    a, b = reference.key_frame(frame).logits, shifted.key_frame(frame).logits
    assert ((a - b).norm() / a.norm()) < 1e-5


def test_exact_runner_reproduces_scnet_bit_for_bit():
    net = tiny_scnet()
    frames = clip(2, (64, 128), seed=1)
    runner = FastSCNet(net, EXACT)
    state, labels = runner.key_step(frames[0])
    _, non_key_labels = runner.non_key_step(state, frames[1], frames[0])
    with torch.no_grad():
        reference_state = net.key_frame(frames[0])
        assert torch.equal(labels, net.to_full_resolution(reference_state.logits).argmax(1))
        propagated = net.propagate(reference_state, net.estimate_flow(frames[1], frames[0]))
        merged = net.correct(propagated, frames[1], full_resolution=True)['merged']
    assert torch.equal(non_key_labels, merged.argmax(1))
    assert torch.equal(non_key_labels, original_non_key_labels(net, state, frames[1], frames[0]))


def test_fast_runner_keeps_state_fp32_and_agrees_mostly():
    net = tiny_scnet()
    frames = clip(2, (64, 128), seed=1)
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
    parser = add_fast_arguments(argparse.ArgumentParser())
    assert config_from_args(parser.parse_args([])) is None
    config = config_from_args(parser.parse_args(['--fast', '--fast-tail', 'full', '--no-channels-last']))
    assert config == FastConfig(tail='full', channels_last=False)
    assert config_from_args(parser.parse_args(['--fast', '--no-fold-bn'])) == FastConfig(fold_bn=False)
    assert config_from_args(parser.parse_args(['--fast', '--no-small-maps'])) == FastConfig(small_maps=False)


@pytest.mark.parametrize('c_in, c_out, size, bias', [(6, 4, (3, 5), False), (2, 2, (1, 1), True), (9, 3, (8, 2), True)])
def test_sub_pixel_conv_transpose_is_the_transposed_convolution(c_in, c_out, size, bias):
    torch.manual_seed(c_in)
    deconv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=0, bias=bias).double()
    x = torch.randn(2, c_in, *size, dtype=torch.float64)
    assert SubPixelConvTranspose2d.replaces(deconv)
    assert not SubPixelConvTranspose2d.replaces(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
    with torch.no_grad():
        assert torch.allclose(SubPixelConvTranspose2d(deconv)(x), deconv(x), atol=1e-12)


def test_paired_dmnet_is_dmnet():
    dmnet = tiny_scnet().dmnet.double()
    generator = torch.Generator().manual_seed(3)
    warped, current = torch.rand(2, 2, 3, 16, 24, generator=generator, dtype=torch.float64).unbind(0)
    with torch.no_grad():
        assert torch.allclose(PairedDMNet(dmnet)(warped, current), dmnet(warped, current), atol=1e-12)


def test_exact_runner_warps_logits_and_image_in_one_call_with_the_same_bits():
    net = tiny_scnet()
    frames = clip(2, (64, 128), seed=5)
    runner = FastSCNet(net, EXACT)
    with torch.no_grad():
        state = net.key_frame(frames[0])
        flow = net.estimate_flow(frames[1], frames[0])
        assert torch.equal(runner.estimate_flow(frames[1], frames[0]), flow)
        for ours, theirs in zip(runner.propagate(state, flow), net.propagate(state, flow)):
            assert torch.equal(ours, theirs)


@pytest.mark.parametrize('tail', ['sparse', 'quarter_merge'])
def test_small_map_rewrites_keep_the_labels_of_the_fast_path(tail):
    net = tiny_scnet()
    frames = clip(3, (64, 128), seed=6)
    labels = {}
    for small_maps in (False, True):
        runner = FastSCNet(net, FastConfig(dtype='fp32', tail=tail, small_maps=small_maps))
        state, key = runner.key_step(frames[0])
        chain = [key]
        for t in (1, 2):
            state, frame_labels = runner.non_key_step(state, frames[t], frames[t - 1])
            chain.append(frame_labels)
        labels[small_maps] = torch.stack(chain)
        assert isinstance(runner.net.dmnet, PairedDMNet) == small_maps
        assert any(isinstance(m, SubPixelConvTranspose2d) for m in runner.net.modules()) == small_maps
    assert (labels[True] == labels[False]).float().mean() > 0.999  # float rounding moves a few boundary pixels
