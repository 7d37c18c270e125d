"""SCNet: the DAVSS video segmentation system (key-frame DeepLab, flow propagation, distortion-aware correction).

Inference is a short protocol shared by evaluation, video inference and benchmarks::

    state = net.key_frame(key_image)                          # DeepLab logits + the 1/4 key image
    for prev, cur in consecutive_frames:
        state = net.propagate(state, net.estimate_flow(cur, prev))
    out = net.correct(state, cur)                             # out['merged']: the corrected logits

The training forwards reuse exactly these steps and return the paper's losses as a dict by name."""
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.model.cfnet import CFNet
from lib.model.deeplabv3plus import DeepLabV3Plus
from lib.model.dmnet import DMNet
from lib.model.flownet import FlowNetS
from lib.model.layers import check_multiple_of_4
from lib.model.original_init import draw_as_original
from lib.ops import resample2d
from lib.utils.metrics import IGNORE_INDEX

INIT_MODES = ('default', 'original')


class PropagationState(NamedTuple):
    """What is carried from the key frame to the current frame, both on the 1/4-resolution grid."""
    logits: torch.Tensor  # (N, C, H/4, W/4)
    image: torch.Tensor  # (N, 3, H/4, W/4), the key image warped along (DMNet compares it to the current frame)


def merge_logits(propagated, distortion, correction):
    """DAVSS's merge of (N, C, h, w) logits by the (N, 1, h, w) distortion map: the propagated logits where DMNet
    sees no distortion, CFNet's where it sees it."""
    return propagated * (1 - distortion) + correction * distortion


