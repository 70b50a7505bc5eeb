"""Session-invariant inputs (the `inv` feature block): numbers a session's light and exposure cancel.

A model that sees the ring's raw level or the raw EXIF exposure can learn each training session's
light by heart and still not know a new one; these columns are built so that the quantities that
change from session to session divide out (von Kries: light and exposure act as per-channel gains
on linear RGB, so a ratio of two surfaces under the same light is free of both):

- `inv_log_patch_over_ring_g`: log(patch / ring median), green channel: exposure and illuminance
  cancel; what is left is the patch's reflectance relative to its surround's.
- `inv_chroma_r`, `inv_chroma_b`: log(patch / ring) of red (blue) minus that of green, the patch's
  log-chromaticity relative to its surround's: on a neutral surround (a grey card, white paper)
  the light's colour and the white balance cancel too.
- `inv_log2_patch_per_exposure`: log2 of the patch's linear luminance minus log2(exposure time x
  ISO): the patch's brightness per unit of the camera's exposure (the auto-exposure's choice
  cancels; the scene's illuminance does not).

Degrades with what the data has: without ring statistics (a spreadsheet without `ring_*`
columns, a photo whose patch was not found) the three ring columns are NaN, so the model sees
their missing flags, and only the exposure column (from EXIF, plus the patch colour) carries
information; without exposure time or ISO that column is NaN too. `describe` says which in one
line. Stateless, like the rest of data/: normalisation is fitted on the training split by the
model code (raysweep/models/inputs.py).
"""

from __future__ import annotations

import numpy as np
import torch

from raysweep import color
from raysweep.data.prepared import META_NAMES, RING_NAMES, Prepared

INV_NAMES = ("inv_log_patch_over_ring_g", "inv_chroma_r", "inv_chroma_b",
             "inv_log2_patch_per_exposure")
N_RING_COLUMNS = 3  # the first three columns come from the ring statistics
LUM_FLOOR = 1e-4  # linear floor before the log: a black patch must not give -inf


def _ratios(ring: np.ndarray | None, n: int) -> np.ndarray:
    """(N, 3) log(patch / ring median) per channel; NaN without ring statistics."""
    if ring is None:
        return np.full((n, 3), np.nan)
    cols = [RING_NAMES.index(f"log_patch_over_ring_{c}") for c in "rgb"]
    return np.asarray(ring, np.float64)[:, cols]


def patch_luminance(mean_lab: np.ndarray) -> np.ndarray:
    """(N,) linear luminance Y of the measured patch colour (NaN where the colour is missing)."""
    lab = torch.as_tensor(np.asarray(mean_lab, np.float64))
    return color.lab_to_xyz(lab).numpy()[:, 1]


def invariant_matrix(mean_lab: np.ndarray, meta: np.ndarray, ring: np.ndarray | None,
                     meta_names=META_NAMES) -> np.ndarray:
    """(N, len(INV_NAMES)) float32 in INV_NAMES order; NaN where an input is missing."""
    n = len(mean_lab)
    ratio = _ratios(ring, n)
    meta = np.asarray(meta, np.float64)
    names = list(meta_names)
    with np.errstate(divide="ignore", invalid="ignore"):
        exposure = meta[:, names.index("log2_exposure_s")] + meta[:, names.index("log2_iso")]
        lum = np.log2(np.maximum(patch_luminance(mean_lab), LUM_FLOOR))
        out = np.column_stack([ratio[:, 1], ratio[:, 0] - ratio[:, 1], ratio[:, 2] - ratio[:, 1],
                               lum - exposure]).astype(np.float32)
    out[~np.isfinite(out)] = np.nan  # missing stays missing (flagged downstream), never a zero
    return out


def invariant_inputs(data: Prepared) -> np.ndarray:
    """The `inv` block of a Prepared (see the module docstring)."""
    return invariant_matrix(data.mean_lab, data.meta, data.ring, data.meta_names)


def describe(data: Prepared) -> str:
    """One line: which `inv` columns this data can fill, and why the others are missing."""
    x = invariant_inputs(data)
    filled = np.isfinite(x).mean(axis=0)
    parts = [f"{name} {share:.0%}" for name, share in zip(INV_NAMES, filled)]
    why = []
    if data.ring is None:
        why.append("no ring statistics (no ring_* columns, or photos not prepared by raysweep): "
                   "the ring columns are missing and flagged; only the exposure column informs")
    if filled[-1] < 1:
        why.append("exposure time, ISO or the patch colour missing on some rows")
    return "inv block filled: " + ", ".join(parts) + ("; " + "; ".join(why) if why else "")
