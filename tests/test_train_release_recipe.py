"""The two recipes of the paper's code and the rest of its randomness, each against a re-statement of the
original (jfzhuang/DAVSS) at the commit it comes from, written out here in the original's order of operations:

- ``model.init: original``: every draw of the original's constructors (5dc785e, unchanged since a03c1ea), so
  seed 666 gives its initial DMNet and CFNet;
- ``data.pixel_scaling: divide``: its ``transform_im`` (``img.astype(float32) / 255``);
- ``data.pseudo_labels: precomputed``: a03c1ea's dataset read DeepLab's whole-frame masks of the three frames and
  cropped them with the frames (``randomcrop([img_1, img_1_mask, ..., gt])``), and its forwards took the labels of
  t-i and t from them; ``tools/make_pseudo_labels.py`` writes those masks;
- the ``*_release`` experiments against the paper experiments.
"""
import copy
import math
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import REPO_ROOT, TINY_WIDTHS, load_tool, tiny_model_cfg, varied_tiny_scnet

from lib.dataset import build_dataset, read_frame
from lib.dataset.io import decode_frame
from lib.dataset.pseudo_labels import MARKER, mask_path
from lib.model import SCNetDMNet, build_scnet
from lib.train import stages
from lib.utils.config import DEFAULTS, load_config
from lib.utils.errors import UserError

# --- model.init: original --------------------------------------------------------------------------------------

def construct(shape, bias):
    """What torch 1.5's ``_ConvNd.reset_parameters`` drew: ``kaiming_uniform_(a=sqrt(5))`` of the weight (fan-in =
    ``shape[1] x kernel``, also for a transposed convolution's ``(in, out, k, k)``), then a uniform bias."""
    w = torch.empty(shape)
    fan_in = shape[1] * math.prod(shape[2:])
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
    w.uniform_(-bound, bound)
    b = torch.empty(shape[0]).uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in)) if bias else None
    return w, b


