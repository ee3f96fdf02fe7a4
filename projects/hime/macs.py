"""Multiply-accumulate counting with forward hooks (the GMACs column of Table 5.1).

Counts every ``nn.Conv2d`` / ``nn.ConvTranspose2d`` / ``nn.Linear`` call and the main convolution of every
:class:`shared.ops.deform.ModulatedDeformConv2d` (its offset/mask conv is an ``nn.Conv2d`` and is counted as such);
bias additions, activations, interpolation, sampling and the parameter-free similarity/aggregation are not MACs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shared.ops.deform import ModulatedDeformConv2d


def _conv_macs(weight: Tensor, out: Tensor) -> int:
    """One MAC per weight element per output position: Cout·(Cin/groups)·kh·kw·Ho·Wo·batch."""
    return int(weight.numel() * out.shape[-1] * out.shape[-2] * out.shape[0])


def count_macs(net: nn.Module, *inputs, **kwargs) -> int:
    """Total MACs of one forward pass ``net(*inputs, **kwargs)`` (no gradients)."""
    total = [0]

    def hook(module: nn.Module, args, out: Tensor) -> None:
        if isinstance(module, nn.Linear):
            total[0] += int(module.weight.numel() * out.numel() // out.shape[-1])
        elif isinstance(module, nn.ConvTranspose2d):
            total[0] += int(module.weight.numel() * args[0].shape[-1] * args[0].shape[-2] * args[0].shape[0])
        else:  # Conv2d and the deformable conv's main weight
            total[0] += _conv_macs(module.weight, out)

    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, ModulatedDeformConv2d)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            net(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return total[0]
