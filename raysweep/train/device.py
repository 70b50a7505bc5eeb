"""The torch device a model runs on ("auto": a CUDA GPU when one is visible)."""

from __future__ import annotations

import torch

from raysweep.errors import UserError


def pick_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA GPU is visible",
                        fix="use device=auto or cpu, or run on a GPU node")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
