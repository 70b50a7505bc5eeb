"""Load a trained model by what the user typed: a checkpoint folder or an MLflow model URI."""

from __future__ import annotations

import re
from pathlib import Path

from raysweep.train import checkpoint


def load_predictor(spec: str, device: str = "auto"):
    """A checkpoint folder, or an MLflow model URI (models:/NAME@champion, runs:/ID/model)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:/", spec) and not Path(spec).exists():
        # MLflow is imported only for registry URIs: a checkpoint path starts without it.
        from raysweep.serve.pyfunc import load_pyfunc_predictor

        return load_pyfunc_predictor(spec, device=device)
    return checkpoint.load(spec, device=device)
