"""The four training stages as data: what network they build, what it learns from, what is frozen, how it is
initialised and validated.

    segmentation  DeepLabV3Plus alone, per-frame cross-entropy                      ('image' data)
    flow          FlowNetS alone, end-point error on ground-truth flow              ('flow' data, synthetic)
    dmnet         SCNetDMNet: DMNet learns where propagation goes wrong; DeepLab and FlowNet frozen   ('triplet')
    correction    SCNet: FlowNet fine-tuned and CFNet trained; DeepLab and DMNet frozen              ('triplet')

Every stage saves in the SCNet key layout, so its output is the next one's ``init:`` (``init.deeplab``,
``init.flownet``, ``init.dmnet``); the correction stage's is the full model of ``tools/test_pda.py``.
"""
from dataclasses import dataclass
from typing import Callable, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from lib.dataset import build_dataset, build_eval_loader
from lib.eval.pda import evaluate_pda
from lib.model.checkpoint import PRETRAINED, load_part, load_pretrained
from lib.model.deeplabv3plus import DeepLabV3Plus
from lib.model.flownet import FlowNetS
from lib.model.scnet import build_scnet
from lib.train.optim import parameter_list
from lib.utils import distributed
from lib.utils.errors import UserError
from lib.utils.metrics import IGNORE_INDEX, ConfusionMatrix


def set_bn_momentum(module, momentum):
    """Give every BatchNorm2d of ``module`` this momentum (config ``train.bn_momentum``)."""
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.momentum = momentum


def upsample_to(x, size, align_corners):
    """(N, C, h, w) -> (N, C, *size), bilinear."""
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=align_corners)


class SegmentationStageNet(nn.Module):
    """The key-frame network trained per frame with cross-entropy (255 = ignore) at full resolution;
    ``align_corners``: the x4 resize of its logits to the label size; ``deeplab``: :class:`DeepLabV3Plus` kwargs."""

    def __init__(self, n_classes, align_corners=True, deeplab=None):
        super().__init__()
        self.align_corners = align_corners
        self.deeplab = DeepLabV3Plus(n_classes, **(deeplab or {}))

    def predict(self, image):
        """(N, 3, H, W) -> (N, C, H, W) logits upsampled to the frame size."""
        return upsample_to(self.deeplab(image), image.shape[-2:], self.align_corners)

    def forward(self, image, label):
        """
        Args:
            image: (N, 3, H, W) RGB in [0, 1].
            label: (N, H, W) int64, 255 = ignore.
        Returns:
            ``{'loss_ce': 0-dim}``: mean cross-entropy over the labelled pixels.
        """
        return {'loss_ce': F.cross_entropy(self.predict(image), label, ignore_index=IGNORE_INDEX)}


def quarter_resolution_flow(flow, size, align_corners):
    """Ground-truth flow (N, 2, H, W) in full-resolution pixels -> (N, 2, *size) in 1/4-resolution pixels: resized
    as the model resizes frames, divided by 4 (4 full-resolution pixels are one pixel of the 1/4 grid)."""
    return upsample_to(flow, size, align_corners) / 4.0


def end_point_error(pred, target):
    """(N, 2, h, w) x 2 -> (N, h, w) Euclidean distance between flow vectors."""
    return torch.linalg.vector_norm(pred - target, dim=1)


class FlowStageNet(nn.Module):
    """FlowNetS trained on ground-truth flow with the end-point error on the 1/4 grid, where the flow warps the
    logits (:func:`quarter_resolution_flow`, resize convention ``align_corners``); validation also reports the usual
    full-resolution EPE.  ``flownet``: :class:`FlowNetS` kwargs."""

    def __init__(self, align_corners=True, flownet=None):
        super().__init__()
        self.align_corners = align_corners
        self.flownet = FlowNetS(**(flownet or {}))

    def predict(self, frames):
        """(N, 2, 3, H, W) [previous, current] -> (N, 2, H/4, W/4) backward flow in 1/4-resolution pixels."""
        previous, current = frames.unbind(1)
        return self.flownet(torch.cat((current, previous), dim=1))

    def forward(self, frames, flow):
        """
        Args:
            frames: (N, 2, 3, H, W) [t-1, t], RGB in [0, 1].
            flow: (N, 2, H, W) ground-truth backward flow (dx, dy) in full-resolution pixels.
        Returns:
            ``{'loss_epe': 0-dim}``: mean end-point error on the 1/4 grid, in 1/4-resolution pixels.
        """
        pred = self.predict(frames)  # (N, 2, H/4, W/4)
        target = quarter_resolution_flow(flow, pred.shape[-2:], self.align_corners)
        return {'loss_epe': end_point_error(pred, target).mean()}


def _progress(loader, enabled):
    return tqdm(loader, desc='val', leave=False, disable=not (enabled and distributed.is_main_process()))


