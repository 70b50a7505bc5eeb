"""New photos to predictions: Lab, sRGB hex, skin-tone category, error bound and flags.

Each photo goes through the same steps as a prepared dataset (raysweep.data: EXIF, patch
analysis, ring statistics, crop at the model's crop and size) and then through the model.
Metadata given per photo (a `--meta` CSV with a `photo` column and any contract columns) wins
over EXIF, as the manifest does in `prepare`. `python -m raysweep.predict` is the command.
"""


from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raysweep import color
from raysweep.data import crop as cropping
from raysweep.data import exif_reader as exif_mod
from raysweep.data import features as data_features
from raysweep.data import images
from raysweep.data import ring as ring_stats
from raysweep.data.manifest import as_text, to_floats
from raysweep.data.prepared import RING_NAMES, Prepared
from raysweep.errors import UserError
from raysweep.serve.bounds import trust_columns

log = logging.getLogger("raysweep.predict")
OVERRIDE_COLUMNS = ("camera", "make", "model", "exposure_time_s", "f_number", "iso",
                    "brightness_ev", "exposure_bias_ev", "mean_L", "mean_a", "mean_b")
# a photo naming its capture session (--meta): a session the model trained on gets the
# seen-sessions bound, any other photo the new-session one (raysweep.serve.bounds)
SESSION_COLUMN = "set_id"
# what a row (a sheet's, a --meta CSV's, a pyfunc request's) gives as numbers
NUMBER_COLUMNS = (*OVERRIDE_COLUMNS[3:], *RING_NAMES)


@dataclass
class Photo:
    """One processed photo: the same unit of work a prepare worker produces."""

    name: str
    crops: dict[str, np.ndarray]  # variant -> (3, size, size) uint8
    mean_lab: np.ndarray  # (3,) patch mean from the crop analysis
    exif: dict
    notes: list[str] = field(default_factory=list)
    ring: np.ndarray | None = None  # background-ring statistics (RING_NAMES), as prepare caches
    status: str = "patch found"  # the crop analysis' verdict (the patch_not_found flag)


def read_photo(source: str | Path | bytes, size: int, name: str | None = None) -> Photo:
    """Decode, read EXIF and crop one photo (path or encoded bytes) exactly as `prepare` does.

    An unreadable photo is a UserError naming it, with the reason raysweep.data.images gives.
    """
    name = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, bytes):
        with tempfile.NamedTemporaryFile(suffix=".img") as f:
            f.write(source)
            f.flush()
            r = images.process((0, f.name, cropping.CropParams(size=size)))
    else:
        r = images.process((0, str(source), cropping.CropParams(size=size)))
    if r["error"]:
        raise UserError(f"cannot use photo {name}: {r['error']}", where=name,
                        fix="pass a colour JPEG, PNG or TIFF at least as large as the crop")
    notes = list(r["warnings"]) + list(r["exif_notes"])
    if r["status"] != "patch found":
        notes.append(r["status"])
    return Photo(name=name, crops=r["crops"], mean_lab=r["mean_lab"], exif=r["exif"], notes=notes,
                 status=r["status"], ring=r.get("ring"))


