"""Output heads: features (and the measured patch colour) -> CIELAB.

Heads that predict the colour, valid by construction:
`lab`: L* = 100 sigmoid, a* and b* = 128 tanh, so no prediction leaves the Lab range.
`linrgb`: linear sRGB in [0, 1] through a sigmoid, converted to Lab with raysweep.color; the
prediction is then always a displayable colour. Both start at the training mean target (the
output bias is set to its inverse), so the first epochs refine a sensible answer instead of
climbing out of the middle of Lab space.

Heads that correct the colour measured in the photo (`batch["measured"]`, raw Lab), the physics
of a colour-managed camera pipeline:
`ccm`: a 3x3 colour-correction matrix M = exp(g) (I + A) and an offset o are predicted from the
features and applied to the measured patch's linear RGB, lin' = M lin + o, then converted to
Lab. exp(g) is the exposure gain (log-linear in EV, as the metadata is), A the illuminant and
camera cross-talk. Starts at the identity: the first prediction is the measured colour.
`residual`: measured Lab + a predicted Lab correction; starts at the mean training correction.
"""

from __future__ import annotations

import torch
from torch import nn

from raysweep import color
from raysweep.errors import unknown_name

AB_SCALE = 128.0
RESIDUAL_SCALE = 10.0  # Lab units per unit of the residual head's raw output
OFFSET_SCALE = 0.05  # linear-RGB units per unit of the ccm head's raw offset output


def _mlp(in_dim: int, hidden: int, dropout: float, out: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                        nn.Linear(hidden, out))
    with torch.no_grad():
        mlp[-1].weight.mul_(0.01)  # small start: predictions begin near the output bias
    return mlp


class _Head(nn.Module):
    def __init__(self, in_dim: int, hidden: int, dropout: float, init_lab: torch.Tensor,
                 init_measured: torch.Tensor | None = None):
        super().__init__()
        self.mlp = _mlp(in_dim, hidden, dropout, 3)
        with torch.no_grad():
            self.mlp[-1].bias.copy_(self.inverse(init_lab.float()))

    def inverse(self, lab: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def squash(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
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


class CCMHead(nn.Module):
    """lin' = exp(g) (I + A) lin_measured + o, in float32; 13 outputs: g, A (9), o (3)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float, init_lab: torch.Tensor,
                 init_measured: torch.Tensor | None = None):
        super().__init__()
        self.mlp = _mlp(in_dim, hidden, dropout, 13)
        with torch.no_grad():
            self.mlp[-1].bias.zero_()  # identity matrix, zero offset
        self.register_buffer("eye", torch.eye(3), persistent=False)

    def matrix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.mlp(x).float()
        gain = torch.exp(z[:, :1]).unsqueeze(-1)  # (B, 1, 1)
        m = gain * (self.eye + z[:, 1:10].view(-1, 3, 3))
        return m, OFFSET_SCALE * z[:, 10:]

    def forward(self, x: torch.Tensor, batch: dict) -> torch.Tensor:
        m, offset = self.matrix(x)
        lin = color.lab_to_linear_srgb(batch["measured"].float())
        return color.linear_srgb_to_lab(torch.einsum("bij,bj->bi", m, lin) + offset)


class ResidualHead(nn.Module):
    """measured Lab + RESIDUAL_SCALE * mlp(features), in float32."""

    def __init__(self, in_dim: int, hidden: int, dropout: float, init_lab: torch.Tensor,
                 init_measured: torch.Tensor | None = None):
        super().__init__()
        self.mlp = _mlp(in_dim, hidden, dropout, 3)
        with torch.no_grad():
            start = torch.zeros(3) if init_measured is None else init_lab - init_measured
            self.mlp[-1].bias.copy_(start.float() / RESIDUAL_SCALE)

    def forward(self, x: torch.Tensor, batch: dict) -> torch.Tensor:
        return batch["measured"].float() + RESIDUAL_SCALE * self.mlp(x).float()


HEAD_CLASSES = {"lab": LabHead, "linrgb": LinRGBHead, "ccm": CCMHead, "residual": ResidualHead}


def create_head(name: str, in_dim: int, hidden: int, dropout: float, init_lab: torch.Tensor,
                init_measured: torch.Tensor | None = None) -> nn.Module:
    """`init_lab`: the training mean target; `init_measured`: the training mean measured colour."""
    if name not in HEAD_CLASSES:
        raise unknown_name("head", name, HEAD_CLASSES, where="TrainConfig.head")
    return HEAD_CLASSES[name](in_dim, hidden, dropout, init_lab, init_measured)
