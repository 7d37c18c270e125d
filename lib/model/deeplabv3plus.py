"""DeepLabv3+ with an aligned Xception-65 backbone (output stride 16), the key-frame network of DAVSS; the module
names are the keys of the published weights (converted from TensorFlow DeepLab)."""
from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.model.layers import SeparableConv2d, scale_width

# TensorFlow defaults the weights were trained with (PyTorch momentum = 1 - TF decay 0.9997).
XCEPTION_BN_EPS = 1e-3
HEAD_BN_EPS = 1e-5
BN_MOMENTUM = 3e-4


def padded_conv(in_channels, out_channels, stride):
    """Dense 3x3 convolution of the Xception stem under the ``<name>.conv.weight`` key (TensorFlow's fixed padding of
    an odd kernel is symmetric: the convolution's own)."""
    conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
    return nn.Sequential(OrderedDict(conv=conv))


class XceptionSeparableConv(nn.Module):
    """Depthwise 3x3 (stride, dilation) -> BN -> pointwise -> BN, with the ReLU before (``relu_first``, Xception's
    pre-activation: not in place, the input also feeds the residual) or after each BN."""

    def __init__(self, in_channels, out_channels, stride=1, dilation=1, relu_first=True):
        super().__init__()
        self.relu_first = relu_first
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                                   groups=in_channels, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(in_channels, XCEPTION_BN_EPS, BN_MOMENTUM)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_channels, XCEPTION_BN_EPS, BN_MOMENTUM)

    def forward(self, x):
        if self.relu_first:
            return self.pointwise_bn(self.pointwise(self.depthwise_bn(self.depthwise(F.relu(x)))))
        x = F.relu(self.depthwise_bn(self.depthwise(x)))
        return F.relu(self.pointwise_bn(self.pointwise(x)))


class XceptionBlock(nn.Module):
    """Three separable convolutions (the last one carries the stride) plus a residual connection ``skip``:
    ``'conv'`` (1x1 strided projection + BN), ``'sum'`` (identity) or ``'none'``."""

    def __init__(self, in_channels, depths, skip, stride=1, dilation=1, relu_first=True):
        super().__init__()
        self.skip = skip
        self.separable_conv1 = XceptionSeparableConv(in_channels, depths[0], 1, dilation, relu_first)
        self.separable_conv2 = XceptionSeparableConv(depths[0], depths[1], 1, dilation, relu_first)
        self.separable_conv3 = XceptionSeparableConv(depths[1], depths[2], stride, dilation, relu_first)
        projection = [nn.Conv2d(in_channels, depths[2], 1, stride=stride, bias=False),
                      nn.BatchNorm2d(depths[2], XCEPTION_BN_EPS, BN_MOMENTUM)] if skip == 'conv' else []
        self.shortcut = nn.Sequential(*projection)

    def forward_with_inner(self, x):
        """Returns ``(block output, output of the second separable conv)``; the latter is DeepLab's low-level map."""
        inner = self.separable_conv2(self.separable_conv1(x))
        out = self.separable_conv3(inner)
        if self.skip != 'none':
            out = out + self.shortcut(x)  # the identity for 'sum' (an empty Sequential)
        return out, inner

    def forward(self, x):
        return self.forward_with_inner(x)[0]


class Xception65(nn.Module):
    """Aligned Xception-65 at output stride 16 (the exit flow runs at stride 1, its last block at dilation 2)."""

    def __init__(self, width_mult=1.0, middle_blocks=16):
        super().__init__()
        c = partial(scale_width, width_mult=width_mult)
        self.middle_blocks = middle_blocks

        self.entry_flow_conv1_1 = padded_conv(3, c(32), stride=2)
        self.entry_flow_bn1_1 = nn.BatchNorm2d(c(32), XCEPTION_BN_EPS, BN_MOMENTUM)
        self.entry_flow_relu1_1 = nn.ReLU(inplace=True)
        self.entry_flow_conv1_2 = padded_conv(c(32), c(64), stride=1)
        self.entry_flow_bn1_2 = nn.BatchNorm2d(c(64), XCEPTION_BN_EPS, BN_MOMENTUM)
        self.entry_flow_relu1_2 = nn.ReLU(inplace=True)

        self.entry_flow_block1_unit_1 = XceptionBlock(c(64), [c(128)] * 3, 'conv', stride=2)
        self.entry_flow_block2_unit_1 = XceptionBlock(c(128), [c(256)] * 3, 'conv', stride=2)
        self.entry_flow_block3_unit_1 = XceptionBlock(c(256), [c(728)] * 3, 'conv', stride=2)
        for i in range(1, middle_blocks + 1):
            self.add_module(f'middle_flow_block1_unit_{i}', XceptionBlock(c(728), [c(728)] * 3, 'sum'))
        self.exit_flow_block1_unit_1 = XceptionBlock(c(728), [c(728), c(1024), c(1024)], 'conv')
        self.exit_flow_block2_unit_1 = XceptionBlock(c(1024), [c(1536), c(1536), c(2048)], 'none', dilation=2,
                                                     relu_first=False)
        self.out_channels = c(2048)
        self.low_level_channels = c(256)

    def forward(self, x):
        """
        Args:
            x: (N, 3, H, W) RGB in [0, 1].
        Returns:
            features: (N, 2048, ceil(H/16), ceil(W/16)) (channels times width_mult).
            low_level: (N, 256, ceil(H/4), ceil(W/4)), the pre-stride map of the second entry block.
        """
        x = self.entry_flow_relu1_1(self.entry_flow_bn1_1(self.entry_flow_conv1_1(x)))  # (N, 32, H/2, W/2)
        x = self.entry_flow_relu1_2(self.entry_flow_bn1_2(self.entry_flow_conv1_2(x)))
        x = self.entry_flow_block1_unit_1(x)  # (N, 128, H/4, W/4)
        x, low_level = self.entry_flow_block2_unit_1.forward_with_inner(x)  # (N, 256, H/8, W/8), (.., H/4, W/4)
        x = self.entry_flow_block3_unit_1(x)  # (N, 728, H/16, W/16)
        for i in range(1, self.middle_blocks + 1):
            x = getattr(self, f'middle_flow_block1_unit_{i}')(x)
        x = self.exit_flow_block1_unit_1(x)  # (N, 1024, H/16, W/16)
        x = self.exit_flow_block2_unit_1(x)  # (N, 2048, H/16, W/16)
        return x, low_level