def _normal(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def resolve_cameras(cameras: np.ndarray, vocabulary: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Map camera ids onto the model's vocabulary (exact, then ignoring case and punctuation).

    An id the model never saw keeps its name, so the model's unknown-camera bucket takes it,
    and the returned warning says so.
    """
    vocab = {_normal(v): v for v in vocabulary}
    out, unknown = [], []
    for cam in cameras:
        cam = str(cam)
        # EXIF gives "NIKON CORPORATION NIKON D5100" where a manifest said "nikon_d5100": accept
        # a vocabulary id contained in the device text when exactly one is
        inside = [v for k, v in vocab.items() if k and k in _normal(cam)]
        if cam in vocabulary:
            out.append(cam)
        elif _normal(cam) in vocab:
            out.append(vocab[_normal(cam)])
        elif len(inside) == 1:
            log.info("camera %r taken as the model's %r", cam, inside[0])
            out.append(inside[0])
        else:
            out.append(cam)
            unknown.append(cam)
    return np.array(out, dtype=object).astype(str), sorted(set(unknown))


def photos_to_prepared(photos: Sequence[Photo], crop: str, size: int,
                       overrides: pd.DataFrame | None = None,
                       cameras: Sequence[str] = ()) -> tuple[Prepared, list[list[str]]]:
    """Photos -> a `Prepared` (target NaN, split "test") plus per-photo notes.

    `overrides` is aligned with `photos` (same length), NaN/"" where not given.
    """
    rows, notes = [], []
    if overrides is not None:
        overrides = numbers(overrides)
    for i, ph in enumerate(photos):
        given: dict = {}
        if overrides is not None:
            for col in OVERRIDE_COLUMNS:
                v = overrides.iloc[i][col] if col in overrides.columns else None
                if not (v is None or (isinstance(v, float) and np.isnan(v)) or v == ""):
                    given[col] = v
        values, _ = exif_mod.merge(given, ph.exif)  # the CSV wins, EXIF fills the gaps
        session = overrides.iloc[i].get(SESSION_COLUMN) if overrides is not None else None
        rows.append({"sample_id": ph.name, **given, **values, SESSION_COLUMN: as_text(session)})
        notes.append(list(ph.notes))
    frame = pd.DataFrame(rows)
    for col in OVERRIDE_COLUMNS[3:]:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    mean_lab, _ = data_features.mean_lab(frame, np.stack([p.mean_lab for p in photos]))
    camera = _known_cameras(frame, cameras, notes, "pass --meta with a `camera` column")
    n = len(photos)
    data = Prepared(
        sample_id=np.array([p.name for p in photos]).astype(str),
        images=np.stack([p.crops[crop] for p in photos]),
        mean_lab=mean_lab, meta=data_features.meta_matrix(frame), camera=camera,
        device=data_features.device_text(frame), target=np.full((n, 3), np.nan, np.float32),
        split=np.array(["test"] * n), frame=frame, info={"crop": crop, "size": size},
        # a ring model refuses data without the block (models.inputs.require_ring), never guesses
        ring=np.stack([p.ring for p in photos]).astype(np.float32)
        if all(p.ring is not None for p in photos) else None,
    )
    return data, notes


def _known_cameras(frame: pd.DataFrame, cameras: Sequence[str], notes: list[list[str]],
                   how: str) -> np.ndarray:
    """The rows' camera ids mapped onto the model's vocabulary; an unknown one is warned about
    once (`how` says how to name a known one) and noted on each of its rows."""
    camera, unknown = resolve_cameras(data_features.camera_ids(frame), cameras)
    for cam in unknown:
        log.warning("camera %r is not one the model was trained on (%s): it goes to the "
                    "unknown-camera bucket, expect larger errors; %s to name a known one",
                    cam, ", ".join(cameras) or "none", how)
        for i, c in enumerate(camera):
            if c == cam:
                notes[i].append(f"unknown camera {cam!r}")
    return camera


INVALID = "invalid"
NON_FINITE_NOTE = "the model's output is not a finite colour (diverged weights): no prediction"


def finite_rows(lab: np.ndarray) -> np.ndarray:
    """(N,) True where all three Lab values are finite numbers."""
    return np.isfinite(np.asarray(lab, dtype=np.float64)).all(axis=1)


def describe(lab: np.ndarray) -> pd.DataFrame:
    """Lab -> the user-facing columns: L, a, b, hex (clipped to the sRGB gamut), ITA, category.

    A row whose Lab is not finite (a diverged model) gets NaN numbers, an empty hex and the
    category "invalid": a NaN cast to int would print as "#-8000000000000000..." and NaN angles
    fall through to the darkest category.
    """
    lab = np.asarray(lab, dtype=np.float64)
    ok = finite_rows(lab)
    safe = np.where(ok[:, None], lab, 0.0)
    t = torch.as_tensor(safe)
    rgb = color.lab_to_srgb(t).clamp(0, 1).numpy()
    angle = np.where(ok, color.ita(t).numpy(), np.nan)
    codes = np.round(rgb * 255).astype(int)
    return pd.DataFrame({
        "L": np.where(ok, lab[:, 0], np.nan), "a": np.where(ok, lab[:, 1], np.nan),
        "b": np.where(ok, lab[:, 2], np.nan),
        "hex": ["#{:02x}{:02x}{:02x}".format(*c) if good else "" for c, good in zip(codes, ok)],
        "ita_deg": angle,
        "ita_category": [color.ita_category(float(a)) if good else INVALID
                         for a, good in zip(angle, ok)],
    })


def geometry(predictor) -> tuple[str, int]:
    """The crop variant and size the model was trained on (what its photos must be cut to)."""
    crop = predictor.meta.get("crop") or predictor.cfg.crop
    return crop, int(predictor.meta.get("size") or predictor.cfg.image_size)


def predict_photos(predictor, photos: Sequence[Photo], overrides: pd.DataFrame | None = None,
                   level: float | None = None) -> pd.DataFrame:
    """Colour, error bound at `level` (default: the calibrated one) and OOD flags per photo."""
    crop, size = geometry(predictor)
    data, notes = photos_to_prepared(photos, crop, size, overrides, predictor.stats.cameras)
    lab = predictor.predict(data)
    out = describe(lab)
    for i in np.flatnonzero(~finite_rows(lab)):
        notes[i].append(NON_FINITE_NOTE)
    out.insert(0, "photo", [p.name for p in photos])
    out["camera"] = data.camera
    out["notes"] = ["; ".join(n) for n in notes]
    trust = trust_columns(predictor, data, lab, [p.status for p in photos], level)
    return pd.concat([out, trust], axis=1)


def rows_to_prepared(frame: pd.DataFrame, cameras: Sequence[str] = ()
                     ) -> tuple[Prepared, list[list[str]]]:
    """Spreadsheet rows (the tabular path: mean_L/a/b, metadata, optionally ring_* and set_id;
    no photo) -> a `Prepared` (target NaN, split "test") plus per-row notes. Rows are named by
    their `sample_id`, else row1, row2, ..."""
    frame = numbers(frame.reset_index(drop=True))
    if SESSION_COLUMN in frame.columns:  # as the manifest reads it: "" where missing, 3.0 -> "3"
        frame[SESSION_COLUMN] = frame[SESSION_COLUMN].map(as_text)
    n = len(frame)
    names = frame["sample_id"].astype(str).to_numpy() if "sample_id" in frame else \
        np.array([f"row{i + 1}" for i in range(n)])
    notes: list[list[str]] = [[] for _ in range(n)]
    camera = _known_cameras(frame, cameras, notes, "give the row a `camera` the model knows")
    mean_lab, _ = data_features.mean_lab(frame, None)
    data = Prepared(
        sample_id=names, images=None, mean_lab=mean_lab, meta=data_features.meta_matrix(frame),
        camera=camera, device=data_features.device_text(frame),
        target=np.full((n, 3), np.nan, np.float32), split=np.array(["test"] * n), frame=frame,
        info={}, ring=ring_stats.from_frame(frame))
    return data, notes


def numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its NUMBER_COLUMNS as floats: integers and floats as given, empty cells
    missing, "1/60" a fraction, as `prepare` reads a manifest. Any other text ("ISO 100") is a
    UserError naming the column and its first bad row: made missing, it would pass unnoticed as
    a row that never gave the value, and the model would predict without it."""
    out = {}
    for col in (c for c in NUMBER_COLUMNS if c in frame.columns):
        out[col], bad = to_floats(frame[col])
        if not bad:
            continue
        i = bad[0]
        named = f" (sample_id {frame['sample_id'].iloc[i]!r})" if "sample_id" in frame else ""
        more = f"; {len(bad) - 1} more row(s) in the column too" if len(bad) > 1 else ""
        raise UserError(f"{col}={frame[col].iloc[i]!r} in row {i + 1}{named} is not a number"
                        f"{more}", where=f"column {col} (row 1 is the first row of data)",
                        fix=f"write {col} as a plain number (100, not 'ISO 100'; a shutter speed "
                            "may be 1/60), or leave the cell empty where it is unknown")
    return frame.assign(**out)


def predict_rows(predictor, frame: pd.DataFrame, level: float | None = None) -> pd.DataFrame:
    """`predict_photos` for spreadsheet rows: the same columns (`photo` holds the row's name),
    bound and flags; the checks that need a photo (patch found, clipping, background) are
    listed as unchecked."""
    data, notes = rows_to_prepared(frame, predictor.stats.cameras)
    lab = predictor.predict(data)
    out = describe(lab)
    for i in np.flatnonzero(~finite_rows(lab)):
        notes[i].append(NON_FINITE_NOTE)
    out.insert(0, "photo", data.sample_id)
    out["camera"] = data.camera
    out["notes"] = ["; ".join(n) for n in notes]
    return pd.concat([out, trust_columns(predictor, data, lab, level=level)], axis=1)


def read_meta_csv(path: str, photos: Sequence[str]) -> pd.DataFrame:
    """Rows of the --meta CSV aligned with `photos` (by exact path, then by file name)."""
    try:
        meta = pd.read_csv(path, dtype={"camera": str, "make": str, "model": str,
                                        SESSION_COLUMN: str})
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --meta {path}: {e}", where=path) from None
    if "photo" not in meta.columns:
        raise UserError("the --meta CSV has no `photo` column", where=path,
                        fix="add a `photo` column with each photo's file name or path")
    known = (*OVERRIDE_COLUMNS, SESSION_COLUMN)
    unknown = [c for c in meta.columns if c != "photo" and c not in known]
    if unknown:
        raise UserError(f"--meta has unknown columns {unknown}", where=path,
                        fix=f"use photo plus any of: {', '.join(known)}")
    by_path = {str(p): i for i, p in enumerate(meta["photo"])}
    by_name = {Path(str(p)).name: i for i, p in enumerate(meta["photo"])}
    idx = [by_path.get(p, by_name.get(Path(p).name, -1)) for p in photos]
    missing = [p for p, i in zip(photos, idx) if i < 0]
    if missing:
        log.warning("--meta has no row for %s: EXIF only", ", ".join(missing))
    empty = pd.Series([np.nan] * len(meta.columns), index=meta.columns)
    rows = [meta.iloc[i] if i >= 0 else empty for i in idx]
    return pd.DataFrame(rows).reset_index(drop=True).drop(columns="photo")