def original_scnet(n_classes, with_cfnet):
    """The tensors of the original's ``SCNet()`` / ``SCNet_dmnet()`` built right after ``torch.manual_seed``, drawn
    in the order of its constructors (lib/model/*.py of jfzhuang/DAVSS), as ``{checkpoint key: tensor}``."""
    out = {}

    def conv(name, shape, bias=False):
        out[f'{name}.weight'], b = construct(shape, bias)
        if bias:
            out[f'{name}.bias'] = b

    def normal(name, std):
        out[f'{name}.weight'].normal_(0.0, std)

    def separable(name, cin, cout, k=3, bias=False):  # SeparableConv2d: both convs built, then normal_(0.33) each
        conv(f'{name}.depthwise', (cin, 1, k, k), bias)
        conv(f'{name}.pointwise', (cout, cin, 1, 1), bias)
        normal(f'{name}.depthwise', 0.33)
        normal(f'{name}.pointwise', 0.33)

    # deeplabv3plus: Xception (resnet_utils_conv2d_same re-draws normal_(0, sqrt(2 / (k * k * out)))) ...
    x = 'deeplab.xception_features'
    for name, cin, cout in (('entry_flow_conv1_1', 3, 32), ('entry_flow_conv1_2', 32, 64)):
        conv(f'{x}.{name}.conv', (cout, cin, 3, 3))
        normal(f'{x}.{name}.conv', math.sqrt(2.0 / (3 * 3 * cout)))
    blocks = [('entry_flow_block1_unit_1', 64, [128] * 3, True), ('entry_flow_block2_unit_1', 128, [256] * 3, True),
              ('entry_flow_block3_unit_1', 256, [728] * 3, True)]
    blocks += [(f'middle_flow_block1_unit_{i}', 728, [728] * 3, False) for i in range(1, 17)]
    blocks += [('exit_flow_block1_unit_1', 728, [728, 1024, 1024], True),
               ('exit_flow_block2_unit_1', 1024, [1536, 1536, 2048], False)]
    for block, inplanes, depths, projection in blocks:  # xception_module: all convs built, then normal_(0.09) each
        names, cin = [], inplanes
        for k, depth in enumerate(depths, 1):
            conv(f'{x}.{block}.separable_conv{k}.depthwise', (cin, 1, 3, 3))
            conv(f'{x}.{block}.separable_conv{k}.pointwise', (depth, cin, 1, 1))
            names += [f'{x}.{block}.separable_conv{k}.depthwise', f'{x}.{block}.separable_conv{k}.pointwise']
            cin = depth
        if projection:
            conv(f'{x}.{block}.shortcut.0', (depths[-1], inplanes, 1, 1))
            names.append(f'{x}.{block}.shortcut.0')
        for name in names:
            normal(name, 0.09)
    # ... then the head: ASPP (rate 1 is SeparableConv2d(separable=False): one conv, normal_(0.33)), pooling, decoder
    conv('deeplab.aspp0.atrous_convolution.conv', (256, 2048, 1, 1))
    normal('deeplab.aspp0.atrous_convolution.conv', 0.33)
    for k in (1, 2, 3):
        separable(f'deeplab.aspp{k}.atrous_convolution', 2048, 256)
    conv('deeplab.image_pooling.1', (256, 2048, 1, 1))
    conv('deeplab.concat_projection.0', (256, 1280, 1, 1))
    conv('deeplab.feature_projection0_conv', (48, 256, 1, 1))
    separable('deeplab.decoder.0', 304, 256)
    separable('deeplab.decoder.1', 256, 256)
    conv('deeplab.logits', (n_classes, 256, 1, 1), bias=True)
    # FlowNets: PyTorch's init only, in construction order.
    flow_convs = [('conv1', 6, 24, 7), ('conv2', 24, 48, 5), ('conv3', 48, 96, 5), ('conv3_1', 96, 96, 3),
                  ('conv4', 96, 192, 3), ('conv4_1', 192, 192, 3), ('conv5', 192, 192, 3), ('conv5_1', 192, 192, 3),
                  ('conv6', 192, 384, 3), ('conv6_1', 384, 384, 3)]
    for name, cin, cout, k in flow_convs:
        conv(f'flownet.{name}.0', (cout, cin, k, k), bias=True)
    for level, cin in ((6, 384), (5, 386), (4, 290), (3, 146), (2, 74)):
        conv(f'flownet.predict_flow{level}', (2, cin, 3, 3), bias=True)
    for level, cin, cout in ((5, 384, 192), (4, 386, 96), (3, 290, 48), (2, 146, 24)):
        conv(f'flownet.deconv{level}.0', (cin, cout, 4, 4))  # ConvTranspose2d: (in, out, k, k)
    for name in ('6to5', '5to4', '4to3', '3to2'):
        conv(f'flownet.upsample_flow{name}', (2, 2, 4, 4))
    # CFNet (SCNet only): PyTorch's init only.
    if with_cfnet:
        cf_convs = [('conv1', 3, 32), ('conv2', 32, 64), ('conv3', 64, 128), ('conv3_1', 128, 128),
                    ('conv4', 128, 256), ('conv4_1', 256, 256), ('conv5', 256, 256), ('conv5_1', 256, 256),
                    ('conv6', 256, 512), ('conv6_1', 512, 512)]
        for name, cin, cout in cf_convs:
            conv(f'cfnet.{name}.0', (cout, cin, 3, 3))
        for level, cin, cout in ((5, 512, 256), (4, 512, 128), (3, 384, 64), (2, 192, 32)):
            conv(f'cfnet.deconv{level}.0', (cin, cout, 4, 4))
        conv('cfnet.predict_cc', (n_classes, 96, 1, 1), bias=True)
    # DMNet: separable convs with biases, conv4, then weight_init: xavier_normal_ of every conv, biases 0.
    dm_convs = []
    for k, (cin, cout) in enumerate(((3, 4), (4, 8), (8, 16)), 1):
        separable(f'dmnet.conv{k}.0', cin, cout, bias=True)
        dm_convs += [f'dmnet.conv{k}.0.depthwise', f'dmnet.conv{k}.0.pointwise']
    conv('dmnet.conv4', (16, 16, 1, 1), bias=True)
    for name in dm_convs + ['dmnet.conv4']:
        w = out[f'{name}.weight']
        receptive = math.prod(w.shape[2:])
        w.normal_(0.0, math.sqrt(2.0 / (w.shape[1] * receptive + w.shape[0] * receptive)))
        out[f'{name}.bias'].zero_()
    return out


