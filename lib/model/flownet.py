"""A light FlowNetS (channel widths 24-48-96-192-384) predicting optical flow at 1/4 resolution."""
from functools import partial

import torch
import torch.nn as nn

from lib.model.layers import StridedEncoder, check_multiple_of_4, crop_to, deconv_leaky, scale_width

# The published weights predict flow divided by this factor (a FlowNet training convention).
FLOW_SCALE = 5.0


def flow_head(in_channels):
    return nn.Conv2d(in_channels, 2, 3, padding=1)


def flow_upsampler():
    return nn.ConvTranspose2d(2, 2, 4, stride=2, padding=0, bias=False)


class FlowNetS(StridedEncoder):
    """FlowNetS encoder/decoder with coarse-to-fine flow predictions, the finest at 1/4 resolution (``width_mult``
    multiplies every channel count; 1.0 = the published network)."""

    def __init__(self, width_mult=1.0):
        super().__init__()
        c = partial(scale_width, width_mult=width_mult)
        w1, w2, w3, w4, w5, w6 = c(24), c(48), c(96), c(192), c(192), c(384)
        self.build_encoder(6, (w1, w2, w3, w4, w5, w6), first_kernels=(7, 5, 5), batch_normalized=False)

        # Level k fuses the encoder map k, the upsampled decoder features and the upsampled flow (2 channels).
        concat5, concat4, concat3, concat2 = w5 + w4 + 2, w4 + w3 + 2, w3 + w2 + 2, w2 + w1 + 2
        self.predict_flow6 = flow_head(w6)
        self.predict_flow5 = flow_head(concat5)
        self.predict_flow4 = flow_head(concat4)
        self.predict_flow3 = flow_head(concat3)
        self.predict_flow2 = flow_head(concat2)

        self.deconv5 = deconv_leaky(w6, w4)
        self.deconv4 = deconv_leaky(concat5, w3)
        self.deconv3 = deconv_leaky(concat4, w2)
        self.deconv2 = deconv_leaky(concat3, w1)

        self.upsample_flow6to5 = flow_upsampler()
        self.upsample_flow5to4 = flow_upsampler()
        self.upsample_flow4to3 = flow_upsampler()
        self.upsample_flow3to2 = flow_upsampler()

    def forward(self, frames):
        """
        Args:
            frames: (N, 6, H, W) ``cat([current, previous], 1)``, RGB in [0, 1]; H, W multiples of 4.
        Returns:
            (N, 2, H/4, W/4) backward flow (dx, dy) in 1/4-resolution pixels: it carries ``previous`` onto
            ``current``.
        """
        check_multiple_of_4(frames, 'FlowNetS')
        out_conv2, out_conv3, out_conv4, out_conv5, x = self.encode(frames)  # 48 ch at H/4 .. 384 ch at H/64

        flow = self.predict_flow6(x)
        levels = ((out_conv5, self.deconv5, self.upsample_flow6to5, self.predict_flow5),
                  (out_conv4, self.deconv4, self.upsample_flow5to4, self.predict_flow4),
                  (out_conv3, self.deconv3, self.upsample_flow4to3, self.predict_flow3),
                  (out_conv2, self.deconv2, self.upsample_flow3to2, self.predict_flow2))
        for skip, deconv, upsample_flow, predict_flow in levels:
            x = torch.cat((skip, crop_to(deconv(x), skip), crop_to(upsample_flow(flow), skip)), dim=1)
            flow = predict_flow(x)
        return flow * FLOW_SCALE  # (N, 2, H/4, W/4)
