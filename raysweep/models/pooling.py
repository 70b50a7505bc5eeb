"""Patch/surround pooling: the last feature map averaged over the patch and over its surround.

A `*_bg` crop is mostly background (adaptive_bg: the patch box grown by a quarter of its side on
every edge), and one global average mixes the skin with the light reference around it. This
pooling keeps them apart: two masks from the crop geometry (raysweep.data.crop.CropParams), a
centre square shrunk a little (the patch, away from its edges) and everything outside a slightly
grown centre square (the surround), each area-averaged down to the feature map's resolution so
that every cell weighs by the share of it that lies in the mask. Output: (B, 2C) = patch mean
next to surround mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raysweep.data.crop import CropParams
from raysweep.errors import UserError

PATCH_SHRINK = 0.8  # the patch mask stops short of the patch edge (rims, shifts by augmentation)
SURROUND_GROW = 1.15  # the surround starts a little outside it
FINE = 64  # masks are drawn at FINE x the feature resolution, then area-averaged


def centre_fraction(crop: str) -> float:
    """The patch's share of the crop side for a crop with background, from the crop geometry."""
    p = CropParams()
    if crop == "adaptive_bg":
        return 1.0 / (1.0 + 2.0 * p.bg_margin)
    if crop == "center_bg":
        return 1.0 / p.bg_scale
    raise UserError(f"pooling=patch_surround needs a crop with background, not {crop!r}",
                    where="TrainConfig.crop", fix="use adaptive_bg or center_bg, or pooling=avg")


def square_mask(h: int, w: int, side: float, device, inside: bool) -> torch.Tensor:
    """(h, w) share of each cell inside (or outside) a centred square of `side` (crop = 1)."""
    n_h, n_w = h * FINE, w * FINE
    ys = (torch.arange(n_h, device=device, dtype=torch.float32) + 0.5) / n_h - 0.5
    xs = (torch.arange(n_w, device=device, dtype=torch.float32) + 0.5) / n_w - 0.5
    box = (ys.abs()[:, None] < side / 2) & (xs.abs()[None, :] < side / 2)
    fine = (box if inside else ~box).float()[None, None]
    return F.adaptive_avg_pool2d(fine, (h, w))[0, 0]


class PatchSurroundPool(nn.Module):
    def __init__(self, centre: float):
        super().__init__()
        self.patch_side = centre * PATCH_SHRINK
        self.surround_side = min(centre * SURROUND_GROW, 1.0)
        self._masks: dict = {}

    def masks(self, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (h, w, str(device))
        if key not in self._masks:
            patch = square_mask(h, w, self.patch_side, device, inside=True)
            surround = square_mask(h, w, self.surround_side, device, inside=False)
            if surround.sum() <= 0:  # a 1x1 map has no surround cell: fall back to the whole map
                surround = torch.ones_like(surround)
            self._masks[key] = (patch / patch.sum(), surround / surround.sum())
        return self._masks[key]

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        patch, surround = self.masks(fmap.shape[2], fmap.shape[3], fmap.device)
        patch, surround = patch.to(fmap.dtype), surround.to(fmap.dtype)
        return torch.cat((torch.einsum("bchw,hw->bc", fmap, patch),
                          torch.einsum("bchw,hw->bc", fmap, surround)), dim=1)


def install(backbone, cfg) -> None:
    """Give `backbone` the pooling `cfg.pooling` asks for (global average needs nothing)."""
    if cfg.pooling == "patch_surround":
        backbone.set_pool(PatchSurroundPool(centre_fraction(cfg.crop)), 2 * backbone.num_features)