class _PropagationNet(nn.Module):
    """The parts and inference steps common to both training stages.  ``align_corners``: the convention of every
    resize around the propagation (the published models were trained with True; the original's last Cityscapes test
    script used False).  ``init``: ``'default'`` or ``'original'`` (:mod:`lib.model.original_init`)."""

    def __init__(self, n_classes, align_corners, deeplab, flownet, cfnet, init='default'):
        super().__init__()
        if init not in INIT_MODES:
            raise ValueError(f'model.init: expected one of {" | ".join(INIT_MODES)}, got "{init}"')
        start = torch.random.get_rng_state() if init == 'original' else None
        self.n_classes, self.align_corners = n_classes, align_corners
        # Registration order is the checkpoint key order: deeplab, flownet, [cfnet], dmnet.
        self.deeplab = DeepLabV3Plus(n_classes, **(deeplab or {}))
        self.flownet = FlowNetS(**(flownet or {}))
        self.cfnet = CFNet(n_classes, **cfnet) if cfnet is not None else None
        self.dmnet = DMNet()
        self.warpnet = Warp()
        if init == 'original':
            torch.random.set_rng_state(start)  # draw again from where the original's SCNet() began
            draw_as_original(self)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train()

    def train(self, mode=True):
        """Each stage's ``frozen_modules()`` stay in eval mode (their BatchNorm statistics must not move)."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def to_quarter_resolution(self, image):
        """(N, C, H, W) -> (N, C, H/4, W/4) with the model's resize convention."""
        h, w = image.shape[-2:]
        return F.interpolate(image, size=(h // 4, w // 4), mode='bilinear', align_corners=self.align_corners)

    def to_full_resolution(self, x):
        """(N, C, h, w) -> (N, C, 4h, 4w) with the model's resize convention."""
        h, w = x.shape[-2:]
        return F.interpolate(x, size=(4 * h, 4 * w), mode='bilinear', align_corners=self.align_corners)

    def key_frame(self, image):
        """(N, 3, H, W) key frame, RGB in [0, 1] -> PropagationState(DeepLab's logits, the image), both at 1/4."""
        check_multiple_of_4(image, type(self).__name__)
        return PropagationState(self.deeplab(image), self.to_quarter_resolution(image))

    def estimate_flow(self, current, previous):
        """(N, 3, H, W) x 2 -> (N, 2, H/4, W/4) backward flow carrying ``previous`` onto ``current``."""
        return self.flownet(torch.cat((current, previous), dim=1))

    def propagate(self, state, flow):
        """One step: warp the logits and the 1/4 key image by ``flow`` (N, 2, H/4, W/4)."""
        return PropagationState(self.warpnet(state.logits, flow), self.warpnet(state.image, flow))

    def distortion(self, state, current):
        """(N, 1, H/4, W/4) distortion map of the propagated state with respect to ``current`` (N, 3, H, W)."""
        check_multiple_of_4(current, type(self).__name__)
        return self.dmnet(state.image, self.to_quarter_resolution(current))

    def correct(self, state, current, correction=None, full_resolution=True):
        """Merge the propagated logits of ``state`` with CFNet's logits of ``current`` (N, 3, H, W) (or the given
        ``correction`` (N, C, H/4, W/4)) where DMNet finds distortion; ``full_resolution``: merge at (H, W) after x4
        upsampling, as the paper's code (False: at 1/4, cheaper).  Returns a dict of ``merged``, ``propagated``,
        ``correction`` (N, C, ., .) and ``distortion`` (N, 1, ., .), all at (H, W) or all at (H/4, W/4)."""
        distortion = self.distortion(state, current)  # (N, 1, H/4, W/4)
        if correction is None:
            if self.cfnet is None:
                raise ValueError(f'{type(self).__name__}.correct: this model has no CFNet; pass correction=')
            correction = self.cfnet(current)  # (N, C, H/4, W/4)
        propagated = state.logits
        if full_resolution:
            propagated = self.to_full_resolution(propagated)
            distortion = self.to_full_resolution(distortion)
            correction = self.to_full_resolution(correction)
        merged = merge_logits(propagated, distortion, correction)
        return {'merged': merged, 'propagated': propagated, 'distortion': distortion, 'correction': correction}

    def segment(self, image):
        """(N, 3, H, W) -> (N, H, W) int64 labels of DeepLab on a single frame (full-resolution argmax)."""
        return self.to_full_resolution(self.deeplab(image)).argmax(dim=1)

    def check_frames(self, frames):
        if frames.dim() != 5 or frames.shape[1] != 3 or frames.shape[2] != 3:
            raise ValueError(f'{type(self).__name__}.forward: expected frames (N, 3, 3, H, W) [key, intermediate, '
                             f'target], got {tuple(frames.shape)}')
        check_multiple_of_4(frames, type(self).__name__)


def distortion_weighted_cross_entropy(correction, target, distortion):
    """CFNet's loss: per-pixel cross-entropy weighted by the distortion map.  As in the paper's code (the published
    models were trained with it), (N, H, W) times (N, 1, H, W) broadcasts to (N, N, H, W); plain for a batch of one."""
    per_pixel = F.cross_entropy(correction, target, ignore_index=IGNORE_INDEX, reduction='none')  # (N, H, W)
    return torch.mean(per_pixel * distortion)  # (N, H, W) * (N, 1, H, W) -> (N, N, H, W)


class SCNet(_PropagationNet):
    """The feature-correction stage: trains FlowNetS and CFNet; DeepLab and DMNet are frozen.  ``deeplab``,
    ``flownet``, ``cfnet``: keyword arguments of the sub-networks (e.g. ``{'width_mult': 0.125}``)."""

    def __init__(self, n_classes=19, align_corners=True, deeplab=None, flownet=None, cfnet=None, init='default'):
        super().__init__(n_classes, align_corners, deeplab, flownet, cfnet or {}, init)

    def frozen_modules(self):
        return [self.deeplab, self.dmnet]

    def forward(self, frames, label, pseudo_labels=None):
        """
        Args:
            frames: (N, 3, 3, H, W) [key, intermediate, target] frames, RGB in [0, 1].
            label: (N, H, W) int64 ground truth of the target frame (255 = ignore).
            pseudo_labels: optional (N, 2, H, W) int64 DeepLab labels of [intermediate, target] computed
                beforehand (``data.pseudo_labels: precomputed``); None runs DeepLab on the intermediate frame.
        Returns:
            dict of 0-dim losses: ``'loss_semantic'`` (mean cross-entropy of the propagated and merged logits on the
            intermediate frame against DeepLab's labels and on the target against ``label``) and ``'loss_cfnet'``.
        """
        self.check_frames(frames)
        key, intermediate, target = frames.unbind(1)  # each (N, 3, H, W)
        with torch.no_grad():  # DeepLab is frozen: no graph needed
            state = self.key_frame(key)
            pseudo_label = self.segment(intermediate) if pseudo_labels is None else pseudo_labels[:, 0]  # (N, H, W)

        loss_semantic = loss_cfnet = 0.0
        for previous, current, truth in ((key, intermediate, pseudo_label), (intermediate, target, label)):
            state = self.propagate(state, self.estimate_flow(current, previous))
            out = self.correct(state, current, full_resolution=True)
            loss_semantic = loss_semantic + F.cross_entropy(out['propagated'], truth, ignore_index=IGNORE_INDEX)
            loss_cfnet = loss_cfnet + distortion_weighted_cross_entropy(out['correction'], truth, out['distortion'])
            loss_semantic = loss_semantic + F.cross_entropy(out['merged'], truth, ignore_index=IGNORE_INDEX)
        return {'loss_semantic': loss_semantic / 4, 'loss_cfnet': loss_cfnet / 2}


class SCNetDMNet(_PropagationNet):
    """The DMNet stage: trains DMNet to predict where propagated labels disagree with DeepLab's; DeepLab and
    FlowNetS are frozen, there is no CFNet."""

    def __init__(self, n_classes=19, align_corners=True, deeplab=None, flownet=None, init='default'):
        super().__init__(n_classes, align_corners, deeplab, flownet, None, init)

    def frozen_modules(self):
        return [self.deeplab, self.flownet]

    def forward(self, frames, pseudo_labels=None):
        """
        Args:
            frames: (N, 3, 3, H, W) [key, intermediate, target] frames, RGB in [0, 1].
            pseudo_labels: optional (N, 2, H, W) int64 DeepLab labels of [intermediate, target] computed
                beforehand (``data.pseudo_labels: precomputed``); None runs DeepLab on both frames.
        Returns:
            ``{'loss_dmnet': 0-dim}``: mean binary cross-entropy of the upsampled distortion map against the pixels
            where the propagated argmax differs from DeepLab's, over the two propagated frames.
        """
        self.check_frames(frames)
        key, intermediate, target = frames.unbind(1)  # each (N, 3, H, W)
        with torch.no_grad():
            state = self.key_frame(key)

        loss_dmnet = 0.0
        for k, (previous, current) in enumerate(((key, intermediate), (intermediate, target))):
            with torch.no_grad():  # everything before DMNet is frozen
                state = self.propagate(state, self.estimate_flow(current, previous))
                propagated_label = self.to_full_resolution(state.logits).argmax(dim=1)  # (N, H, W)
                segmented = self.segment(current) if pseudo_labels is None else pseudo_labels[:, k]
                distorted = (propagated_label != segmented).float().unsqueeze(1)  # (N, 1, H, W)
            distortion = self.to_full_resolution(self.distortion(state, current))  # (N, 1, H, W)
            # binary_cross_entropy refuses to run under CUDA autocast (unsafe in half precision): do it in fp32.
            with torch.autocast(distortion.device.type, enabled=False):
                loss_dmnet = loss_dmnet + F.binary_cross_entropy(distortion.float(), distorted)
        return {'loss_dmnet': loss_dmnet / 2}


def build_scnet(model_cfg, stage='correction'):
    """The network of a training stage (``'correction'``: :class:`SCNet`, ``'dmnet'``: :class:`SCNetDMNet`) from the
    ``model:`` section of a config."""
    common = dict(n_classes=model_cfg['n_classes'], align_corners=model_cfg['align_corners'],
                  deeplab=dict(model_cfg.get('deeplab') or {}), flownet=dict(model_cfg.get('flownet') or {}),
                  init=model_cfg.get('init', 'default'))
    if stage == 'correction':
        return SCNet(cfnet=dict(model_cfg.get('cfnet') or {}), **common)
    if stage == 'dmnet':
        return SCNetDMNet(**common)
    raise ValueError(f'build_scnet: stage must be "correction" or "dmnet", got "{stage}"')


class Warp(nn.Module):
    """Carries a map of frame t-1 onto frame t: ``out[y, x] = x_prev[y + dy, x + dx]`` (bilinear, border clamp)."""

    def forward(self, x, flow):
        """
        Args:
            x: (N, C, h, w) features (logits, images) of the previous frame.
            flow: (N, 2, h, w) backward flow (dx, dy) in pixels of this grid.
        Returns:
            (N, C, h, w) the features warped onto the current frame.
        """
        return resample2d(x, flow)
