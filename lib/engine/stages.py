"""The four training stages as data: what network they build, what it learns from, what is frozen, how it is
initialised and validated.

    segmentation  DeepLabV3Plus alone, per-frame cross-entropy                      ('image' data)
    flow          FlowNetS alone, end-point error on ground-truth flow              ('flow' data, synthetic)
    dmnet         SCNetDMNet: DMNet learns where propagation goes wrong; DeepLab and FlowNet frozen   ('triplet')
    correction    SCNet: FlowNet fine-tuned and CFNet trained; DeepLab and DMNet frozen              ('triplet')

Every stage saves its network in the SCNet key layout, so the output of one stage is the ``init:`` of the next:
segmentation -> ``init.deeplab``, flow -> ``init.flownet``, dmnet -> ``init.dmnet`` (its DeepLab and FlowNet
come along unchanged), correction -> the full model of ``tools/test_pda.py``.
"""
from dataclasses import dataclass
from typing import Callable, Tuple

from lib.dataset import build_dataset, build_eval_loader
from lib.engine import validation
from lib.engine.optim import parameter_list
from lib.engine.stage_nets import FlowStageNet, SegmentationStageNet
from lib.model.checkpoint import PRETRAINED, load_part, load_pretrained
from lib.model.scnet import build_scnet
from lib.utils.errors import UserError


def _validate_segmentation(net, loader, cfg, device, progress):
    return validation.validate_segmentation(net, loader, cfg['model']['n_classes'], device, progress)


def _validate_flow(net, loader, cfg, device, progress):
    return validation.validate_flow(net, loader, device, progress)


def _validate_distortion(net, loader, cfg, device, progress):
    return validation.validate_distortion(net, loader, list(cfg['train']['val_distances']), device, progress)


def _validate_pda(net, loader, cfg, device, progress):
    return validation.validate_pda(net, loader, cfg['model']['n_classes'], list(cfg['train']['val_distances']),
                                   device, progress)


def _segmentation_net(model_cfg):
    return SegmentationStageNet(model_cfg['n_classes'], model_cfg['align_corners'], dict(model_cfg['deeplab']))


def _flow_net(model_cfg):
    return FlowStageNet(model_cfg['align_corners'], dict(model_cfg['flownet']))


def _dmnet_net(model_cfg):
    return build_scnet(model_cfg, 'dmnet')


def _correction_net(model_cfg):
    return build_scnet(model_cfg, 'correction')


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
        extra = {}
        if len(batch) > 2:  # data.pseudo_labels: precomputed; the masks of t-i and t come with the triplets
            extra['pseudo_labels'] = batch[2].to(device, non_blocking=True)
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
        name='segmentation', build_net=_segmentation_net, data_mode='image', net_inputs=2, trainable=('deeplab',),
        lr_keys=('lr',), frozen=(), required_init=(), loss_names=('loss_ce',), val_mode='image',
        validate=_validate_segmentation, score='miou', higher_is_better=True),
    'flow': Stage(
        name='flow', build_net=_flow_net, data_mode='flow', net_inputs=2, trainable=('flownet',), lr_keys=('lr',),
        frozen=(), required_init=(), loss_names=('loss_epe',), val_mode='flow', validate=_validate_flow,
        score='epe', higher_is_better=False),
    'dmnet': Stage(
        name='dmnet', build_net=_dmnet_net, data_mode='triplet', net_inputs=1, trainable=('dmnet',), lr_keys=('lr',),
        frozen=('deeplab', 'flownet'), required_init=('deeplab', 'flownet'), loss_names=('loss_dmnet',),
        val_mode='pda', validate=_validate_distortion, score='l1', higher_is_better=False),
    'correction': Stage(
        name='correction', build_net=_correction_net, data_mode='triplet', net_inputs=2,
        trainable=('flownet', 'cfnet'), lr_keys=('lr', 'cfnet_lr'), frozen=('deeplab', 'dmnet'),
        required_init=('deeplab', 'flownet', 'dmnet'), loss_names=('loss_semantic', 'loss_cfnet'), val_mode='pda',
        validate=_validate_pda, score='miou', higher_is_better=True),
}


def get_stage(name):
    if name not in STAGES:
        raise ValueError(f'stage: expected one of {" | ".join(STAGES)}, got "{name}"')
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
    source}``; a missing file, a mismatch or a required sub-network left uncovered is a UserError."""
    check_init_config(stage, init_cfg)
    sources = {}
    sub_networks = [name for name in ('deeplab', 'flownet', 'dmnet', 'cfnet') if hasattr(net, name)]
    if init_cfg['pretrained']:
        wanted = [name for name in PRETRAINED if name in stage.required_init]
        for name in load_pretrained(net, init_cfg['pretrained'], 'init.pretrained', required=wanted):
            sources[name] = init_cfg['pretrained']
    for name in ('deeplab', 'flownet', 'dmnet'):
        if not init_cfg[name]:
            continue
        if name not in sub_networks:
            raise UserError(f'init.{name}: the {stage.name} stage has no {name} to initialise')
        load_part(getattr(net, name), name, init_cfg[name], f'init.{name}')
        sources[name] = init_cfg[name]
    return sources
