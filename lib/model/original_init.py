"""The initial weights the original code drew (``model.init: original``).

The original's constructors drew more random numbers than this project's: DeepLab's Xception re-drew its stem
convolutions (``normal_(0, sqrt(2 / n))``) and every block's convolutions (``normal_(std=0.09)``), its separable
convolutions and those of DMNet re-drew their weights with ``normal_(std=0.33)``, and DMNet then drew Xavier-normal
weights over all of that. DeepLab's and FlowNetS's initial values are always replaced by the pretrained file, but
their draws move the generator, so CFNet and DMNet start from other weights unless every draw is repeated in the
original's order. :func:`draw_as_original` repeats them on a network built by this project: run from the generator
state the network's construction started from, it leaves every tensor, and the generator, as the original's
``SCNet()`` / ``SCNet_dmnet()`` right after ``torch.manual_seed(seed)``.

Only the order of the draws is the original's; the samplers are this torch version's (torch 1.5's CPU ``uniform_``
and ``normal_`` are assumed to give the same numbers for the same generator state; not checked here).
"""
import math

import torch.nn as nn

from lib.model.deeplabv3plus import XceptionBlock

XCEPTION_BLOCK_STD = 0.09
SEPARABLE_STD = 0.33


def _construct(conv):
    """The draws of ``nn.Conv2d`` / ``nn.ConvTranspose2d``'s constructor (Kaiming-uniform weight, uniform bias)."""
    conv.reset_parameters()


def _separable(sep):
    """The original's ``SeparableConv2d`` (DeepLab head and DMNet): both convolutions constructed, then both
    weights re-drawn with ``normal_(std=0.33)``."""
    _construct(sep.depthwise)
    _construct(sep.pointwise)
    nn.init.normal_(sep.depthwise.weight, std=SEPARABLE_STD)
    nn.init.normal_(sep.pointwise.weight, std=SEPARABLE_STD)


def _deeplab(net):
    xception = net.xception_features
    for stem in (xception.entry_flow_conv1_1.conv, xception.entry_flow_conv1_2.conv):
        _construct(stem)
        n = stem.kernel_size[0] * stem.kernel_size[1] * stem.out_channels
        nn.init.normal_(stem.weight, 0.0, math.sqrt(2.0 / n))
    for block in (m for m in xception.children() if isinstance(m, XceptionBlock)):  # entry, middle, exit flow
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]  # sc1 .. sc3 (depthwise, pointwise), shortcut
        for conv in convs:
            _construct(conv)
        for conv in convs:  # the block's _init_weight, after all of them were built
            nn.init.normal_(conv.weight, std=XCEPTION_BLOCK_STD)
    aspp0 = net.aspp0.atrous_convolution  # the original's SeparableConv2d(separable=False): one dense conv
    _construct(aspp0.conv)
    nn.init.normal_(aspp0.conv.weight, std=SEPARABLE_STD)
    for branch in (net.aspp1, net.aspp2, net.aspp3):
        _separable(branch.atrous_convolution)
    _construct(net.image_pooling[1])
    _construct(net.concat_projection[0])
    _construct(net.feature_projection0_conv)
    for sep in net.decoder:
        _separable(sep)
    _construct(net.logits)


def _default_only(net):
    """FlowNetS and CFNet keep PyTorch's init: each convolution's constructor draws, in construction order."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            _construct(m)


def _dmnet(net):
    for stage in (net.conv1, net.conv2, net.conv3):
        _separable(stage[0])
    _construct(net.conv4)
    for m in net.modules():  # DMNet.weight_init of the original, once everything is built
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


def draw_as_original(scnet):
    """Re-draw every tensor of an SCNet / SCNetDMNet in the original's order: DeepLab, FlowNetS, [CFNet], DMNet.

    BatchNorm layers draw nothing (weight 1, bias 0 in both codes). Call it with the generator where the
    construction began (``SCNet(init='original')`` does).
    """
    _deeplab(scnet.deeplab)
    _default_only(scnet.flownet)
    if scnet.cfnet is not None:
        _default_only(scnet.cfnet)
    _dmnet(scnet.dmnet)