@pytest.mark.slow  # the full-size networks (DeepLab's 41M draws, twice): a few seconds each
@pytest.mark.parametrize('stage, n_classes', [('correction', 19), ('dmnet', 11)])
def test_original_init_is_the_originals_draws_in_its_order(stage, n_classes):
    cfg = dict(copy.deepcopy(DEFAULTS['model']), n_classes=n_classes, init='original')
    torch.manual_seed(666)
    net = build_scnet(cfg, stage)
    after_net = torch.get_rng_state()
    torch.manual_seed(666)
    expected = original_scnet(n_classes, with_cfnet=stage == 'correction')
    assert torch.equal(torch.get_rng_state(), after_net)  # the generator ends where the original's ended
    params = dict(net.named_parameters())
    assert set(expected) <= set(params)
    for key, value in params.items():
        if key in expected:
            assert torch.equal(value, expected[key]), key
        else:  # BatchNorm: weight 1, bias 0 in both codes, nothing drawn
            assert torch.equal(value, torch.full_like(value, 1.0 if key.endswith('weight') else 0.0)), key
    # The default init is another one (it draws less in DeepLab and DMNet), so the option changes CFNet and DMNet.
    torch.manual_seed(666)
    default = build_scnet(dict(cfg, init='default'), stage)
    assert not torch.equal(default.dmnet.conv4.weight, net.dmnet.conv4.weight)


def test_default_init_is_plain_construction():
    """``model.init: default`` (synthetic configs) builds the sub-networks and nothing else: the weights the demo
    was trained from are unchanged."""
    cfg = tiny_model_cfg()
    torch.manual_seed(3)
    net = build_scnet(cfg, 'correction')
    torch.manual_seed(3)
    from lib.model import CFNet, DeepLabV3Plus, DMNet, FlowNetS
    parts = [DeepLabV3Plus(19, **TINY_WIDTHS['deeplab']), FlowNetS(**TINY_WIDTHS['flownet']),
             CFNet(19, **TINY_WIDTHS['cfnet']), DMNet()]
    for part, name in zip(parts, ('deeplab', 'flownet', 'cfnet', 'dmnet')):
        for (key, a), b in zip(getattr(net, name).state_dict().items(), part.state_dict().values()):
            assert torch.equal(a, b), f'{name}.{key}'


def test_bad_model_init_is_a_config_error():
    with pytest.raises(UserError, match=r'model\.init: expected default \| original, got \'xavier\''):
        load_config(None, ['model.init=xavier'])


# --- data.pixel_scaling: divide --------------------------------------------------------------------------------

def test_divide_is_the_originals_transform_im(tmp_path):
    values = np.arange(256, dtype=np.uint8)
    bgr = np.stack([values, values[::-1], values], axis=-1).reshape(16, 16, 3)
    path = str(tmp_path / 'frame.png')
    assert cv2.imwrite(path, bgr)
    # transform_im of lib/dataset/utils.py: BGR -> RGB, HWC -> CHW, astype(float32) / 255 (correctly rounded).
    reference = (bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float64) / 255.0).astype(np.float32)
    divided, multiplied = decode_frame(path, 'divide'), decode_frame(path, 'multiply')
    assert np.array_equal(divided, reference)
    assert not np.array_equal(multiplied, reference)
    per_value = multiplied[0].ravel() != divided[0].ravel()  # channel 0 holds every byte value once
    assert per_value.sum() == 126
    assert np.abs(multiplied.view(np.int32).astype(np.int64) - divided.view(np.int32)).max() == 1  # one ulp


