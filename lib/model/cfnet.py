"""CFNet: correction logits for the current frame at 1/4 resolution, used where DMNet finds distortion."""
from functools import partial

import torch
import torch.nn as nn

from lib.model.layers import StridedEncoder, check_multiple_of_4, crop_to, deconv_leaky, scale_width


class CFNet(StridedEncoder):
    """FlowNetS-shaped encoder (with BatchNorm, widths 32-64-128-256-512) and a decoder back to 1/4 resolution
    (``width_mult`` multiplies every channel count; 1.0 = the published network)."""

    def __init__(self, n_classes, width_mult=1.0):
        super().__init__()
        c = partial(scale_width, width_mult=width_mult)
        w1, w2, w3, w4, w5, w6 = c(32), c(64), c(128), c(256), c(256), c(512)
        self.build_encoder(3, (w1, w2, w3, w4, w5, w6), first_kernels=(3, 3, 3), batch_normalized=True)

        self.deconv5 = deconv_leaky(w6, w4)
        self.deconv4 = deconv_leaky(w5 + w4, w3)
        self.deconv3 = deconv_leaky(w4 + w3, w2)
        self.deconv2 = deconv_leaky(w3 + w2, w1)

        self.predict_cc = nn.Conv2d(w2 + w1, n_classes, 1)

    def forward(self, image):
        """
        Args:
            image: (N, 3, H, W) RGB in [0, 1]; H, W multiples of 4.
        Returns:
            (N, n_classes, H/4, W/4) correction logits.
        """
        check_multiple_of_4(image, 'CFNet')
        out_conv2, out_conv3, out_conv4, out_conv5, x = self.encode(image)  # 64 ch at H/4 .. 512 ch at H/64
        for skip, deconv in ((out_conv5, self.deconv5), (out_conv4, self.deconv4), (out_conv3, self.deconv3),
                             (out_conv2, self.deconv2)):
            x = torch.cat((skip, crop_to(deconv(x), skip)), dim=1)
        return self.predict_cc(x)  # (N, n_classes, H/4, W/4)
