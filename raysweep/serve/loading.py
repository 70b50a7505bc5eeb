"""Load a trained model by what the user typed: a model folder (a checkpoint, an ensemble, a
gradient-boosting family) or an MLflow model URI."""

from __future__ import annotations

import re
from pathlib import Path

from raysweep.errors import UserError
from raysweep.serve.ensemble import load_folder
from raysweep.tracking.store import open_client, retry, store_errors, tracking_uri


def latest_champion(alias: str = "champion") -> str:
    """`models:/NAME@champion` of the most recently registered champion in the tracking store
    (the model `eval_winners` registered last, whatever its study's name)."""
    uri = tracking_uri()
    with store_errors(uri, where="MLFLOW_TRACKING_URI (looking for the latest champion)"):
        client = open_client(uri)
        best = None
        for model in retry(client.search_registered_models, max_results=1000):
            version = (getattr(model, "aliases", None) or {}).get(alias)
            if version is None:
                continue
            made = retry(client.get_model_version, model.name, str(version)).creation_timestamp
            if best is None or (made or 0) > best[0]:
                best = (made or 0, model.name)
    if best is None:
        raise UserError(f"no model with alias @{alias} is registered in {uri}",
                        where="--model (not given)",
                        fix="run `python -m raysweep.eval_winners` after a sweep (it registers "
                            "the champion), set MLFLOW_TRACKING_URI to the store it used, or "
                            "pass --model with a checkpoint folder or models:/NAME@champion")
    return f"models:/{best[1]}@{alias}"


def load_predictor(spec: str, device: str = "auto"):
    """A model folder, or an MLflow model URI (models:/NAME@champion, runs:/ID/model)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:/", spec) and not Path(spec).exists():
        # lazy: MLflow is imported only for registry URIs; a checkpoint path starts without it.
        from raysweep.serve.pyfunc import load_pyfunc_predictor

        return load_pyfunc_predictor(spec, device=device)
    return load_folder(spec, device=device)
