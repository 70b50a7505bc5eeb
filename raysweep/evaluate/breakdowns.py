"""Per-group error metrics: where a model fails, not only how much on average.

Dimensions: camera, capture set, background (the manifest's `background_type`, else neutral or
coloured as the background ring looks), exposure regime (under / normal / over), illuminant
(synthetic latents only) and skin tone (ITA category of the TRUE colour, light to dark). Skin tone is binned
on the ground truth, never on the prediction, so a model that makes dark skin look lighter is
still counted against dark skin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from raysweep import color
from raysweep.data.prepared import Prepared
from raysweep.data.ring import p50
from raysweep.evaluate import stats

DIMENSIONS = ("camera", "set_id", "background", "exposure", "illuminant", "skin_tone")
EXPOSURE_REGIMES = ("under", "normal", "over")
EXPOSURE_THRESHOLD_EV = 0.5  # |error| above this is under/over: a visible step on a JPEG

# Manifest columns that carry the true exposure error, in order of preference. Latents from the
# generator know the real error; the EXIF exposure bias is only what the photographer dialled.
EXPOSURE_COLUMNS = ("exposure_error_ev", "latent_exposure_error_ev", "exposure_bias_ev")
ILLUMINANT_KIND_COLUMNS = ("illuminant_kind", "illuminant_type", "light_kind", "illuminant")
CCT_COLUMNS = ("cct_k", "illuminant_cct", "cct")
CCT_BINS = ((0, 3500, "warm <3500K"), (3500, 5500, "neutral 3500-5500K"),
            (5500, np.inf, "cool >5500K"))
BACKGROUND_COLUMNS = ("background_type", "background_kind", "background")
NEUTRAL_WORDS = ("grey", "gray", "neutral", "white", "paper")  # a background_type value that
# names one of these is a neutral surface (grey card, white paper); anything else is coloured
# A ring whose linear median channels differ by less than this (log max/min) looks neutral: the
# camera's white balance has already pulled a grey surround close to grey, a coloured cloth stays.
NEUTRAL_RING_LOG_SPREAD = 0.3


def skin_tone(target_lab: np.ndarray) -> np.ndarray:
    angles = color.ita(torch.as_tensor(np.asarray(target_lab, dtype=np.float64))).numpy()
    return np.array([color.ita_category(float(a)) for a in angles], dtype=object)


def _frame_column(data: Prepared, names) -> tuple[str, pd.Series] | None:
    for name in names:
        if name in data.frame.columns and data.frame[name].notna().any():
            return name, data.frame[name]
    return None


def exposure_regime(data: Prepared) -> np.ndarray | None:
    found = _frame_column(data, EXPOSURE_COLUMNS)
    if found is not None:
        ev = pd.to_numeric(found[1], errors="coerce").to_numpy(dtype=np.float64)
    elif "exposure_bias_ev" in data.meta_names:
        ev = data.meta[:, list(data.meta_names).index("exposure_bias_ev")].astype(np.float64)
    else:
        return None
    if not np.isfinite(ev).any():
        return None
    out = np.full(len(ev), "unknown", dtype=object)
    ok = np.isfinite(ev)
    out[ok & (ev < -EXPOSURE_THRESHOLD_EV)] = "under"
    out[ok & (ev > EXPOSURE_THRESHOLD_EV)] = "over"
    out[ok & (np.abs(ev) <= EXPOSURE_THRESHOLD_EV)] = "normal"
    return out


def illuminant_group(data: Prepared) -> np.ndarray | None:
    """The light's kind when the generator recorded it, else its CCT in three bins."""
    found = _frame_column(data, ILLUMINANT_KIND_COLUMNS)
    if found is not None and not pd.api.types.is_numeric_dtype(found[1]):
        return found[1].fillna("unknown").astype(str).to_numpy(dtype=object)
    found = _frame_column(data, CCT_COLUMNS)
    if found is None:
        return None
    cct = pd.to_numeric(found[1], errors="coerce").to_numpy(dtype=np.float64)
    out = np.full(len(cct), "unknown", dtype=object)
    for lo, hi, name in CCT_BINS:
        out[(cct >= lo) & (cct < hi)] = name
    return out


def background_type(data: Prepared) -> np.ndarray | None:
    """The background kind per row: the manifest's column, else as the ring looks, else None."""
    found = _frame_column(data, BACKGROUND_COLUMNS)
    if found is not None and not pd.api.types.is_numeric_dtype(found[1]):
        return found[1].fillna("unknown").astype(str).to_numpy(dtype=object)
    if data.ring is None:
        return None
    med = np.maximum(p50(data.ring).astype(np.float64), 1e-4)
    with np.errstate(invalid="ignore"):
        spread = np.log(med.max(1) / med.min(1))
    out = np.where(spread < NEUTRAL_RING_LOG_SPREAD, "neutral ring", "coloured ring").astype(object)
    out[~np.isfinite(spread)] = "no ring"
    return out


def is_neutral(kinds: np.ndarray) -> np.ndarray:
    """(N,) bool: which background kinds (background_type()) are neutral surfaces."""
    low = pd.Series(kinds, dtype=str).str.lower()
    neutral = low.str.contains("|".join(NEUTRAL_WORDS)) & ~low.str.startswith("colo") & \
        ~low.isin(["no ring", "unknown"])
    return np.array(neutral, dtype=bool)  # a writable copy


def group_labels(data: Prepared) -> dict[str, np.ndarray]:
    """Dimension -> (N,) group label per row; dimensions the data cannot support are left out."""
    labels: dict[str, np.ndarray | None] = {
        "camera": np.asarray(data.camera, dtype=object),
        "set_id": (data.frame["set_id"].astype(str).to_numpy(dtype=object)
                   if "set_id" in data.frame.columns else None),
        "background": background_type(data),
        "exposure": exposure_regime(data),
        "illuminant": illuminant_group(data),
        "skin_tone": skin_tone(data.target),
    }
    return {k: v for k, v in labels.items() if v is not None}


def _order(dimension: str, groups) -> list[str]:
    fixed = {"skin_tone": color.ITA_CATEGORIES, "exposure": EXPOSURE_REGIMES + ("unknown",)}
    if dimension in fixed:
        return [g for g in fixed[dimension] if g in groups]
    return sorted(groups, key=str)


def breakdown(errors: dict[str, np.ndarray], data: Prepared, n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Long table: one row per (model, dimension, group) with n, mean/median/p95 and intervals.

    `errors` maps a model name to its per-photo dE00 aligned with `data`'s rows.
    """
    rows = []
    for dimension, labels in group_labels(data).items():
        for group in _order(dimension, set(labels)):
            mask = labels == group
            for model, err in errors.items():
                s = stats.summarize(np.asarray(err)[mask], n_boot=n_boot, seed=seed)
                rows.append({"model": model, "dimension": dimension, "group": str(group), **s})
    columns = ["model", "dimension", "group", "n", "mean", "mean_lo", "mean_hi", "median",
               "median_lo", "median_hi", "p95", "p95_lo", "p95_hi"]
    out = pd.DataFrame(rows, columns=columns)
    out["n"] = out["n"].astype(int)
    return out