def aspp_branch(in_channels, out_channels, rate):
    """One atrous branch under the ``asppK.atrous_convolution.*`` checkpoint keys: rate 1 a dense 1x1 conv -> BN ->
    ReLU, the others a dilated separable convolution."""
    if rate == 1:
        branch = nn.Sequential(OrderedDict(conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                           bn=nn.BatchNorm2d(out_channels, HEAD_BN_EPS, BN_MOMENTUM),
                                           relu=nn.ReLU(inplace=True)))
    else:
        branch = SeparableConv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, eps=HEAD_BN_EPS,
                                 momentum=BN_MOMENTUM)
    return nn.Sequential(OrderedDict(atrous_convolution=branch))


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ (Xception-65, output stride 16) giving logits at 1/4 resolution; ``width_mult`` multiplies every
    channel count (1.0 = the published network), ``middle_blocks``: Xception middle-flow blocks (16 = Xception-65)."""

    def __init__(self, n_classes, width_mult=1.0, middle_blocks=16):
        super().__init__()
        c = partial(scale_width, width_mult=width_mult)
        self.xception_features = Xception65(width_mult, middle_blocks)
        features = self.xception_features.out_channels
        aspp = c(256)
        self.aspp0 = aspp_branch(features, aspp, rate=1)
        self.aspp1 = aspp_branch(features, aspp, rate=6)
        self.aspp2 = aspp_branch(features, aspp, rate=12)
        self.aspp3 = aspp_branch(features, aspp, rate=18)
        self.image_pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(features, aspp, 1, bias=False),
                                           nn.BatchNorm2d(aspp, HEAD_BN_EPS, BN_MOMENTUM), nn.ReLU(inplace=True))
        self.concat_projection = nn.Sequential(nn.Conv2d(5 * aspp, aspp, 1, bias=False),
                                               nn.BatchNorm2d(aspp, HEAD_BN_EPS, BN_MOMENTUM), nn.ReLU(inplace=True),
                                               nn.Dropout2d(p=0.1))
        low_level = c(48)
        self.feature_projection0_conv = nn.Conv2d(self.xception_features.low_level_channels, low_level, 1, bias=False)
        self.feature_projection0_bn = nn.BatchNorm2d(low_level, XCEPTION_BN_EPS, BN_MOMENTUM)
        self.feature_projection0_relu = nn.ReLU(inplace=True)
        decoder = c(256)
        self.decoder = nn.Sequential(
            SeparableConv2d(aspp + low_level, decoder, 3, padding=1, eps=HEAD_BN_EPS, momentum=BN_MOMENTUM),
            SeparableConv2d(decoder, decoder, 3, padding=1, eps=HEAD_BN_EPS, momentum=BN_MOMENTUM))
        self.logits = nn.Conv2d(decoder, n_classes, 1)

    def forward(self, image):
        """
        Args:
            image: (N, 3, H, W) RGB in [0, 1], no mean/std normalisation.
        Returns:
            (N, n_classes, ceil(H/4), ceil(W/4)) logits.
        """
        features, low_level = self.xception_features(image)  # (N, 2048, H/16, W/16), (N, 256, H/4, W/4)
        # Image pooling (N, 256, 1, 1) to the map size: bilinear upsampling of a 1x1 map is a broadcast.
        pooled = self.image_pooling(features).expand(-1, -1, *features.shape[-2:])
        branches = [pooled] + [branch(features) for branch in (self.aspp0, self.aspp1, self.aspp2, self.aspp3)]
        x = self.concat_projection(torch.cat(branches, dim=1))  # (N, 256, H/16, W/16)
        # align_corners=True is part of the trained network. The low-level map's shape (not arithmetic on H, W)
        # keeps the size symbolic when traced for export.
        x = F.interpolate(x, size=low_level.shape[-2:], mode='bilinear', align_corners=True)
        low_level = self.feature_projection0_relu(self.feature_projection0_bn(self.feature_projection0_conv(low_level)))
        x = self.decoder(torch.cat((x, low_level), dim=1))  # (N, 256, H/4, W/4)
        return self.logits(x)  # (N, n_classes, H/4, W/4)
