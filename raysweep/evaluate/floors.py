"""The floor and the one-photo physics references, shown next to every learned result, each with
exactly what it knows.

Each is the generator's oracle at one tier of knowledge, scored on the same photos as the models
(synthetic datasets only: the oracle rebuilds the generator from the card's `generated_by`
block). Only one is a floor:

- `oracle:latents` (kind "floor"): every per-photo hidden variable (light, exposure,
  white-balance gains, shading, shadow and specular maps). No photo reveals these; it bounds the
  data, not a model.

The other two are hand-built physics estimators without labels (kind "reference"): a learned
model can and should beat them (they are not floors), and what they know is not what a model
knows, so each carries its one exact line:

- `oracle:exif`: the session's TRUE light (spectra, illuminance) and white-balance error and the
  camera's fixed pipeline, plus each photo's EXIF exposure; it knows more about the light than
  a new photo shows, and nothing of the per-photo hidden gain, tone mapping or shading.
- `oracle:observable`: the camera's fixed pipeline and the background's true reflectance (one
  measurement per session), the light read off the photo's background ring; where the ring is
  clipped or black, the session's ring level pooled over its photos (test photos included).

The tiers are computed by `raysweep.synth.oracle` (the synth area owns them); this module only
calls it: `evaluate(card, rows=..., tier=...)` when the oracle takes a tier, else `evaluate(card,
rows)` for the latents tier alone. A tier the oracle does not offer is listed as not available.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from raysweep.data.prepared import Prepared
from raysweep.synth import oracle

log = logging.getLogger(__name__)

TIERS = ("latents", "exif", "observable")
KIND = {"latents": "floor", "exif": "reference", "observable": "reference"}
KNOWS = {  # one line each, shown next to the number (the oracle's own KNOWS wins when it has one)
    "latents": "floor: every per-photo hidden variable (light, exposure, white-balance gains, "
               "shading, shadow and specular maps): unreachable, it bounds the data",
    "exif": "one-photo physics reference, no labels: the session's TRUE light spectra, "
            "illuminance and white-balance error, the camera's fixed pipeline and the photo's "
            "EXIF exposure; not the hidden gain, tone mapping, per-photo drift or shading",
    "observable": "one-photo physics reference, no labels: the camera's fixed pipeline and the "
                  "background's TRUE reflectance; the light read off the photo's ring (where "
                  "clipped, the session's ring level pooled over its photos, test ones included)",
}


@dataclass
class Floors:
    preds: dict[str, np.ndarray] = field(default_factory=dict)  # "oracle:<tier>" -> (N, 3) Lab
    knows: dict[str, str] = field(default_factory=dict)  # "oracle:<tier>" -> one line
    kinds: dict[str, str] = field(default_factory=dict)  # "oracle:<tier>" -> floor | reference
    skipped: dict[str, str] = field(default_factory=dict)  # "oracle:<tier>" -> why not


def knows() -> dict[str, str]:
    """"oracle:<tier>" -> its one line of what it knows (the oracle's own wording wins)."""
    own = getattr(oracle, "KNOWS", {})
    return {f"oracle:{t}": {**KNOWS, **own}[t] for t in TIERS}


def synthetic_card(data: Prepared) -> Path | None:
    """The dataset card when the data came from raysweep.synth, else None."""
    card = data.info.get("card")
    if not card or str(card).startswith("<"):
        return None
    path = Path(card)
    path = path / "dataset.yaml" if path.is_dir() else path
    try:
        meta = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    gen = (meta or {}).get("generated_by") if isinstance(meta, dict) else None
    return path if isinstance(gen, dict) and gen.get("tool") == "raysweep.synth" else None


def _tier_call(oracle, tier: str):
    """A function rows -> oracle frame for `tier`, or None when the oracle lacks it."""
    params = inspect.signature(oracle.evaluate).parameters
    if "tier" in params:
        offered = getattr(oracle, "TIERS", TIERS)
        if tier not in offered:
            return None
        return lambda card, rows: oracle.evaluate(card, rows=rows, tier=tier)
    return (lambda card, rows: oracle.evaluate(card, rows=rows)) if tier == "latents" else None


def run_floors(data: Prepared, tiers=TIERS) -> Floors:
    """The oracle floors on `data`'s rows (in its order); empty with reasons when not synthetic."""
    out = Floors()
    card = synthetic_card(data)
    if card is None:  # one line, not one per tier: real data simply has no oracle
        out.skipped["floors"] = "the dataset is not synthetic: no generator to ask"
        return out
    manifest = pd.read_csv(card.parent / yaml.safe_load(card.read_text())["manifest"],
                           usecols=["sample_id"])
    pos = pd.Series(np.arange(len(manifest)), index=manifest["sample_id"].astype(str))
    rows = pos.reindex(data.sample_id.astype(str)).to_numpy()
    if np.isnan(rows.astype(float)).any():
        for t in tiers:
            out.skipped[f"oracle:{t}"] = "rows are missing from the generator's manifest"
        return out
    lines = knows()
    for tier in tiers:
        name = f"oracle:{tier}"
        call = _tier_call(oracle, tier)
        if call is None:
            out.skipped[name] = f"raysweep.synth.oracle offers no {tier!r} tier yet"
            continue
        res = call(card, rows.astype(int)).set_index("sample_id")
        out.preds[name] = res.loc[list(data.sample_id.astype(str)),
                                  ["oracle_L", "oracle_a", "oracle_b"]].to_numpy(np.float64)
        out.knows[name] = lines[name]
        out.kinds[name] = KIND[tier]
    return out
