"""The training loss: CIEDE2000 (the metric itself) plus an optional, scheduled auxiliary term.

dE00 is what the study reports, so it is what we optimise. Its gradient is weak and uneven far
from the answer (the weighting functions flatten large differences), so an auxiliary MSE or Huber
term in Lab or linear RGB helps early; the schedule anneals it away so that the end of training
optimises dE00 alone. Per-sample terms are reduced by mean or median (robust to outliers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from raysweep import color
from raysweep.config import TrainConfig
from raysweep.errors import unknown_name

SCHEDULES = ("constant", "linear_decay", "cosine_decay")


def aux_weight(cfg: TrainConfig, epoch: float) -> float:
    """Auxiliary weight at (fractional, 0-based) `epoch`: full at 0, annealed towards 0 at the end."""
    t = min(max(epoch / max(cfg.epochs, 1), 0.0), 1.0)
    if cfg.aux_schedule == "constant":
        return cfg.aux_weight
    if cfg.aux_schedule == "linear_decay":
        return cfg.aux_weight * (1.0 - t)
    if cfg.aux_schedule == "cosine_decay":
        return cfg.aux_weight * 0.5 * (1.0 + math.cos(math.pi * t))
    raise unknown_name("aux_schedule", cfg.aux_schedule, SCHEDULES, where="TrainConfig.aux_schedule")


def _reduce(x: torch.Tensor, how: str) -> torch.Tensor:
    return x.median() if how == "median" else x.mean()


def aux_per_sample(kind: str, pred_lab: torch.Tensor, target_lab: torch.Tensor) -> torch.Tensor:
    """Per-sample auxiliary loss (B,); Lab in Lab units, linear RGB in [0, 1] units."""
    if kind.endswith("_linrgb"):
        pred, target = color.lab_to_linear_srgb(pred_lab), color.lab_to_linear_srgb(target_lab)
    else:
        pred, target = pred_lab, target_lab
    if kind.startswith("mse"):
        return ((pred - target) ** 2).mean(-1)
    if kind.startswith("huber"):
        # delta 1 dE-ish unit in Lab; 1% in linear RGB, where values live in [0, 1]
        delta = 0.01 if kind.endswith("_linrgb") else 1.0
        return F.huber_loss(pred, target, reduction="none", delta=delta).mean(-1)
    raise unknown_name("aux_loss", kind, ("none", "mse_lab", "huber_lab", "mse_linrgb",
                                          "huber_linrgb"), where="TrainConfig.aux_loss")


class Loss:
    """loss(pred, target, epoch) -> (total, {"de00": ..., "aux": ..., "aux_weight": ...})."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def __call__(self, pred_lab: torch.Tensor, target_lab: torch.Tensor, epoch: float):
        pred_lab, target_lab = pred_lab.float(), target_lab.float()
        de = _reduce(color.delta_e00(pred_lab, target_lab), self.cfg.reduction)
        total = self.cfg.de00_weight * de
        parts = {"de00": de.detach()}  # tensors: no device sync per batch
        if self.cfg.aux_loss != "none":
            w = aux_weight(self.cfg, epoch)
            aux = _reduce(aux_per_sample(self.cfg.aux_loss, pred_lab, target_lab), self.cfg.reduction)
            total = total + w * aux
            parts.update(aux=aux.detach(), aux_weight=w)
        return total, parts
