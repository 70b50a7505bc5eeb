"""A crowned gradient-boosting family as a servable model: a folder of `family.json` and
`trees.npz`.

On new sessions eval_winners' session folds often crown a gradient-boosting family
(raysweep.evaluate.selection.FAMILIES), alone or in a mean with the best learned model. Such a
champion must reach `predict` and the registry like any checkpoint, so its fitted state goes to
disk: the trees as plain arrays (raysweep.serve.trees: no pickle, nothing that loading could run)
and, in `family.json`, which family it is, its camera vocabulary, the feature columns it kept and
the data identity it was fitted on. Loading rebuilds the family's own class
(raysweep.models.gbm), so the feature code that scored it is the code that serves it.

A cross-family blend is a weighted ensemble folder (raysweep.serve.ensemble) with family folders
among its members.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raysweep.data.prepared import Prepared
from raysweep.errors import UserError
from raysweep.fsutil import atomic_dir
from raysweep.models import gbm
from raysweep.serve import trees

FILE = "family.json"
TREES = "trees.npz"
FORMAT = 1
REFIT = "re-run `python -m raysweep.eval_winners`, which writes the family's folder"


@dataclass(frozen=True)
class FamilyConfig:
    """What serving asks of a model's configuration (the fields a TrainConfig also has)."""

    features: str  # the family's baseline name, e.g. "gbm_inv"
    crop: str | None
    image_size: int | None
    uses_image: bool = False


@dataclass(frozen=True)
class Vocabulary:
    cameras: list[str]


class FamilyModel:
    """A fitted gradient-boosting family with the interface of a checkpoint's Predictor."""

    def __init__(self, fitted, cfg: FamilyConfig, meta: dict):
        self.fitted, self.cfg, self.meta = fitted, cfg, meta
        self.stats = Vocabulary(sorted(fitted.cameras))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def predict(self, data: Prepared, batch_size: int = 512) -> np.ndarray:
        """(N, 3) CIELAB D65 predictions for every row of `data` (batch_size: interface only)."""
        return np.asarray(self.fitted.predict(data), np.float32)


def is_family(directory: str | os.PathLike) -> bool:
    return (Path(directory) / FILE).is_file()


def save(directory: str | os.PathLike, name: str, fitted, data_info: dict) -> Path:
    """Write a fitted family (gbm.FAMILIES[name], fitted) to `directory`, atomically."""
    if not isinstance(fitted, gbm.GradientBoosted) or not hasattr(fitted, "models"):
        raise TypeError(f"{name}: only a fitted gradient-boosting family can be saved")
    keep = np.asarray(fitted.keep, bool)
    spec = {"format": FORMAT, "family": name, "cameras": fitted.cameras,
            "keep": keep.tolist(),
            **{k: data_info.get(k) for k in ("content_hash", "split_id", "crop", "size")}}
    with atomic_dir(Path(directory)) as tmp:
        trees.save(tmp / TREES, fitted.models)
        (tmp / FILE).write_text(json.dumps(spec, indent=1, default=str))
    return Path(directory)


def load(directory: str | os.PathLike) -> FamilyModel:
    d = Path(directory)
    where = str(d / FILE)
    try:
        spec = json.loads((d / FILE).read_text())
        name, cameras, keep = spec["family"], dict(spec["cameras"]), np.array(spec["keep"], bool)
        fmt = spec.get("format")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{where} is not a readable family description "
                        f"({type(e).__name__}: {e})", where=where, fix=REFIT) from None
    if fmt != FORMAT:
        raise UserError(f"{where} has format {fmt!r}; this raysweep reads format {FORMAT}",
                        where=where, fix=REFIT)
    if name not in gbm.FAMILIES:
        raise UserError(f"{where}: {name!r} is not a gradient-boosting family (one of "
                        f"{', '.join(gbm.FAMILIES)})", where=where, fix=REFIT)
    fitted = gbm.FAMILIES[name]()
    models = trees.load(d / TREES)
    if len(models) != 3 or any(m.n_features != int(keep.sum()) for m in models):
        raise UserError(f"{d / TREES} does not fit {where} (3 channels of {int(keep.sum())} "
                        "features expected)", where=str(d / TREES), fix=REFIT)
    fitted.cameras, fitted.keep, fitted.models = cameras, keep, models
    cfg = FamilyConfig(features=name, crop=spec.get("crop"), image_size=spec.get("size"))
    meta = {k: spec.get(k) for k in ("content_hash", "split_id", "crop", "size")}
    return FamilyModel(fitted, cfg, {**meta, "family": name})
