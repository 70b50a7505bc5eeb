"""Checkpoints: a directory with `model.pt` (state_dict) and `checkpoint.json` (how to rebuild it).

`checkpoint.json` holds the TrainConfig dict, the FeatureStats dict, the data identity
(`split_id`, `content_hash`, `split_file`, crop, image size), the epoch and its metrics. Training
adds `train_state.pt` (optimizer, scheduler, epoch, best) so that a trial can resume. Everything
loads with `torch.load(weights_only=True)`: a checkpoint can never run code.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from raysweep.config import TrainConfig
from raysweep.data.prepared import Prepared
from raysweep.errors import UserError
from raysweep.fsutil import atomic_dir
from raysweep.models import build_model
from raysweep.models.inputs import FeatureStats, encode

MODEL_FILE, META_FILE, STATE_FILE = "model.pt", "checkpoint.json", "train_state.pt"
CHECKPOINT_FILES = (MODEL_FILE, META_FILE, STATE_FILE)
FORMAT = 1


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model  # DDP wraps in .module


def write(directory: str | os.PathLike, model: torch.nn.Module, cfg: TrainConfig,
          stats: FeatureStats, data_info: dict, epoch: int, metrics: dict,
          train_state: dict | None = None) -> None:
    """Write a checkpoint into `directory` (created; existing files overwritten)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(unwrap(model).state_dict(), d / MODEL_FILE)
    if train_state is not None:
        torch.save(train_state, d / STATE_FILE)
    meta = {
        "format": FORMAT, "config": cfg.to_dict(), "stats": stats.to_dict(), "epoch": int(epoch),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, int | float | str)},
        **{k: data_info.get(k) for k in ("split_id", "content_hash", "split_file", "crop", "size")},
    }
    (d / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))


def save(directory: str | os.PathLike, *args, **kwargs) -> Path:
    """Like `write`, but atomic: a reader sees the old checkpoint or the new one, never half."""
    with atomic_dir(directory, where="checkpoint folder", also=CHECKPOINT_FILES) as tmp:
        write(tmp, *args, **kwargs)
    return Path(directory)


_REWRITE = "point at an intact folder written by raysweep training (re-download or re-train it)"


def read_meta(directory: str | os.PathLike) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise UserError(f"{directory} is not a raysweep checkpoint (no {META_FILE})",
                        where=str(directory), fix="point at a folder written by raysweep training")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"the checkpoint's {META_FILE} is unreadable or not JSON ({e})",
                        where=str(path), fix=_REWRITE) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or \
            not isinstance(meta.get("stats"), dict):
        raise UserError(f"the checkpoint's {META_FILE} lacks its `config` or `stats` block",
                        where=str(path), fix=_REWRITE)
    return meta


def load_train_state(directory: str | os.PathLike) -> dict | None:
    path = Path(directory) / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def pick_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda was asked for but no CUDA GPU is visible",
                        fix="use device=auto or cpu, or run on a GPU node")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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
                        f"({type(e).__name__}: {e})", where=where, fix=_REWRITE) from None
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise UserError(f"the checkpoint has no {MODEL_FILE}", where=str(directory), fix=_REWRITE)
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
                        where=str(path), fix=_REWRITE) from None
    if not isinstance(state, dict):
        raise UserError(f"{MODEL_FILE} holds a {type(state).__name__}, not a state dict",
                        where=str(path), fix=_REWRITE)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # missing keys or tensors of the wrong shape
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise UserError(f"the weights in {MODEL_FILE} do not fit the model its {META_FILE} "
                        f"describes ({first[:200]})", where=str(path), fix=_REWRITE) from None
    model.to(pick_device(device)).eval()
    return Predictor(model, cfg, stats, meta)
