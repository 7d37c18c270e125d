"""Building blocks shared by the DAVSS networks; their attribute names are the published checkpoints' keys."""
import torch.nn as nn


def scale_width(channels, width_mult):
    """Channel count of a layer in a network built with ``width_mult`` (at least 1)."""
    return max(1, int(round(channels * width_mult)))


def check_multiple_of_4(x, who):
    """The system works on a 1/4-resolution grid: a frame whose size is not a multiple of 4 has no exact 1/4 map."""
    h, w = x.shape[-2:]
    if h % 4 or w % 4:
        raise ValueError(f'{who}: frame size {h}x{w} (HxW) is not a multiple of 4')


def crop_to(x, reference):
    """Crop a ``ConvTranspose2d(k=4, s=2, p=0)`` output (size ``2s + 2``) to the encoder map it is fused with: drop
    the first row/column, keep ``reference``'s size."""
    h, w = reference.shape[-2:]
    return x[:, :, 1:1 + h, 1:1 + w]


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU (DeepLab head/decoder and DMNet)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, padding=1, dilation=1, bias=False, eps=1e-5,
                 momentum=3e-4):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation,
                                   groups=in_channels, bias=bias)
        self.depthwise_bn = nn.BatchNorm2d(in_channels, eps, momentum)
        self.depthwise_relu = nn.ReLU(inplace=True)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        self.pointwise_bn = nn.BatchNorm2d(out_channels, eps, momentum)
        self.pointwise_relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.depthwise_relu(self.depthwise_bn(self.depthwise(x)))
        return self.pointwise_relu(self.pointwise_bn(self.pointwise(x)))


def conv_leaky(in_channels, out_channels, kernel_size, stride, batch_normalized):
    """FlowNet-style encoder layer: ``Sequential(conv, [bn,] LeakyReLU(0.1))``, 'same' padding; the conv has a bias
    only without BN (FlowNetS, not CFNet)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                     bias=not batch_normalized)
    layers = [conv, nn.BatchNorm2d(out_channels)] if batch_normalized else [conv]
    return nn.Sequential(*layers, nn.LeakyReLU(0.1, inplace=True))


def deconv_leaky(in_channels, out_channels):
    """x2 upsampling decoder layer: ``Sequential(ConvTranspose2d(k=4, s=2, p=0), LeakyReLU(0.1))``; see crop_to."""
    return nn.Sequential(nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=0, bias=False),
                         nn.LeakyReLU(0.1, inplace=True))


class StridedEncoder(nn.Module):
    """The encoder of FlowNetS and CFNet: stride-2 ``conv1`` .. ``conv6``, each from ``conv3`` on followed by a
    stride-1 ``conv<k>_1``; subclasses call :meth:`build_encoder` first in ``__init__`` (the checkpoint key order)."""

    def build_encoder(self, in_channels, widths, first_kernels, batch_normalized):
        """``widths``: the 6 stage widths; ``first_kernels``: kernel sizes of conv1, conv2, conv3 (the rest are 3)."""
        w1, w2, w3, w4, w5, w6 = widths
        k1, k2, k3 = first_kernels
        self.conv1 = conv_leaky(in_channels, w1, k1, 2, batch_normalized)
        self.conv2 = conv_leaky(w1, w2, k2, 2, batch_normalized)
        self.conv3 = conv_leaky(w2, w3, k3, 2, batch_normalized)
        self.conv3_1 = conv_leaky(w3, w3, 3, 1, batch_normalized)
        self.conv4 = conv_leaky(w3, w4, 3, 2, batch_normalized)
        self.conv4_1 = conv_leaky(w4, w4, 3, 1, batch_normalized)
        self.conv5 = conv_leaky(w4, w5, 3, 2, batch_normalized)
        self.conv5_1 = conv_leaky(w5, w5, 3, 1, batch_normalized)
        self.conv6 = conv_leaky(w5, w6, 3, 2, batch_normalized)
        self.conv6_1 = conv_leaky(w6, w6, 3, 1, batch_normalized)

    def encode(self, x):
        """(N, C_in, H, W) -> the maps at 1/4, 1/8, 1/16, 1/32 and 1/64 (the first four are the decoder's skips)."""
        out_conv2 = self.conv2(self.conv1(x))  # (N, w2, H/4, W/4)
        out_conv3 = self.conv3_1(self.conv3(out_conv2))  # (N, w3, H/8, W/8)
        out_conv4 = self.conv4_1(self.conv4(out_conv3))  # (N, w4, H/16, W/16)
        out_conv5 = self.conv5_1(self.conv5(out_conv4))  # (N, w5, H/32, W/32)
        out_conv6 = self.conv6_1(self.conv6(out_conv5))  # (N, w6, H/64, W/64)
        return out_conv2, out_conv3, out_conv4, out_conv5, out_conv6
