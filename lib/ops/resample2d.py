"""resample2d: bilinear backward warping of a feature map by a dense flow field.

``out[b, c, y, x]`` is the bilinear sample of ``input[b, c]`` at ``(x + flow[b, 0, y, x], y + flow[b, 1, y, x])``;
sample positions outside the map read the nearest border pixel (the original CUDA kernel clamps each corner
to the border, which gives the same values as clamping the position).
"""
import torch
import torch.nn.functional as F


def resample2d_reference(input, flow):
    """Pure PyTorch implementation (``grid_sample``, border padding, ``align_corners=True``).

    Args:
        input: (N, C, H, W) features to sample from.
        flow: (N, 2, H, W) displacement in pixels, channels (dx, dy).
    Returns:
        (N, C, H, W) warped features, same dtype as ``input``.
    """
    n, _, h, w = input.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    x = xs + flow[:, 0]  # (N, H, W)
    y = ys + flow[:, 1]
    # align_corners=True maps pixel centres 0 and W-1 to -1 and 1; guard 1-pixel maps against division by zero.
    grid = torch.stack((2.0 * x / max(w - 1, 1) - 1.0, 2.0 * y / max(h - 1, 1) - 1.0), dim=-1)  # (N, H, W, 2)
    return F.grid_sample(input, grid.to(input.dtype), mode='bilinear', padding_mode='border', align_corners=True)


def resample2d(input, flow):
    """Warp ``input`` (N, C, H, W) by ``flow`` (N, 2, H, W); see the module docstring."""
    if input.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f'resample2d: expected input (N, C, H, W) and flow (N, 2, H, W), '
                         f'got {tuple(input.shape)} and {tuple(flow.shape)}')
    if input.shape[0] != flow.shape[0] or input.shape[2:] != flow.shape[2:]:
        raise ValueError(f'resample2d: input {tuple(input.shape)} and flow {tuple(flow.shape)} differ in batch or size')
    return resample2d_reference(input, flow)