@torch.no_grad()
def validate_segmentation(net, loader, cfg, device, progress=True):
    """Per-frame mIoU of ``net.deeplab`` at full resolution; returns ``{'miou', 'iou'}``."""
    net.eval()
    meter = ConfusionMatrix(cfg['model']['n_classes'], device=device)
    for image, label in _progress(loader, progress):
        image, label = image.to(device), label.to(device)
        meter.update(net.predict(image).argmax(1), label)
    meter.all_reduce()
    return {'miou': float(meter.miou()), 'iou': meter.iou().tolist()}


@torch.no_grad()
def validate_flow(net, loader, cfg, device, progress=True):
    """End-point errors of ``net.flownet``: ``epe`` on the 1/4 grid in 1/4-resolution pixels (the training loss)
    and ``epe_full`` at full resolution in full-resolution pixels (prediction upsampled x4, values x4)."""
    net.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # quarter EPE sum, pixels, full EPE sum, pixels
    for frames, flow in _progress(loader, progress):
        frames, flow = frames.to(device), flow.to(device)
        pred = net.predict(frames)  # (N, 2, H/4, W/4)
        quarter = end_point_error(pred, quarter_resolution_flow(flow, pred.shape[-2:], net.align_corners))
        full = end_point_error(upsample_to(pred, flow.shape[-2:], net.align_corners) * 4.0, flow)
        sums += torch.tensor([quarter.sum().item(), quarter.numel(), full.sum().item(), full.numel()],
                             dtype=torch.float64, device=device)
    distributed.all_reduce_sum(sums)
    return {'epe': (sums[0] / sums[1]).item(), 'epe_full': (sums[2] / sums[3]).item()}


def _distortion_l1(net, frames, distance):
    """Mean |distortion - disagreement| at the last frame of ``frames`` (N, T, 3, H, W), key at T-1-distance."""
    last = frames.shape[1] - 1
    state = net.key_frame(frames[:, last - distance])
    for j in range(last - distance, last):
        state = net.propagate(state, net.estimate_flow(frames[:, j + 1], frames[:, j]))
    current = frames[:, last]
    distortion = net.to_full_resolution(net.distortion(state, current))  # (N, 1, H, W)
    disagree = net.to_full_resolution(state.logits).argmax(1) != net.segment(current)  # (N, H, W)
    return (distortion[:, 0] - disagree.float()).abs()  # (N, H, W)


@torch.no_grad()
def validate_distortion(net, loader, cfg, device, progress=True):
    """DMNet check on a ``'pda'`` loader: ``{'l1_d<d>': ..., 'l1': mean over distances}`` (lower is better)."""
    net.eval()
    distances = list(cfg['train']['val_distances'])
    sums = torch.zeros(len(distances), 2, dtype=torch.float64, device=device)  # per distance: error sum, pixels
    for frames, _ in _progress(loader, progress):
        frames = frames.to(device)
        for i, d in enumerate(distances):
            error = _distortion_l1(net, frames, d)
            sums[i, 0] += error.sum().item()
            sums[i, 1] += error.numel()
    distributed.all_reduce_sum(sums)
    per_distance = (sums[:, 0] / sums[:, 1]).tolist()
    return {**{f'l1_d{d}': value for d, value in zip(distances, per_distance)},
            'l1': sum(per_distance) / len(per_distance)}


def validate_pda(net, loader, cfg, device, progress=True):
    """PDA mIoU of the corrected predictions: ``{'miou_d<d>': ..., 'miou': mean over distances}``."""
    out = evaluate_pda(net, loader, cfg['model']['n_classes'], distances=list(cfg['train']['val_distances']),
                       device=device, per_frame=False, propagation_only=False, progress=progress)
    return {**{f'miou_d{d}': value for d, value in zip(out['distances'], out['davss']['miou'])},
            'miou': out['davss']['mean_miou']}


