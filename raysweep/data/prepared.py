"""The prepared dataset: what `prepare` caches and what training, evaluation and search consume.

This is the one hand-off between data and models. Arrays are aligned row by row; everything a
model may see is here, and `frame` carries the rest of the manifest (latents, set ids, ...) for
reports. Normalisation statistics are not here: they are fitted on the training split by the
training code and stored with the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

# Continuous metadata after fixed, stateless transforms (see raysweep.data.features).
META_NAMES = ("log2_iso", "log2_exposure_s", "brightness_ev", "exposure_bias_ev", "f_number")
SPLITS = ("train", "val", "test")
# Background-ring statistics around the patch (see raysweep.data.ring): the light reference the
# photo itself carries. Linear RGB percentiles of the ring, then log(patch / ring median).
RING_NAMES = (
    "ring_r_p10", "ring_g_p10", "ring_b_p10",
    "ring_r_p50", "ring_g_p50", "ring_b_p50",
    "ring_r_p90", "ring_g_p90", "ring_b_p90",
    "log_patch_over_ring_r", "log_patch_over_ring_g", "log_patch_over_ring_b",
)


@dataclass(frozen=True)
class SplitSettings:
    """How the photos go to train/val/test: the TrainConfig fields of the same names, so a
    trial's config picks its split with `SplitSettings.of(cfg)`."""

    split_by: str = "tone_id"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    @classmethod
    def of(cls, settings: Any) -> SplitSettings:
        """The split fields of a TrainConfig (or of a mapping holding some of them)."""
        get = settings.get if isinstance(settings, Mapping) else (
            lambda k, d: getattr(settings, k, d))
        return cls(**{f.name: get(f.name, f.default) for f in fields(cls)})


@dataclass
class Prepared:
    sample_id: np.ndarray  # (N,) str
    images: np.ndarray | None  # (N, 3, S, S) uint8 sRGB of one crop variant; None in tabular mode
    mean_lab: np.ndarray  # (N, 3) float32 patch mean CIELAB (D65); NaN where unknown
    meta: np.ndarray  # (N, len(META_NAMES)) float32; NaN where missing (never zero-filled)
    camera: np.ndarray  # (N,) str camera id
    device: np.ndarray  # (N,) str "make model" for the optional text embedding
    target: np.ndarray  # (N, 3) float32 ground-truth CIELAB, D65 / 2 degree
    split: np.ndarray  # (N,) str in SPLITS
    frame: pd.DataFrame  # the manifest rows, aligned with the arrays (index 0..N-1)
    meta_names: tuple[str, ...] = META_NAMES
    info: dict = field(default_factory=dict)  # content_hash, split_file, split_id, crop, size, card
    ring: np.ndarray | None = None  # (N, len(RING_NAMES)) float32; NaN where no ring was found

    def __post_init__(self) -> None:
        n = len(self.sample_id)
        for name in ("mean_lab", "meta", "camera", "device", "target", "split"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Prepared.{name} has {len(getattr(self, name))} rows, expected {n}")
        for name in ("images", "ring"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"Prepared.{name} has {len(arr)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.sample_id)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def subset(self, idx: np.ndarray) -> Prepared:
        return Prepared(
            sample_id=self.sample_id[idx],
            images=None if self.images is None else self.images[idx],
            mean_lab=self.mean_lab[idx],
            meta=self.meta[idx],
            camera=self.camera[idx],
            device=self.device[idx],
            target=self.target[idx],
            split=self.split[idx],
            frame=self.frame.iloc[idx].reset_index(drop=True),
            meta_names=self.meta_names,
            info=dict(self.info),
            ring=None if self.ring is None else self.ring[idx],
        )
