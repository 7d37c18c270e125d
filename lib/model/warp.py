"""The warp of DAVSS: bilinear backward warping by a dense flow (a thin module around ``lib.ops.resample2d``)."""
import torch.nn as nn

from lib.ops import resample2d


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