def test_pixel_scaling_reaches_every_dataset_and_bad_values_are_errors(synthetic_data_cfg):
    cfg = dict(synthetic_data_cfg, pixel_scaling='divide')
    clip, _ = build_dataset(cfg, 'val', 'pda')[0]
    entry = build_dataset(cfg, 'val', 'pda').frames[0]
    root = synthetic_data_cfg['root']
    assert torch.equal(clip[-1], read_frame(os.path.join(root, entry.image), 'divide'))
    assert not torch.equal(clip[-1], read_frame(os.path.join(root, entry.image)))
    frames, _ = build_dataset(dict(cfg, intermediate='original'), 'train', 'triplet', seed=666)[0]
    assert torch.equal(frames[2], read_frame(os.path.join(root, build_dataset(cfg, 'train', 'pda').frames[0].image),
                                             'divide'))
    with pytest.raises(UserError, match=r'data\.pixel_scaling: expected multiply \| divide, got \'x/255\''):
        load_config(None, ['data.pixel_scaling=x/255'])


# --- data.pseudo_labels: precomputed -----------------------------------------------------------------------------

def a03c1ea_correction_losses(net, img_list, img_mask_list, label):
    """SCNet.forward of a03c1ea with ``img_mask_list`` given, in its order of operations."""
    up = lambda x: F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=True)  # noqa: E731
    down = lambda x: F.interpolate(x, scale_factor=0.25, mode='bilinear', align_corners=True)  # noqa: E731
    ce = lambda x, y: F.cross_entropy(x, y, ignore_index=255)  # noqa: E731
    img_1_feat, warp_img = net.deeplab(img_list[0]), down(img_list[0])
    img_2_mask = img_mask_list[1]
    flow = net.flownet(torch.cat([img_list[1], img_list[0]], dim=1))
    img_2_feat, warp_img = net.warpnet(img_1_feat, flow), net.warpnet(warp_img, flow)
    prop_2 = up(img_2_feat)
    loss_semantic = ce(prop_2, img_2_mask)
    dm_2 = up(net.dmnet(warp_img, down(img_list[1])))
    cc_2 = up(net.cfnet(img_list[1]))
    loss_cfnet = torch.mean(F.cross_entropy(cc_2, img_2_mask, ignore_index=255, reduction='none') * dm_2)
    loss_semantic = loss_semantic + ce(prop_2 * (1 - dm_2) + cc_2 * dm_2, img_2_mask)
    flow = net.flownet(torch.cat([img_list[2], img_list[1]], dim=1))
    img_3_feat, warp_img = net.warpnet(img_2_feat, flow), net.warpnet(warp_img, flow)
    prop_3 = up(img_3_feat)
    loss_semantic = loss_semantic + ce(prop_3, label)
    dm_3 = up(net.dmnet(warp_img, down(img_list[2])))
    cc_3 = up(net.cfnet(img_list[2]))
    loss_cfnet = loss_cfnet + torch.mean(F.cross_entropy(cc_3, label, ignore_index=255, reduction='none') * dm_3)
    loss_semantic = loss_semantic + ce(prop_3 * (1 - dm_3) + cc_3 * dm_3, label)
    return loss_semantic / 4, loss_cfnet / 2


def a03c1ea_dmnet_loss(net, img_list, img_mask_list):
    """SCNet_dmnet.forward of a03c1ea with ``img_mask_list`` given, in its order of operations."""
    up = lambda x: F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=True)  # noqa: E731
    down = lambda x: F.interpolate(x, scale_factor=0.25, mode='bilinear', align_corners=True)  # noqa: E731
    feat, warp_im = net.deeplab(img_list[0]), down(img_list[0])
    loss = 0.0
    for k in (1, 2):
        flow = net.flownet(torch.cat([img_list[k], img_list[k - 1]], dim=1))
        feat, warp_im = net.warpnet(feat, flow), net.warpnet(warp_im, flow)
        propagated = torch.argmax(up(feat), dim=1, keepdim=True)
        dm = up(net.dmnet(warp_im, down(img_list[k])))
        loss = loss + F.binary_cross_entropy(dm, (propagated != img_mask_list[k].unsqueeze(1)).float())
    return loss / 2


