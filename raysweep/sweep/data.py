"""The data a sweep trains on: which dataset, and one prepared copy per (crop, size) variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from raysweep.data.pipeline import load_prepared, photos_and_ring
from raysweep.data.prepared import Prepared, SplitSettings
from raysweep.errors import UserError
from raysweep.sweep.trainable import variant_key
from raysweep.synth import ensure_default_dataset
from raysweep.uri import is_uri


def load_data(data: str | Path | Prepared | None, variants: list[tuple[str, int]],
              base: dict[str, Any]) -> dict[str, Prepared]:
    """One Prepared per (crop, image_size) the trials can ask for; all share one split."""
    if isinstance(data, Prepared):
        have = variant_key(data.info.get("crop") or "", data.info.get("size") or 0)
        if data.images is None:  # tabular: the crop and size choices do not matter
            return {variant_key(c, s): data for c, s in variants}
        missing = [variant_key(c, s) for c, s in variants if variant_key(c, s) != have]
        if missing:
            raise UserError(f"the given dataset is prepared as {have}, but the space asks for "
                            f"{missing}", fix="fix crop and image_size with --set")
        return {have: data}
    if data is None:
        data = default_dataset()
    split = SplitSettings.of(base)
    out = {}
    for crop, size in tqdm(variants, desc="preparing data", unit="variant", disable=len(variants) < 2):
        out[variant_key(crop, size)] = load_prepared(data, crop=crop, size=size, split=split)
    return out


def default_dataset() -> Path:
    return ensure_default_dataset()


def smoke_dataset() -> Path:
    """A small synthetic dataset (3 sets x 20 tones at 64 px), generated once and cached: a
    smoke test checks the plumbing and must not wait for the full 2,070 photos."""
    return ensure_default_dataset(sets=3, tones=20, size=64, progress=False)


# A feature block the data cannot fill: why, in the console's words, and how the data gains it.
NO_RING = ("the data has no ring_* columns, from which the ring and inv blocks are computed",
           "add the ring_* columns (raysweep.data.prepared.RING_NAMES) to the sheet")
NO_IMAGE = ("the data has no photos (no image column)",
            "add an image column with each row's photo, or search --space tabular")


def missing_blocks(data: str | Path | Prepared | None) -> dict[str, tuple[str, str]]:
    """The feature blocks (config.FEATURE_BLOCKS) the sweep's data cannot fill: block -> (why,
    how to add it), for spaces.prune_features. A card is read from its manifest (no photo
    decoded); the synthetic default has photos, hence rings; a URI is not read here (its trials
    say so themselves)."""
    if isinstance(data, Prepared):
        photos, ring = data.images is not None, data.ring is not None
    elif data is None or is_uri(data):
        return {}
    else:
        photos, ring = photos_and_ring(data)
    return {**({} if photos else {"image": NO_IMAGE}), **({} if ring else {"ring": NO_RING})}


def describe_data(data: str | Path | Prepared | None) -> str:
    """How the parent run and --resume name the dataset (eval_winners reads it back)."""
    if data is None:
        return "synthetic default"
    if isinstance(data, Prepared):
        return "<in-memory>"
    return str(data) if is_uri(data) else str(Path(data).expanduser().resolve())
