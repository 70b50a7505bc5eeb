"""Output heads: features -> CIELAB that is valid by construction.

`lab`: L* = 100 sigmoid, a* and b* = 128 tanh, so no prediction leaves the Lab range.
`linrgb`: linear sRGB in [0, 1] through a sigmoid, converted to Lab with raysweep.color; the
prediction is then always a displayable colour. Both start at the training mean target (the
output bias is set to its inverse), so the first epochs refine a sensible answer instead of
climbing out of the middle of Lab space.
"""

from __future__ import annotations

import torch
from torch import nn

from raysweep import color
from raysweep.errors import unknown_name

AB_SCALE = 128.0


class _Head(nn.Module):
    def __init__(self, in_dim: int, hidden: int, dropout: float, init_lab: torch.Tensor):
        super().__init__()
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, 3))
        last = self.mlp[-1]
        with torch.no_grad():
            last.weight.mul_(0.01)  # small start: predictions begin near the bias (a*, b* scale 128)
            last.bias.copy_(self.inverse(init_lab.float()))

    def inverse(self, lab: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def squash(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.squash(self.mlp(x).float())  # Lab math in float32, also under autocast


class LabHead(_Head):
    def squash(self, z):
        return torch.stack((100.0 * torch.sigmoid(z[:, 0]), AB_SCALE * torch.tanh(z[:, 1]),
                            AB_SCALE * torch.tanh(z[:, 2])), dim=1)

    def inverse(self, lab):
        L = (lab[0] / 100.0).clamp(1e-3, 1 - 1e-3)
        ab = (lab[1:] / AB_SCALE).clamp(-0.999, 0.999)
        return torch.cat((torch.logit(L)[None], torch.atanh(ab)))


class LinRGBHead(_Head):
    def squash(self, z):
        return color.linear_srgb_to_lab(torch.sigmoid(z))

    def inverse(self, lab):
        lin = color.lab_to_linear_srgb(lab.double()).clamp(1e-3, 1 - 1e-3)
        return torch.logit(lin).float()


HEADS = {"lab": LabHead, "linrgb": LinRGBHead}


def create_head(name: str, in_dim: int, hidden: int, dropout: float,
                init_lab: torch.Tensor) -> nn.Module:
    if name not in HEADS:
        raise unknown_name("head", name, HEADS, where="TrainConfig.head")
    return HEADS[name](in_dim, hidden, dropout, init_lab)