def make_masks(config, *opts):
    """tools/make_pseudo_labels.py's main: its UserError reaches the test (the command line prints it)."""
    tool = load_tool('make_pseudo_labels')
    return tool.main(tool.parse_args([config, '--quiet', '--device', 'cpu', *opts]))


@pytest.fixture(scope='module')
def mask_setup(tmp_path_factory, synthetic_root):
    """``(config, net, data config)``: the tiny synthetic set (whole frames, no workers), a varied tiny SCNet saved
    as ``init.deeplab``, and its masks written once by tools/make_pseudo_labels.py (tests leave them as found)."""
    folder = tmp_path_factory.mktemp('masks')
    net = varied_tiny_scnet()
    checkpoint = str(folder / 'deeplab.pth')
    torch.save({'model': net.state_dict()}, checkpoint)
    lists = os.path.join(synthetic_root, 'list')
    data = {'name': 'synthetic', 'root': synthetic_root, 'train_list': os.path.join(lists, 'train.txt'),
            'val_list': os.path.join(lists, 'val.txt'), 'crop_size': None, 'num_workers': 0, 'pin_memory': False,
            'pseudo_labels': 'precomputed', 'pseudo_label_root': str(folder / 'masks')}
    config = str(folder / 'config.yaml')
    with open(config, 'w') as f:
        yaml.safe_dump({'model': tiny_model_cfg(), 'data': data, 'init': {'deeplab': checkpoint}}, f)
    assert make_masks(config) == 0
    return config, net, load_config(config)['data']


def test_precomputed_masks_are_deeplabs_whole_frame_labels_and_give_the_online_losses(mask_setup):
    config, net, data_cfg = mask_setup
    online = build_dataset(dict(data_cfg, pseudo_labels='online', intermediate='original'), 'train', 'triplet',
                           seed=666)
    precomputed = build_dataset(dict(data_cfg, intermediate='original'), 'train', 'triplet', seed=666)
    for idx in (0, 13):  # whole frames: DeepLab sees the same pixels in both paths
        frames, label = online[idx]
        frames_p, label_p, masks = precomputed[idx]
        assert torch.equal(frames, frames_p) and torch.equal(label, label_p)
        with torch.no_grad():
            whole = torch.stack([net.segment(frame[None])[0] for frame in frames[1:]])
            assert torch.equal(masks, whole)  # [t-i, t]: DeepLab's argmax of each whole frame
            batch = frames[None], label[None]
            got, online_losses = net(*batch, pseudo_labels=masks[None]), net(*batch)
            assert all(torch.equal(got[k], online_losses[k]) for k in got)
            expected = a03c1ea_correction_losses(net, list(frames[None].unbind(1)), [None, masks[None, 0], None],
                                                 label[None])
            assert torch.allclose(got['loss_semantic'], expected[0], rtol=1e-6)
            assert torch.allclose(got['loss_cfnet'], expected[1], rtol=1e-6)


def test_dmnet_stage_learns_from_the_masks_as_a03c1ea():
    torch.manual_seed(0)
    net = SCNetDMNet(5, **{k: v for k, v in TINY_WIDTHS.items() if k != 'cfnet'}).eval()
    frames = torch.rand(2, 3, 3, 32, 64)
    masks = torch.randint(0, 5, (2, 2, 32, 64))
    with torch.no_grad():
        got = net(frames, pseudo_labels=masks)['loss_dmnet']
        expected = a03c1ea_dmnet_loss(net, list(frames.unbind(1)), [None, masks[:, 0], masks[:, 1]])
        online = net(frames)['loss_dmnet']
    assert torch.allclose(got, expected, rtol=1e-6)
    assert not torch.allclose(got, online)  # the masks are used, not DeepLab's labels of the frames


