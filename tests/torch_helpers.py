"""PyTorch helpers shared by the tests that build modules (imported only where torch is)."""

from __future__ import annotations

import torch


def randomise_batchnorm(m: torch.nn.Module, seed: int = 1234) -> torch.nn.Module:
    """Non-trivial eval-mode batch norms. Fresh ones have weight 1, bias 0, mean 0 and
    variance 1, which makes them (almost) the identity and would hide a wrong wiring."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g))
                mod.running_mean.copy_(torch.randn(c, generator=g))
                mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return m
