"""The checkpoint format: a folder with `model.pt` (state_dict) and `checkpoint.json`.

`checkpoint.json` holds the TrainConfig dict, the FeatureStats dict, the data identity
(`split_id`, `content_hash`, `split_file`, crop, image size), the epoch and its metrics. Training
adds `train_state.pt` (optimizer, scheduler, epoch, best) so that a trial can resume. Everything
loads with `torch.load(weights_only=True)`: a checkpoint can never run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from raysweep.config import TrainConfig
from raysweep.errors import UserError
from raysweep.fsutil import atomic_dir
from raysweep.models.inputs import FeatureStats
from raysweep.train.checkpoint_files import CHECKPOINT_FILES, META_FILE, MODEL_FILE, STATE_FILE

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


REWRITE = "point at an intact folder written by raysweep training (re-download or re-train it)"


def read_meta(directory: str | os.PathLike) -> dict:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise UserError(f"{directory} is not a raysweep checkpoint (no {META_FILE})",
                        where=str(directory), fix="point at a folder written by raysweep training")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"the checkpoint's {META_FILE} is unreadable or not JSON ({e})",
                        where=str(path), fix=REWRITE) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or \
            not isinstance(meta.get("stats"), dict):
        raise UserError(f"the checkpoint's {META_FILE} lacks its `config` or `stats` block",
                        where=str(path), fix=REWRITE)
    return meta


def load_train_state(directory: str | os.PathLike) -> dict | None:
    path = Path(directory) / STATE_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
