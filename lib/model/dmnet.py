"""DMNet: predicts where feature propagation went wrong (the distortion map) from two 1/4-resolution images."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.model.layers import SeparableConv2d


def embedding_stage(in_channels, out_channels):
    """``Sequential(separable conv (with biases), BN, ReLU)``; the indices are checkpoint keys."""
    return nn.Sequential(SeparableConv2d(in_channels, out_channels, 3, padding=1, bias=True),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DMNet(nn.Module):
    """A tiny siamese network: the distortion is ``(1 - cos(e1, e2)) / 2`` of both images' 16-channel embeddings by
    the same layers, clamped to [0, 1]."""

    def __init__(self):
        super().__init__()
        self.conv1 = embedding_stage(3, 4)
        self.conv2 = embedding_stage(4, 8)
        self.conv3 = embedding_stage(8, 16)
        self.conv4 = nn.Conv2d(16, 16, 1)
        self.reset_parameters()

    def reset_parameters(self):
        # Trained from scratch in stage 1: Xavier-normal weights and zero biases as in the paper's code.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, image):
        """(N, 3, h, w) -> (N, 16, h, w)."""
        return self.conv4(self.conv3(self.conv2(self.conv1(image))))

    def forward(self, warped_key, current):
        """
        Args:
            warped_key: (N, 3, h, w) the 1/4 key image warped to the current frame.
            current: (N, 3, h, w) the current frame at 1/4 resolution.
        Returns:
            (N, 1, h, w) distortion map in [0, 1].
        """
        similarity = F.cosine_similarity(self.embed(warped_key), self.embed(current), dim=1)  # (N, h, w)
        return torch.clamp(-similarity * 0.5 + 0.5, 0.0, 1.0).unsqueeze(1)
