"""A trained model loaded from its checkpoint folder (`load -> Predictor`), and batched
prediction (`predict_batch`, also what the training loop validates with)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from raysweep.config import TrainConfig
from raysweep.data.prepared import Prepared
from raysweep.errors import UserError
from raysweep.models import build_model
from raysweep.models.inputs import FeatureStats, encode
from raysweep.train.checkpoint import META_FILE, MODEL_FILE, REWRITE, read_meta
from raysweep.train.device import pick_device


@torch.no_grad()
def predict_batch(model: torch.nn.Module, tensors: dict[str, torch.Tensor], idx: torch.Tensor,
                  batch_size: int = 512, autocast: bool = False) -> torch.Tensor:
    """Lab predictions (len(idx), 3) in float32, in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(idx), batch_size):
            sel = idx[start:start + batch_size]
            batch = {k: v[sel].to(device, non_blocking=True) for k, v in tensors.items()
                     if k != "target"}
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=autocast and device.type == "cuda"):
                out.append(model(batch).float())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 3, device=device)


class Predictor:
    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, stats: FeatureStats, meta: dict):
        self.model, self.cfg, self.stats, self.meta = model, cfg, stats, meta

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def check(self, data: Prepared) -> None:
        """Refuse data prepared differently from the training data (crop, size)."""
        if not self.cfg.uses_image or data.images is None:
            return
        size = data.images.shape[-1]
        if self.meta.get("size") not in (None, size):
            raise UserError(f"the model was trained on {self.meta['size']} px crops, these are "
                            f"{size} px", fix=f"prepare the data with size={self.meta['size']}")
        crop = data.info.get("crop")
        if crop and self.meta.get("crop") and crop != self.meta["crop"]:
            raise UserError(f"the model was trained on crop={self.meta['crop']!r}, this data is "
                            f"crop={crop!r}", fix=f"prepare the data with crop={self.meta['crop']}")

    def predict(self, data: Prepared, batch_size: int = 512) -> np.ndarray:
        """(N, 3) CIELAB D65 predictions for every row of `data`."""
        self.check(data)
        tensors = encode(data, self.stats, self.cfg)
        idx = torch.arange(len(data))
        lab = predict_batch(self.model, tensors, idx, batch_size, autocast=False)
        return lab.cpu().numpy().astype(np.float32)


def load(directory: str | os.PathLike, device: str = "auto") -> Predictor:
    meta = read_meta(directory)
    where = f"{directory}/{META_FILE}"
    cfg = TrainConfig.from_dict(meta["config"], where=where)
    try:
        stats = FeatureStats.from_dict(meta["stats"])
        model = build_model(cfg, stats)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"the checkpoint's feature statistics are incomplete or malformed "
                        f"({type(e).__name__}: {e})", where=where, fix=REWRITE) from None
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise UserError(f"the checkpoint has no {MODEL_FILE}", where=str(directory), fix=REWRITE)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused an object that is no tensor
        raise UserError(f"refusing to load {path}: it holds Python objects other than tensors, "
                        f"which could run code when unpickled ({str(e).splitlines()[-1][:200]})",
                        where=str(path),
                        fix="load only checkpoints written by raysweep training") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # empty or truncated file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{MODEL_FILE} is empty, truncated or not a torch file ({reason})",
                        where=str(path), fix=REWRITE) from None
    if not isinstance(state, dict):
        raise UserError(f"{MODEL_FILE} holds a {type(state).__name__}, not a state dict",
                        where=str(path), fix=REWRITE)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing keys or tensors of the wrong shape
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise UserError(f"the weights in {MODEL_FILE} do not fit the model its {META_FILE} "
                        f"describes ({first[:200]})", where=str(path), fix=REWRITE) from None
    model.to(pick_device(device)).eval()
    return Predictor(model, cfg, stats, meta)
