"""Shared test helpers."""

import torch
from torch import nn


def randomize_batchnorm(module: nn.Module, gen: torch.Generator) -> None:
    """open_clip zero-initialises bn3 and leaves identity statistics: make every BatchNorm random."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.3 + 0.5 * torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