def window_of(crop, full):
    """``(top, left, flipped)`` where ``crop (C, h, w)`` sits in ``full (C, H, W)``, found by exact comparison."""
    h, w = crop.shape[-2:]
    for flipped in (False, True):
        seen = crop.flip(-1) if flipped else crop
        for top in range(full.shape[-2] - h + 1):
            for left in range(full.shape[-1] - w + 1):
                if torch.equal(full[..., top:top + h, left:left + w], seen):
                    return top, left, flipped
    raise AssertionError('crop not found in the frame')


def test_masks_are_cropped_and_flipped_with_the_frames(mask_setup):
    """a03c1ea: ``randomcrop([img_1, img_1_mask, img_2, img_2_mask, img_3, img_3_mask, gt])``, one window for all;
    and the masks do not change the draws: the frames and label are those the online path gives."""
    _, _, data_cfg = mask_setup
    cfg = dict(data_cfg, crop_size=[32, 48], hflip=True, intermediate='original')
    precomputed = build_dataset(cfg, 'train', 'triplet', seed=666)
    online = build_dataset(dict(cfg, pseudo_labels='online'), 'train', 'triplet', seed=666)
    root, mask_root = cfg['root'], cfg['pseudo_label_root']
    flips = set()
    for idx, seed in ((0, 1), (5, 2), (12, 3), (17, 5)):
        torch.manual_seed(seed)
        frames, label, masks = precomputed[idx]
        torch.manual_seed(seed)
        frames_online, label_online = online[idx]
        assert torch.equal(frames, frames_online) and torch.equal(label, label_online)
        entry, offset = precomputed.frames[idx // 9], precomputed.intermediates[idx]
        top, left, flipped = window_of(frames[2], read_frame(os.path.join(root, entry.image)))
        flips.add(flipped)
        for mask, frame_offset in zip(masks, (-offset, 0)):
            full = torch.from_numpy(cv2.imread(mask_path(mask_root, entry.frame(frame_offset)), 0).astype(np.int64))
            window = full[top:top + 32, left:left + 48]
            assert torch.equal(mask, window.flip(-1) if flipped else window)
    assert flips == {False, True}


def test_engine_passes_the_masks_to_the_network(mask_setup):
    _, net, data_cfg = mask_setup
    frames, label, masks = build_dataset(dict(data_cfg, intermediate='original'), 'train', 'triplet', seed=666)[3]
    batch = (frames[None], label[None], masks[None])
    changed = masks.clone()
    changed[0] = 0
    dmnet_stage_net = build_scnet(tiny_model_cfg(), 'dmnet').eval()
    dmnet_stage_net.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith('cfnet.')})
    with torch.no_grad():
        for name in ('correction', 'dmnet'):
            stage = stages.get_stage(name)
            model = net if name == 'correction' else dmnet_stage_net
            got = stage.losses(model, batch, 'cpu')
            kwargs = {'pseudo_labels': masks[None]}
            direct = model(frames[None], label[None], **kwargs) if name == 'correction' else model(frames[None],
                                                                                                     **kwargs)
            assert all(torch.equal(got[k], direct[k]) for k in got)
            other = stage.losses(model, (frames[None], label[None], changed[None]), 'cpu')
            assert any(not torch.equal(got[k], other[k]) for k in got)


def test_make_pseudo_labels_resumes_and_refuses_what_is_not_its(mask_setup, tmp_path):
    config, _, data_cfg = mask_setup
    root = data_cfg['pseudo_label_root']
    masks = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
                   if f.endswith('.png'))
    assert len(masks) == 2 * 10  # 2 training snippets, frames t-9 .. t
    first = os.path.join(root, masks[0])
    os.remove(first)
    before = {m: os.stat(os.path.join(root, m)).st_mtime_ns for m in masks[1:]}
    make_masks(config)  # continues: writes only the missing one
    assert os.path.isfile(first)
    assert {m: os.stat(os.path.join(root, m)).st_mtime_ns for m in masks[1:]} == before

    # Another DeepLab file: the folder's masks belong to the first one.
    other = str(tmp_path / 'other.pth')
    torch.save({'model': varied_tiny_scnet(seed=1).state_dict()}, other)
    with pytest.raises(UserError, match='holds masks made with other settings \\(deeplab_sha256'):
        make_masks(config, '--opts', f'init.deeplab={other}')
    # A folder of someone else's files is left alone.
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    with pytest.raises(UserError, match='holds files and is not written by DAVSS'):
        make_masks(config, '--opts', f'data.pseudo_label_root={foreign}')
    assert os.listdir(foreign) == ['notes.txt']
    with pytest.raises(UserError, match='data.pseudo_label_root: not set'):
        make_masks(config, '--opts', 'data.pseudo_label_root=null')


