"""Background-ring statistics: the light reference a photo carries around its skin patch.

The surface around the swatch was lit by the same light and exposed by the same camera as the
swatch, so its colour says what the light and the exposure did, as a grey card would (when it is
grey). `ring_stats` measures it once, in prepare, from the full-resolution photo:

- the ring is the part of the adaptive_bg box (the patch box grown by `bg_margin` per edge) that
  lies outside the patch box grown by a small `gap` (the swatch edge, its cast shadow and any
  bleeding of the swatch colour stay out);
- per channel, the 10th, 50th and 90th percentiles of its LINEAR RGB (percentiles, not means: a
  textured cloth, a second surface or a specular glint shifts a mean, not a median);
- per channel, log(patch mean / ring median): the patch colour relative to its surround, which is
  unchanged by exposure and, on a neutral surround, by the light's colour.

The result is one row of `RING_NAMES` (raysweep.data.prepared); NaN when no patch was found (the
centre fallback knows no surround) or the ring is too small to measure (a patch filling the photo).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raysweep.data.prepared import RING_NAMES

MIN_RING_PIXELS = 64  # fewer than this: percentiles of noise, not of a surface
MAX_SAMPLES = 65_536  # pixels used for the percentiles (a strided sample of a large photo)
EPS = 1e-4  # linear floor before the log: a black surround must not give an infinite ratio
_LINEAR = np.where(np.arange(256) / 255 <= 0.04045, np.arange(256) / 255 / 12.92,
                   ((np.arange(256) / 255 + 0.055) / 1.055) ** 2.4)


def ring_mask(shape: tuple[int, int], patch_box: tuple[int, int, int, int],
              outer_box: tuple[int, int, int, int], gap: float = 0.06) -> np.ndarray:
    """(H, W) bool: inside `outer_box`, outside `patch_box` grown by `gap` of its side per edge."""
    h, w = shape
    mask = np.zeros((h, w), bool)
    x0, y0, x1, y1 = outer_box
    mask[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = True
    px0, py0, px1, py1 = patch_box
    g = int(round(gap * max(px1 - px0, py1 - py0)))
    mask[max(py0 - g, 0):min(py1 + g, h), max(px0 - g, 0):min(px1 + g, w)] = False
    return mask


def ring_stats(rgb: np.ndarray, patch_box: tuple[int, int, int, int],
               outer_box: tuple[int, int, int, int], patch_linear: np.ndarray,
               found: bool = True, gap: float = 0.06) -> np.ndarray:
    """(len(RING_NAMES),) float32 for an (H, W, 3) uint8 sRGB photo; all NaN when no ring."""
    out = np.full(len(RING_NAMES), np.nan, np.float32)
    if not found:
        return out
    mask = ring_mask(rgb.shape[:2], patch_box, outer_box, gap)
    n = int(mask.sum())
    if n < MIN_RING_PIXELS:
        return out
    ys, xs = np.nonzero(mask)
    step = max(1, n // MAX_SAMPLES)
    codes = rgb[ys[::step], xs[::step]]  # (n', 3) uint8
    lin = _LINEAR[codes]
    pct = np.percentile(lin, [10, 50, 90], axis=0)  # (3 percentiles, 3 channels)
    ratio = np.log(np.maximum(np.asarray(patch_linear, np.float64), EPS) /
                   np.maximum(pct[1], EPS))
    out[:] = np.concatenate([pct[0], pct[1], pct[2], ratio])
    return out


def from_frame(frame) -> np.ndarray | None:
    """Ring statistics a spreadsheet carries (columns named as RING_NAMES), else None."""
    if not all(c in frame.columns for c in RING_NAMES):
        return None
    return np.stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64)
                     for c in RING_NAMES], axis=1).astype(np.float32)


def column(ring: np.ndarray, name: str) -> np.ndarray:
    """One named column of a ring block."""
    return ring[:, RING_NAMES.index(name)]


def p50(ring: np.ndarray) -> np.ndarray:
    """(N, 3) linear ring median."""
    return np.stack([column(ring, f"ring_{c}_p50") for c in "rgb"], axis=1)
