"""TF32: whether float32 convolutions and matmuls may run on TensorFloat-32 tensor cores (Ampere and later GPUs).

PyTorch lets cuDNN convolutions use TF32 by default (``torch.backends.cudnn.allow_tf32 = True``), which rounds the
inputs of every convolution to a 10-bit mantissa: faster, but not the plain fp32 that produced the published
DAVSS numbers (torch 1.5 on pre-Ampere GPUs).  Evaluation turns it off unless ``eval.tf32`` says otherwise;
training follows ``train.tf32``.  On the CPU the flags change nothing.
"""
from contextlib import contextmanager

import torch


@contextmanager
def tf32(enabled):
    """Allow (or forbid) TF32 in cuDNN convolutions and CUDA matmuls while the block runs; the previous
    process-wide flags are put back afterwards."""
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
