"""The initial weights the original code drew (``model.init: original``): its constructors re-drew DeepLab's and
DMNet's weights several times, and DeepLab's draws (though its values are replaced by the pretrained file) move the
generator, so CFNet and DMNet start elsewhere unless every draw is repeated in the original's order."""
import math

import torch.nn as nn

from lib.model.deeplabv3plus import XceptionBlock

XCEPTION_BLOCK_STD = 0.09
SEPARABLE_STD = 0.33


def _separable(sep):
    """The original's ``SeparableConv2d``: both convolutions constructed, then both weights re-drawn."""
    sep.depthwise.reset_parameters()  # the draws of the constructor
    sep.pointwise.reset_parameters()
    nn.init.normal_(sep.depthwise.weight, std=SEPARABLE_STD)
    nn.init.normal_(sep.pointwise.weight, std=SEPARABLE_STD)


def _deeplab(net):
    xception = net.xception_features
    for stem in (xception.entry_flow_conv1_1.conv, xception.entry_flow_conv1_2.conv):
        stem.reset_parameters()
        n = stem.kernel_size[0] * stem.kernel_size[1] * stem.out_channels
        nn.init.normal_(stem.weight, 0.0, math.sqrt(2.0 / n))
    for block in (m for m in xception.children() if isinstance(m, XceptionBlock)):  # entry, middle, exit flow
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]  # sc1 .. sc3 (depthwise, pointwise), shortcut
        for conv in convs:
            conv.reset_parameters()
        for conv in convs:  # the block's _init_weight, after all of them were built
            nn.init.normal_(conv.weight, std=XCEPTION_BLOCK_STD)
    aspp0 = net.aspp0.atrous_convolution  # the original's SeparableConv2d(separable=False): one dense conv
    aspp0.conv.reset_parameters()
    nn.init.normal_(aspp0.conv.weight, std=SEPARABLE_STD)
    for branch in (net.aspp1, net.aspp2, net.aspp3):
        _separable(branch.atrous_convolution)
    for conv in (net.image_pooling[1], net.concat_projection[0], net.feature_projection0_conv):
        conv.reset_parameters()
    for sep in net.decoder:
        _separable(sep)
    net.logits.reset_parameters()


def _default_only(net):
    """FlowNetS and CFNet keep PyTorch's init: each convolution's constructor draws, in construction order."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.reset_parameters()


def _dmnet(net):
    for stage in (net.conv1, net.conv2, net.conv3):
        _separable(stage[0])
    net.conv4.reset_parameters()
    net.reset_parameters()  # Xavier-normal over all of it: the original's DMNet.weight_init


def draw_as_original(scnet):
    """Re-draw every tensor of an SCNet / SCNetDMNet in the original's order (DeepLab, FlowNetS, [CFNet], DMNet;
    BatchNorm draws nothing): from the generator state where construction began (``SCNet(init='original')``) it
    leaves the tensors and the generator as the original's ``SCNet()`` / ``SCNet_dmnet()``."""
    _deeplab(scnet.deeplab)
    _default_only(scnet.flownet)
    if scnet.cfnet is not None:
        _default_only(scnet.cfnet)
    _dmnet(scnet.dmnet)
