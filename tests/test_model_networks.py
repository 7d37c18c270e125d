"""The DAVSS networks: checkpoint layout, shapes, the inference protocol and the training losses.

Everything runs with tiny widths (the layout test builds the full networks on the meta device: no memory, no
forward).
"""
import json
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import TINY_WIDTHS

from lib.model import CFNet, DeepLabV3Plus, DMNet, FlowNetS, PropagationState, SCNet, SCNetDMNet, Warp, build_scnet
from lib.utils.config import DEFAULTS

LAYOUT_FILE = os.path.join(os.path.dirname(__file__), 'data', 'state_dict_shapes.json')
TINY = {name: TINY_WIDTHS[name] for name in ('deeplab', 'flownet')}


def tiny_scnet(n_classes=5, **kwargs):
    torch.manual_seed(0)
    net = SCNet(n_classes, cfnet=TINY_WIDTHS['cfnet'], **TINY, **kwargs)
    randomize_batchnorm_statistics(net)
    return net


def randomize_batchnorm_statistics(net):
    """Fresh BN statistics (0, 1) make frozen parts an identity-like map; random ones exercise the eval path."""
    generator = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)


def random_frames(n=2, h=64, w=64, seed=0):
    return torch.rand(n, 3, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module')
def reference_layout():
    with open(LAYOUT_FILE) as f:
        data = json.load(f)
    keys = data['keys']
    models = {name: [(keys[i], shape) for i, shape in entries] for name, entries in data['models'].items()}
    return models, {name: (eps, momentum) for name, eps, momentum in data['batchnorm']}


@pytest.mark.parametrize('cls, reference_name', [(SCNet, 'SCNet'), (SCNetDMNet, 'SCNet_dmnet')])
@pytest.mark.parametrize('n_classes', [19, 11])
def test_state_dict_layout_matches_published_checkpoints(reference_layout, cls, reference_name, n_classes):
    models, batchnorm = reference_layout
    with torch.device('meta'):
        net = cls(n_classes=n_classes)
    layout = [(k, list(v.shape)) for k, v in net.state_dict().items()]
    assert layout == models[f'{reference_name}(n_classes={n_classes})']
    norms = {name: m for name, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert all(type(m) is nn.BatchNorm2d for m in norms.values())
    expected = batchnorm if cls is SCNet else {k: v for k, v in batchnorm.items() if not k.startswith('cfnet.')}
    assert {name: (m.eps, m.momentum) for name, m in norms.items()} == expected


def test_deeplab_logits_at_ceil_quarter_resolution():
    torch.manual_seed(0)
    net = DeepLabV3Plus(7, width_mult=0.125, middle_blocks=1).eval()
    with torch.inference_mode():
        assert net(torch.rand(1, 3, 68, 132)).shape == (1, 7, 17, 33)
        assert net(torch.rand(1, 3, 66, 130)).shape == (1, 7, 17, 33)


def test_deeplab_middle_blocks_and_width():
    net = DeepLabV3Plus(3, width_mult=0.125, middle_blocks=2)
    names = [n for n, _ in net.xception_features.named_children() if n.startswith('middle_flow')]
    assert names == ['middle_flow_block1_unit_1', 'middle_flow_block1_unit_2']
    assert net.xception_features.out_channels == 256 and net.logits.in_channels == 32


@pytest.mark.parametrize('h, w', [(64, 64), (68, 132), (4, 8)])
def test_flownet_and_cfnet_quarter_resolution_at_odd_sizes(h, w):
    torch.manual_seed(0)
    flownet, cfnet = FlowNetS(width_mult=0.25).eval(), CFNet(4, width_mult=0.25).eval()
    with torch.inference_mode():
        assert flownet(torch.rand(1, 6, h, w)).shape == (1, 2, h // 4, w // 4)
        assert cfnet(torch.rand(1, 3, h, w)).shape == (1, 4, h // 4, w // 4)


def test_sizes_not_multiple_of_4_are_rejected():
    with pytest.raises(ValueError, match='FlowNetS: frame size 66x132'):
        FlowNetS(width_mult=0.25)(torch.rand(1, 6, 66, 132))
    with pytest.raises(ValueError, match='CFNet: frame size 64x130'):
        CFNet(4, width_mult=0.25)(torch.rand(1, 3, 64, 130))
    net = tiny_scnet().eval()
    with pytest.raises(ValueError, match='SCNet: frame size 66x64'):
        net.key_frame(torch.rand(1, 3, 66, 64))
    with pytest.raises(ValueError, match=r'expected frames \(N, 3, 3, H, W\)'):
        net(torch.rand(1, 2, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.long))


def test_dmnet_is_one_minus_cosine_over_two():
    torch.manual_seed(0)
    net = DMNet().eval()
    randomize_batchnorm_statistics(net)
    a, b = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 16, 24)
    with torch.inference_mode():
        ea, eb = net.embed(a).double(), net.embed(b).double()
        cosine = (ea * eb).sum(1) / (ea.norm(dim=1) * eb.norm(dim=1)).clamp_min(1e-8)
        expected = ((1 - cosine) / 2).clamp(0, 1).unsqueeze(1)
        out = net(a, b)
    assert out.shape == (2, 1, 16, 24)
    assert torch.allclose(out.double(), expected, atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1


def test_warp_shifts_by_integer_flow_and_clamps_at_border():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6)
    flow = torch.zeros(2, 2, 5, 6)
    flow[:, 0] = 1.0  # out[y, x] = x_prev[y, x + 1]
    out = Warp()(x, flow)
    assert torch.allclose(out[..., :-1], x[..., 1:], atol=1e-4)
    assert torch.allclose(out[..., -1], x[..., -1], atol=1e-4)


@pytest.mark.parametrize('h, w', [(64, 96), (68, 132)])
def test_propagation_protocol_matches_hand_composition(h, w):
    net = tiny_scnet(align_corners=False).eval()
    frames = random_frames(n=1, h=h, w=w)[0]  # (3, 3, H, W)
    with torch.inference_mode():
        state = net.key_frame(frames[0:1])
        assert isinstance(state, PropagationState)
        assert state.logits.shape == (1, 5, h // 4, w // 4) and state.image.shape == (1, 3, h // 4, w // 4)
        logits, image = net.deeplab(frames[0:1]), F.interpolate(frames[0:1], size=(h // 4, w // 4), mode='bilinear')
        for t in (1, 2):
            flow = net.estimate_flow(frames[t:t + 1], frames[t - 1:t])
            state = net.propagate(state, flow)
            flow_by_hand = net.flownet(torch.cat([frames[t:t + 1], frames[t - 1:t]], 1))
            logits, image = Warp()(logits, flow_by_hand), Warp()(image, flow_by_hand)
        assert torch.equal(state.logits, logits) and torch.equal(state.image, image)
        assert net.correct(state, frames[2:3])['merged'].shape == (1, 5, h, w)


@pytest.mark.parametrize('align_corners', [True, False])
def test_correct_full_resolution_merge_by_hand(align_corners):
    net = tiny_scnet(align_corners=align_corners).eval()
    assert net.align_corners is align_corners
    frames = random_frames(n=2, h=64, w=96)
    key, current = frames[:, 0], frames[:, 1]
    up = lambda x: F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=align_corners)  # noqa: E731
    with torch.inference_mode():
        state = net.propagate(net.key_frame(key), net.estimate_flow(current, key))
        out = net.correct(state, current)
        current_q = F.interpolate(current, scale_factor=0.25, mode='bilinear', align_corners=align_corners)
        dm = up(net.dmnet(state.image, current_q))
        prop, corr = up(state.logits), up(net.cfnet(current))
        merged = prop * (1 - dm) + corr * dm
    assert out['merged'].shape == (2, 5, 64, 96) and out['distortion'].shape == (2, 1, 64, 96)
    for name, expected in [('merged', merged), ('propagated', prop), ('distortion', dm), ('correction', corr)]:
        assert torch.allclose(out[name], expected, atol=1e-6), name


def test_correct_quarter_resolution_and_precomputed_correction():
    net = tiny_scnet().eval()
    frames = random_frames(n=1, h=64, w=96)
    key, current = frames[:, 0], frames[:, 1]
    with torch.inference_mode():
        state = net.propagate(net.key_frame(key), net.estimate_flow(current, key))
        correction = torch.randn(1, 5, 16, 24)
        out = net.correct(state, current, correction=correction, full_resolution=False)
        dm = net.dmnet(state.image, F.interpolate(current, size=(16, 24), mode='bilinear', align_corners=True))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        'merged': (1, 5, 16, 24), 'propagated': (1, 5, 16, 24), 'distortion': (1, 1, 16, 24),
        'correction': (1, 5, 16, 24)}
    assert torch.allclose(out['merged'], state.logits * (1 - dm) + correction * dm, atol=1e-6)


def paper_correction_losses(net, frames, label):
    """The feature-correction losses written out step by step from the paper's definition (independent of
    SCNet.forward's loop)."""
    up = lambda x: F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=True)  # noqa: E731
    down = lambda x: F.interpolate(x, scale_factor=0.25, mode='bilinear', align_corners=True)  # noqa: E731
    key, mid, target = frames[:, 0], frames[:, 1], frames[:, 2]
    logits, image = net.deeplab(key), down(key)
    pseudo = up(net.deeplab(mid)).argmax(1)
    semantic, cfnet = [], []
    for prev, cur, truth in ((key, mid, pseudo), (mid, target, label)):
        flow = net.flownet(torch.cat([cur, prev], 1))
        logits, image = net.warpnet(logits, flow), net.warpnet(image, flow)
        prop = up(logits)
        dm = up(net.dmnet(image, down(cur)))
        corr = up(net.cfnet(cur))
        per_pixel = F.cross_entropy(corr, truth, ignore_index=255, reduction='none')  # (N, H, W)
        # Batch-broadcast weighting of the paper's code: mean over pixels of batch-mean loss x batch-mean map.
        cfnet.append((per_pixel.mean(0) * dm[:, 0].mean(0)).mean())
        semantic.append(F.cross_entropy(prop, truth, ignore_index=255))
        semantic.append(F.cross_entropy(prop * (1 - dm) + corr * dm, truth, ignore_index=255))
    return sum(semantic) / 4, sum(cfnet) / 2


def test_scnet_training_step_losses_and_gradients():
    net = tiny_scnet().train()
    assert not net.deeplab.training and not net.dmnet.training and net.flownet.training and net.cfnet.training
    frames = random_frames()
    label = torch.randint(0, 5, (2, 64, 64))
    label[:, :8] = 255
    deeplab_stats = net.deeplab.feature_projection0_bn.running_mean.clone()

    losses = net(frames, label)
    assert list(losses) == ['loss_semantic', 'loss_cfnet']
    loss_semantic, loss_cfnet = losses['loss_semantic'], losses['loss_cfnet']
    assert loss_semantic.dim() == 0 and loss_cfnet.dim() == 0
    assert torch.isfinite(loss_semantic) and torch.isfinite(loss_cfnet) and loss_cfnet > 0
    (loss_semantic + loss_cfnet).backward()

    assert all(p.grad is None and not p.requires_grad for p in net.deeplab.parameters())
    assert all(p.grad is None and not p.requires_grad for p in net.dmnet.parameters())
    for part in (net.flownet, net.cfnet):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert torch.equal(net.deeplab.feature_projection0_bn.running_mean, deeplab_stats)

    # The same losses, written out independently (CFNet BN in eval so both passes see the same statistics).
    net.eval()
    with torch.no_grad():
        expected = paper_correction_losses(net, frames, label)
        got = net(frames, label)
    assert torch.allclose(got['loss_semantic'], expected[0], rtol=1e-5)
    assert torch.allclose(got['loss_cfnet'], expected[1], rtol=1e-5)


def test_scnet_dmnet_training_step_gradients_and_loss():
    torch.manual_seed(0)
    net = SCNetDMNet(5, **TINY)
    randomize_batchnorm_statistics(net)
    assert not hasattr(net, 'cfnet') or net.cfnet is None
    assert net.dmnet.training and not net.deeplab.training and not net.flownet.training
    frames = random_frames()
    losses = net(frames)
    assert list(losses) == ['loss_dmnet']
    loss = losses['loss_dmnet']
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is None for p in net.deeplab.parameters())
    assert all(p.grad is None for p in net.flownet.parameters())
    grads = [p.grad for p in net.dmnet.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)

    # Independent computation: BCE between the upsampled map and "propagated argmax != DeepLab argmax".
    net.eval()
    up = lambda x: F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=True)  # noqa: E731
    with torch.no_grad():
        key = frames[:, 0]
        logits, image = net.deeplab(key), F.interpolate(key, scale_factor=0.25, mode='bilinear', align_corners=True)
        losses = []
        for prev, cur in ((frames[:, 0], frames[:, 1]), (frames[:, 1], frames[:, 2])):
            flow = net.flownet(torch.cat([cur, prev], 1))
            logits, image = net.warpnet(logits, flow), net.warpnet(image, flow)
            target = (up(logits).argmax(1, keepdim=True) != up(net.deeplab(cur)).argmax(1, keepdim=True)).float()
            dm = up(net.dmnet(image, F.interpolate(cur, scale_factor=0.25, mode='bilinear', align_corners=True)))
            losses.append(F.binary_cross_entropy(dm, target))
        assert torch.allclose(net(frames)['loss_dmnet'], sum(losses) / 2, rtol=1e-5)


def test_correct_without_cfnet_needs_a_correction():
    net = SCNetDMNet(5, **TINY).eval()
    frames = random_frames(n=1)
    with torch.inference_mode():
        state = net.key_frame(frames[:, 0])
        with pytest.raises(ValueError, match='no CFNet'):
            net.correct(state, frames[:, 1])
        assert net.correct(state, frames[:, 1], correction=torch.zeros(1, 5, 16, 16))['merged'].shape == (1, 5, 64, 64)


def test_build_scnet_from_config():
    cfg = json.loads(json.dumps(DEFAULTS['model']))
    cfg.update(n_classes=11, align_corners=False, deeplab={'width_mult': 0.125, 'middle_blocks': 1},
               flownet={'width_mult': 0.25}, cfnet={'width_mult': 0.25})
    net = build_scnet(cfg)
    assert type(net) is SCNet and net.align_corners is False and net.cfnet.predict_cc.out_channels == 11
    assert net.cfnet.conv1[0].out_channels == 8 and net.flownet.conv1[0].out_channels == 6
    assert type(build_scnet(cfg, stage='dmnet')) is SCNetDMNet
    with pytest.raises(ValueError, match='stage must be'):
        build_scnet(cfg, stage='flow')
