"""Ensembles: the mean prediction (in CIELAB) of several trained models, served as one model.

eval_winners builds the `ensemble:topK` candidate (raysweep.evaluate.ensemble_candidate) and
registers it when it is best on validation; this module is what predict and the pyfunc load.

`EnsemblePredictor` has the interface of a checkpoint's Predictor (`.predict(data)`, `.cfg`,
`.meta`, `.stats`, `.calibration`) plus `.spread(data)`, the members' disagreement per photo,
which the conformal bound (raysweep.serve.bounds) uses as a difficulty feature.

Geometry is kept simple: every member that reads the image must have been trained on the same
crop and size, so one prepared dataset (or one set of photos cut once) feeds them all; tabular
members take their inputs (mean colour, metadata, ring) from the same rows. Members that would
need another geometry are left out of the candidate (evaluate.ensemble_candidate) and refused by `load`.
Members must share the data identity (content hash and split id): the mean of models that saw
different test photos would not be a model of anything.

On disk an ensemble is a folder: `ensemble.json` (format, member list, how they combine, each
member's weight), `members/NN/` (each a checkpoint: model.pt + checkpoint.json, or a
gradient-boosting family: raysweep.serve.family) and, once eval_winners has calibrated it,
`calibration.json`. It loads with weights_only like any checkpoint; a family's trees are plain
arrays.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from raysweep.data.prepared import Prepared
from raysweep.errors import UserError
from raysweep.serve import family
from raysweep.train import checkpoint, predictor

FILE = "ensemble.json"
MEMBERS_DIR = "members"
FORMAT = 1


def geometry_of(predictor) -> tuple[str, int] | None:
    """(crop, size) an image model needs; None for a model that reads no image."""
    if not predictor.cfg.uses_image:
        return None
    meta = predictor.meta
    return str(meta.get("crop") or predictor.cfg.crop), int(meta.get("size") or
                                                            predictor.cfg.image_size)


def identity_of(predictor) -> tuple:
    return predictor.meta.get("content_hash"), predictor.meta.get("split_id")


class EnsemblePredictor:
    """Mean in Lab of its members' predictions on the same rows (weighted: the cross-family blend
    that eval_winners' session folds choose, an ensemble's members sharing its weight)."""

    def __init__(self, members: list, names: list[str] | None = None, info: dict | None = None,
                 weights: list[float] | None = None):
        if len(members) < 2:
            raise UserError(f"an ensemble needs at least 2 members, got {len(members)}")
        geoms = {g for g in map(geometry_of, members) if g is not None}
        if len(geoms) > 1:
            raise UserError(f"ensemble members were trained on different crops/sizes "
                            f"({sorted(geoms)}): one photo cannot feed them all",
                            fix="build the ensemble from members with one crop and size")
        ids = {identity_of(m) for m in members}
        if len(ids) > 1:
            raise UserError("ensemble members were trained on different data (content hash, "
                            f"split id: {sorted(map(str, ids))})",
                            fix="build the ensemble from one sweep's runs on one dataset")
        self.members = list(members)
        self.names = list(names or [f"member{i}" for i in range(len(members))])
        self.info = dict(info or {})
        w = np.ones(len(members)) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (len(members),) or not (np.isfinite(w).all() and (w > 0).all()):
            raise UserError(f"ensemble weights {list(w)} must be {len(members)} positive numbers",
                            fix="re-run `python -m raysweep.eval_winners`, which writes them")
        self.weights = w / w.sum()
        # geometry, config and camera vocabulary come from the first image member (or the first)
        self.lead = next((m for m in members if m.cfg.uses_image), members[0])

    @property
    def cfg(self):
        return self.lead.cfg

    @property
    def stats(self):
        return self.lead.stats  # one data identity: every member has the same camera vocabulary

    @property
    def meta(self) -> dict:
        return {**self.lead.meta, "ensemble": self.names}

    @property
    def device(self):
        return self.lead.device

    def member_predictions(self, data: Prepared, batch_size: int = 512) -> np.ndarray:
        """(M, N, 3) each member's Lab predictions for every row of `data`."""
        return np.stack([m.predict(data, batch_size) for m in self.members])

    def predict(self, data: Prepared, batch_size: int = 512) -> np.ndarray:
        """(N, 3) CIELAB: the members' (weighted) mean."""
        p = self.member_predictions(data, batch_size).astype(np.float64)
        return np.tensordot(self.weights, p, axes=1).astype(np.float32)

    def spread(self, data: Prepared) -> np.ndarray:
        """(N,) mean Lab distance of the members from their mean: how much they disagree."""
        p = self.member_predictions(data).astype(np.float64)
        return np.linalg.norm(p - p.mean(axis=0), axis=-1).mean(axis=0)


def save(directory: str | os.PathLike, member_dirs: list, names: list[str],
         info: dict | None = None, weights: list[float] | None = None) -> Path:
    """Write an ensemble folder from its members' folders: checkpoints (weights and config only:
    the training state is not needed to predict) or gradient-boosting families."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (src, name) in enumerate(zip(member_dirs, names)):
        rel = f"{MEMBERS_DIR}/{i:02d}"
        (d / rel).mkdir(parents=True, exist_ok=True)
        files = (family.FILE, family.TREES) if family.is_family(src) else \
            (checkpoint.MODEL_FILE, checkpoint.META_FILE)
        for f in files:
            shutil.copy2(Path(src) / f, d / rel / f)
        entries.append({"path": rel, "name": name} |
                       ({} if weights is None else {"weight": float(weights[i])}))
    spec = {"format": FORMAT, "combine": "mean_lab", "members": entries, "info": info or {}}
    (d / FILE).write_text(json.dumps(spec, indent=1, default=str))
    return d


def is_ensemble(directory: str | os.PathLike) -> bool:
    return (Path(directory) / FILE).is_file()


def load(directory: str | os.PathLike, device: str = "auto") -> EnsemblePredictor:
    d = Path(directory).resolve()
    try:
        spec = json.loads((d / FILE).read_text())
        entries = spec["members"]
        paths = [(d / e["path"]).resolve() for e in entries]
        names = [str(e.get("name", e["path"])) for e in entries]
        weights = [float(e.get("weight", 1.0)) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{d / FILE} is not a readable ensemble ({type(e).__name__}: {e})",
                        where=str(d / FILE), fix="re-run `python -m raysweep.eval_winners`, "
                        "which writes it") from None
    if spec.get("combine") != "mean_lab":
        raise UserError(f"{d / FILE}: unknown combine {spec.get('combine')!r}", where=str(d))
    bad = [str(p) for p in paths if not p.is_relative_to(d)]
    if bad:
        raise UserError(f"{d / FILE} points outside its folder ({bad})", where=str(d))
    return EnsemblePredictor([_load_one(p, device) for p in paths], names,
                             info=spec.get("info", {}), weights=weights)


def _load_one(directory, device: str):
    if family.is_family(directory):
        return family.load(directory)
    return predictor.load(directory, device=device)


def load_folder(directory: str | os.PathLike, device: str = "auto"):
    """A checkpoint folder, a gradient-boosting family's folder or an ensemble folder
    (`ensemble.json` + member folders, as eval_winners registers an ensemble champion): either
    way a Predictor-like object."""
    if is_ensemble(directory):
        return load(directory, device=device)
    return _load_one(directory, device)