def test_training_refuses_missing_masks(synthetic_data_cfg, tmp_path):
    cfg = dict(synthetic_data_cfg, pseudo_labels='precomputed', pseudo_label_root=str(tmp_path / 'none'))
    with pytest.raises(UserError, match=f'holds no {MARKER}; write the masks first'):
        build_dataset(cfg, 'train', 'triplet')
    with pytest.raises(UserError, match='pseudo_label_root: not set'):
        build_dataset(dict(cfg, pseudo_label_root=None), 'train', 'triplet')
    with pytest.raises(UserError, match=r'data\.pseudo_labels: expected online \| precomputed'):
        load_config(None, ['data.pseudo_labels=cached'])
    assert len(build_dataset(cfg, 'val', 'pda')) == 1  # evaluation never needs them


# --- the experiments -------------------------------------------------------------------------------------------

def flat(cfg, prefix=''):
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flat(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


RELEASE_CHANGES = {
    'dmnet_cityscapes': {'data.pseudo_labels': 'precomputed',
                         'data.pseudo_label_root': 'data/pseudo_labels/cityscapes'},
    'spatial_correction_cityscapes': {'data.pseudo_labels': 'precomputed',
                                      'data.pseudo_label_root': 'data/pseudo_labels/cityscapes',
                                      'init.dmnet': 'saved_model/dmnet_cityscapes_release/best.pth',
                                      'eval.align_corners': [True, False]},
    'dmnet_camvid': {'data.hflip': False},
    'spatial_correction_camvid': {'init.dmnet': 'saved_model/dmnet_camvid_release/final.pth'},
}


@pytest.mark.parametrize('name', sorted(RELEASE_CHANGES))
def test_release_experiments_differ_from_the_paper_ones_by_the_recipe_only(name, monkeypatch):
    for variable in ('SAVE_ROOT', 'PSEUDO_LABEL_ROOT'):
        monkeypatch.delenv(variable, raising=False)
    paper = flat(load_config(os.path.join(REPO_ROOT, 'exp', name, 'config.yaml')))
    release = flat(load_config(os.path.join(REPO_ROOT, 'exp', f'{name}_release', 'config.yaml')))
    assert release.pop('experiment') == f'{name}_release' and paper.pop('experiment') == name
    assert {k: v for k, v in release.items() if paper[k] != v} == RELEASE_CHANGES[name]
    for script in os.listdir(os.path.join(REPO_ROOT, 'exp', name, 'script')):
        assert os.path.isfile(os.path.join(REPO_ROOT, 'exp', f'{name}_release', 'script', script)), script


def test_paper_configs_draw_and_scale_as_the_original_and_synthetic_as_before():
    for name in ('dmnet_cityscapes', 'spatial_correction_cityscapes', 'dmnet_camvid', 'spatial_correction_camvid'):
        cfg = load_config(os.path.join(REPO_ROOT, 'exp', name, 'config.yaml'))
        assert cfg['model']['init'] == 'original' and cfg['data']['pixel_scaling'] == 'divide', name
        assert cfg['data']['pseudo_labels'] == 'online', name
    for stage in ('segmentation', 'flow', 'dmnet', 'correction'):
        cfg = load_config(os.path.join(REPO_ROOT, 'exp', 'synthetic', f'{stage}.yaml'))
        assert cfg['model']['init'] == 'default' and cfg['data']['pixel_scaling'] == 'multiply', stage
        assert cfg['data']['pseudo_labels'] == 'online', stage
