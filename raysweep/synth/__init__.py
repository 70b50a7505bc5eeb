"""The physically based synthetic skin-photo dataset (the embedded default).

`python -m raysweep.synth --out DIR` writes it; `ensure_default_dataset()` generates it once into
a cache folder and returns its card, for search and the demo. The physics is in skin.py,
light.py, camera.py, scene.py, exposure.py, isp.py, drift.py (per-photo drift, generator 3.0) and
render.py; the calibration against real phones in calibration.py (its reference figures in
real_phones.yaml, the learnability statistics in learnability.py), the datasheet in datasheet.py,
the tiered floors in oracle.py. `GeneratorConfig(version="2.0")` reproduces generator 2.0.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import unknown_name
from .context import GENERATOR_VERSION, GeneratorConfig
from .generate import CARD, generate

__all__ = ["ensure_default_dataset", "default_root", "GeneratorConfig", "GENERATOR_VERSION"]


def default_root(cfg: GeneratorConfig) -> Path:
    """~/.cache/raysweep/synthetic-<hash of shape, seed and generator version>."""
    key = hashlib.sha256(json.dumps(cfg.as_dict(), sort_keys=True).encode()).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "raysweep"
    return base / f"synthetic-{key}"


def ensure_default_dataset(root: str | Path | None = None, workers: int | None = None,
                           progress: bool = True, **shape) -> Path:
    """Generate the synthetic dataset once and return the path of its dataset.yaml.

    `shape` overrides GeneratorConfig fields (seed, sets, tones, cameras, size). With `root`
    None the dataset lives in a cache folder keyed by the shape; an existing complete dataset
    (its card is written last, inside an atomically renamed folder) is reused as is.
    """
    for key in shape:
        if key not in GeneratorConfig.__dataclass_fields__:
            raise unknown_name("dataset shape key", key, list(GeneratorConfig.__dataclass_fields__),
                               where="ensure_default_dataset()")
    cfg = GeneratorConfig(**shape).validate()
    out = Path(root).expanduser() if root is not None else default_root(cfg)
    if (out / CARD).is_file():
        return out / CARD
    try:
        # One process by default: worker processes are spawned, and spawning from a caller's
        # script that lacks an `if __name__ == "__main__":` guard would fail.
        return generate(out, cfg, workers=workers or 1, progress=progress)
    except OSError:
        # another process may have finished the same folder first (rename onto a non-empty dir)
        if (out / CARD).is_file():
            return out / CARD
        raise
