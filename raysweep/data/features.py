"""Fixed, stateless per-row features: the same photo always gives the same numbers.

Only transforms with no fitted state live here (logs of ISO and exposure, the patch mean colour,
camera and device strings). Normalisation is fitted on the training split by the training code
(raysweep/models/inputs.py) and stored with the model, so nothing here can leak the test split.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from raysweep.data.prepared import META_NAMES, Prepared
from raysweep.errors import UserError

log = logging.getLogger(__name__)
UNKNOWN_CAMERA = "unknown"  # rows with no camera, make or model share one id (the unknown bucket)
MEAN = ("mean_L", "mean_a", "mean_b")


def meta_matrix(frame: pd.DataFrame) -> np.ndarray:
    """(N, 5) float32 in META_NAMES order; NaN stays NaN (missing is information, not zero)."""

    def col(name: str) -> np.ndarray:
        return frame[name].to_numpy(dtype=np.float64) if name in frame else np.full(len(frame),
                                                                                      np.nan)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iso, t = col("iso"), col("exposure_time_s")
        cols = {
            "log2_iso": np.where(iso > 0, np.log2(iso), np.nan),
            "log2_exposure_s": np.where(t > 0, np.log2(t), np.nan),
            "brightness_ev": col("brightness_ev"),
            "exposure_bias_ev": col("exposure_bias_ev"),
            "f_number": col("f_number"),
        }
        out = np.stack([cols[n] for n in META_NAMES], axis=1).astype(np.float32)
    # A value no float32 can hold (garbage metadata, an "inf" in a manifest) is unusable: missing.
    out[~np.isfinite(out)] = np.nan
    return out


def device_text(frame: pd.DataFrame) -> np.ndarray:
    """"make model" for the optional text embedding; "" when neither is known."""
    make = _text(frame, "make")
    model = _text(frame, "model")
    # Many phones repeat the make in the model ("Apple iPhone 12"): do not say it twice.
    out = [m if m.lower().startswith(k.lower()) and k else f"{k} {m}".strip()
           for k, m in zip(make, model)]
    return np.array(out, dtype=object).astype(str)


def camera_ids(frame: pd.DataFrame) -> np.ndarray:
    """The manifest's camera id, else the device text, else UNKNOWN_CAMERA."""
    cam = _text(frame, "camera")
    dev = device_text(frame)
    return one_spelling(np.array([c or d or UNKNOWN_CAMERA for c, d in zip(cam, dev)],
                                 dtype=object).astype(str))


def one_spelling(ids: np.ndarray) -> np.ndarray:
    """Ids that differ only by case or surrounding space ("iPhone12", "IPHONE12 ") are one
    camera, written as its most common spelling (ties: the first in sorted order), so a
    spreadsheet's inconsistent capitals cannot split a camera in two (serving already matches
    cameras ignoring case)."""
    ids = np.asarray(ids).astype(str)
    if not len(ids):
        return ids
    spellings: dict[str, dict[str, int]] = {}
    for c in ids:
        d = spellings.setdefault(c.strip().casefold(), {})
        d[c] = d.get(c, 0) + 1
    chosen = {k: min(v, key=lambda s, v=v: (-v[s], s)) for k, v in spellings.items()}
    merged = {k: sorted(v) for k, v in spellings.items() if len(v) > 1}
    if merged:
        log.warning("camera ids that differ only by case are one camera: %s", "; ".join(
            f"{' / '.join(map(repr, v))} -> {chosen[k]!r}" for k, v in merged.items()))
    return np.array([chosen[c.strip().casefold()] for c in ids], dtype=object).astype(str)


def mean_lab(frame: pd.DataFrame, measured: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Patch mean Lab: the manifest's mean_L/a/b where given (they win), else the crop's.

    Returns ((N, 3) float32, (N,) source in {"manifest", "crop", "missing"}).
    """
    n = len(frame)
    out = np.full((n, 3), np.nan, np.float64) if measured is None else \
        np.asarray(measured, np.float64).copy()
    source = np.where(np.isnan(out).any(1), "missing", "crop").astype(object)
    if all(c in frame for c in MEAN):
        given = frame[list(MEAN)].to_numpy(dtype=np.float64)
        ok = ~np.isnan(given).any(1)
        out[ok] = given[ok]
        source[ok] = "manifest"
    return out.astype(np.float32), source.astype(str)


def require_images(data: Prepared, features: str | None = None) -> np.ndarray:
    """The image array, or a clear error for tabular data (rows with mean_L/a/b, no photos)."""
    if data.images is None:
        raise UserError(
            f"features={features or 'image'!r} needs photos, but dataset "
            f"{data.info.get('card', '?')} is tabular (no image column, only mean_L/a/b)",
            where="feature preset",
            fix="use a non-image preset (mean+meta, meta or mean), or add an image column")
    return data.images


def _text(frame: pd.DataFrame, name: str) -> list[str]:
    if name not in frame:
        return [""] * len(frame)
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip()
            for v in frame[name].tolist()]
