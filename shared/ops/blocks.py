"""Plain building blocks: residual block without BN, RRDB (Ch. 4 reconstruction trunk), layer stacking."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def scaled_kaiming_(modules: nn.Module | list[nn.Module], scale: float = 0.1) -> None:
    """Kaiming-normal (fan_in, a=0) init scaled by ``scale`` with zero bias, for every conv/linear inside."""
    for root in modules if isinstance(modules, list) else [modules]:
        for m in root.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                m.weight.mul_(scale)
                if m.bias is not None:
                    m.bias.zero_()


def make_layer(block: type[nn.Module], n: int, **kwargs) -> nn.Sequential:
    """``n`` copies of ``block(**kwargs)`` in a Sequential (state-dict keys ``0.…``, ``1.…``)."""
    return nn.Sequential(*(block(**kwargs) for _ in range(n)))


class ResidualBlockNoBN(nn.Module):
    """conv3x3 → ReLU → conv3x3 plus identity, no batch norm (EDSR style; Ch. 5 and 6 feature extractors).

    Parameter names ``conv1``/``conv2`` match the official Zooming-Slow-Mo ``ResidualBlock_noBN``.
    """

    def __init__(self, nf: int = 64, res_scale: float = 1.0, init_scale: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.res_scale = res_scale
        scaled_kaiming_([self.conv1, self.conv2], init_scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.conv2(torch.relu(self.conv1(x)))


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs (nf → nf+4·gc inputs), LReLU(0.2), output 0.2·out + x (ESRGAN RDB)."""

    def __init__(self, nf: int = 64, gc: int = 32, bias: bool = True) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc, 3, 1, 1, bias=bias) for i in range(4))
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1, bias=bias)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        scaled_kaiming_(self, 0.1)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(self.lrelu(conv(torch.cat(feats, 1))))
        return x + 0.2 * self.conv5(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs, output 0.2·out + x (Ch. 4 reconstruction, 20 of them)."""

    def __init__(self, nf: int = 64, gc: int = 32, bias: bool = True) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc, bias)
        self.rdb2 = ResidualDenseBlock(nf, gc, bias)
        self.rdb3 = ResidualDenseBlock(nf, gc, bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))