@dataclass(frozen=True)
class Stage:
    name: str
    build_net: Callable  # model_cfg -> nn.Module whose forward returns {loss name: 0-dim loss}
    data_mode: str  # training samples: 'image' | 'flow' | 'triplet'
    net_inputs: int  # how many items of a batch the forward takes (DMNet's target comes from DeepLab, not labels)
    trainable: Tuple[str, ...]  # sub-networks in the optimiser ...
    lr_keys: Tuple[str, ...]  # ... and the train: key of each one's learning rate
    frozen: Tuple[str, ...]  # sub-networks kept fixed (requires_grad False, eval mode)
    required_init: Tuple[str, ...]  # sub-networks that must come from a checkpoint
    loss_names: Tuple[str, ...]  # the keys of the forward's loss dict, in the order they are summed and logged
    val_mode: str  # validation samples
    validate: Callable  # (net, loader, cfg, device, progress) -> metrics
    score: str  # the metric that selects best.pth
    higher_is_better: bool

    def param_groups(self, net, train_cfg):
        mode = train_cfg.get('param_lists', 'unique')
        return [{'name': name, 'params': parameter_list(getattr(net, name), mode), 'lr': float(train_cfg[key])}
                for name, key in zip(self.trainable, self.lr_keys)]

    def losses(self, net, batch, device):
        """Forward one batch through the (possibly DDP-wrapped) net: ``{loss name: 0-dim tensor}``."""
        inputs = [x.to(device, non_blocking=True) for x in batch[:self.net_inputs]]
        # data.pseudo_labels: precomputed: the masks of t-i and t come with the triplets
        extra = {'pseudo_labels': batch[2].to(device, non_blocking=True)} if len(batch) > 2 else {}
        out = net(*inputs, **extra)
        if set(out) != set(self.loss_names):
            raise ValueError(f'{self.name} stage: the network returned the losses {sorted(out)}, expected '
                             f'{sorted(self.loss_names)}')
        return {name: out[name].reshape(()) for name in self.loss_names}

    def val_loader(self, cfg, split):
        """The loader :attr:`validate` iterates for ``split``: this rank's share of its first
        ``train.val_max_clips`` samples."""
        data_cfg, train_cfg = cfg['data'], cfg['train']
        return build_eval_loader(build_dataset(data_cfg, split, self.val_mode), int(train_cfg['val_batch_size']),
                                 int(data_cfg['num_workers']), train_cfg['val_max_clips'])


STAGES = {
    'segmentation': Stage(
        name='segmentation', build_net=lambda m: SegmentationStageNet(m['n_classes'], m['align_corners'],
                                                                      dict(m['deeplab'])),
        data_mode='image', net_inputs=2, trainable=('deeplab',), lr_keys=('lr',), frozen=(), required_init=(),
        loss_names=('loss_ce',), val_mode='image', validate=validate_segmentation, score='miou', higher_is_better=True),
    'flow': Stage(
        name='flow', build_net=lambda m: FlowStageNet(m['align_corners'], dict(m['flownet'])), data_mode='flow',
        net_inputs=2, trainable=('flownet',), lr_keys=('lr',), frozen=(), required_init=(), loss_names=('loss_epe',),
        val_mode='flow', validate=validate_flow, score='epe', higher_is_better=False),
    'dmnet': Stage(
        name='dmnet', build_net=lambda m: build_scnet(m, 'dmnet'), data_mode='triplet', net_inputs=1,
        trainable=('dmnet',), lr_keys=('lr',), frozen=('deeplab', 'flownet'), required_init=('deeplab', 'flownet'),
        loss_names=('loss_dmnet',), val_mode='pda', validate=validate_distortion, score='l1', higher_is_better=False),
    'correction': Stage(
        name='correction', build_net=lambda m: build_scnet(m, 'correction'), data_mode='triplet', net_inputs=2,
        trainable=('flownet', 'cfnet'), lr_keys=('lr', 'cfnet_lr'), frozen=('deeplab', 'dmnet'),
        required_init=('deeplab', 'flownet', 'dmnet'), loss_names=('loss_semantic', 'loss_cfnet'), val_mode='pda',
        validate=validate_pda, score='miou', higher_is_better=True),
}


def get_stage(name):
    if name not in STAGES:
        raise UserError(f'stage: expected one of {" | ".join(STAGES)}, got "{name}"')
    return STAGES[name]


def check_init_config(stage, init_cfg):
    """Fail before any work when a sub-network the stage requires has no checkpoint configured."""
    covered = {name for name in stage.required_init if init_cfg[name]}
    if init_cfg['pretrained']:
        covered |= set(PRETRAINED)  # verified when it is loaded
    missing = [name for name in stage.required_init if name not in covered]
    if missing:
        keys = ', '.join(f'init.{name}' for name in missing)
        hint = ' (or init.pretrained)' if set(missing) & {'deeplab', 'flownet'} else ''
        raise UserError(f'init: the {stage.name} stage needs trained {", ".join(missing)} weights; '
                        f'set {keys}{hint}')


def initialise(stage, net, init_cfg):
    """Load the ``init:`` checkpoints into ``net``: first ``init.pretrained`` (DeepLab + FlowNet, published
    layout), then ``init.deeplab`` / ``init.flownet`` / ``init.dmnet`` over it.  Returns ``{sub-network:
    source}``; a missing file or a mismatch is a UserError (:func:`check_init_config` ran before)."""
    sources = {}
    if init_cfg['pretrained']:
        wanted = [name for name in PRETRAINED if name in stage.required_init]
        for name in load_pretrained(net, init_cfg['pretrained'], 'init.pretrained', required=wanted):
            sources[name] = init_cfg['pretrained']
    for name in ('deeplab', 'flownet', 'dmnet'):
        if not init_cfg[name]:
            continue
        if not hasattr(net, name):
            raise UserError(f'init.{name}: the {stage.name} stage has no {name} to initialise')
        load_part(getattr(net, name), name, init_cfg[name], f'init.{name}')
        sources[name] = init_cfg[name]
    return sources
