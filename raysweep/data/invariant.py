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

What is not here, on purpose: the patch's brightness per unit of the camera's exposure (log2
luminance minus log2(exposure time x ISO)). The auto-exposure's choice cancels in it, the
scene's illuminance (50 to 5,000 lux from session to session) does not, so it names a session
as the raw EXIF does. An earlier version had it as a fourth column: on the new-session
benchmark's session folds (split seeds 0-2, `benchmarks/new_sessions.py`) gradient boosting on this block
reached a mean out-of-fold dE00 of 6.46 with it and 5.13 without it, every seed better; nearly
all of the gain was lightness (mean |dL| 6.5 -> 4.6 on seed 0).

Degrades with what the data has: without ring statistics (a spreadsheet without `ring_*`
columns, a photo whose patch was not found) every column is NaN, so the model sees only their
missing flags; `describe` says so in one line. Stateless, like the rest of data/: normalisation is
fitted on the training split by the model code (raysweep/models/inputs.py).
"""

from __future__ import annotations

import numpy as np

from raysweep.data.prepared import RING_NAMES, Prepared

INV_NAMES = ("inv_log_patch_over_ring_g", "inv_chroma_r", "inv_chroma_b")


def invariant_matrix(ring: np.ndarray | None, n: int) -> np.ndarray:
    """(n, len(INV_NAMES)) float32 in INV_NAMES order from the ring statistics (RING_NAMES
    columns); NaN where they are missing, all NaN without them."""
    if ring is None:
        return np.full((n, len(INV_NAMES)), np.nan, np.float32)
    cols = [RING_NAMES.index(f"log_patch_over_ring_{c}") for c in "rgb"]
    ratio = np.asarray(ring, np.float64)[:, cols]  # log(patch / ring median) per channel
    out = np.column_stack([ratio[:, 1], ratio[:, 0] - ratio[:, 1],
                           ratio[:, 2] - ratio[:, 1]]).astype(np.float32)
    out[~np.isfinite(out)] = np.nan  # missing stays missing (flagged downstream), never a zero
    return out


def invariant_inputs(data: Prepared) -> np.ndarray:
    """The `inv` block of a Prepared (see the module docstring)."""
    return invariant_matrix(data.ring, len(data))


def describe(data: Prepared) -> str:
    """One line: which `inv` columns this data can fill, and why the others are missing."""
    filled = np.isfinite(invariant_inputs(data)).mean(axis=0)
    parts = [f"{name} {share:.0%}" for name, share in zip(INV_NAMES, filled)]
    why = ""
    if data.ring is None:
        why = ("; no ring statistics (no ring_* columns, or photos not prepared by raysweep): "
               "every column is missing and flagged, so the block carries nothing")
    elif filled.min() < 1:
        why = "; the ring statistics are missing on some rows (patch not found, ring clipped)"
    return "inv block filled: " + ", ".join(parts) + why
