"""The MLflow pyfunc wrapper: a raysweep checkpoint that `mlflow models serve` can serve.

Input (a DataFrame, or JSON `{"dataframe_records": [...]}` over HTTP): one row per photo with
`image_b64` (the photo file, base64) and optionally any contract metadata column, which wins
over the photo's EXIF, and optionally `set_id`, the photo's capture session. A tabular model
(features mean+meta, meta, mean; a gradient-boosting family) needs no image: `mean_L/a/b`, the
metadata columns and, for the models that read them, the `ring_*` columns are enough. The
signature lists every column, the metadata ones with type Any, so a sheet read by pd.read_csv
passes MLflow's schema check as it is: a number column (inference.NUMBER_COLUMNS, ring_*
included) takes integers, floats, "1/60" and empty cells (missing), and any other text in it
("ISO 100") is a UserError naming the column and row; camera, make, model and set_id are read
as text (session 3 is "3"). Output: L, a, b, hex, ita_deg, ita_category, then the trust
columns: de00_bound, bound_level, bound_regime (which photos the bound is for: "new sessions"
unless the row's `set_id` names a session the model trained on, then "seen sessions";
raysweep.serve.bounds), flags, unchecked and one boolean per OOD flag.

The checkpoint travels as the model's artifact and the raysweep package as its code, so serving
needs only the environment, not this repository. The model is logged from code (model_code.py,
MLflow's "models from code"), never as a cloudpickled object: loading it unpickles nothing.
`RaysweepModel` holds a Predictor and `predict_frame` turns one request into one DataFrame; new
output columns belong in `predict_frame` (and `signature`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib.metadata as md
import math
import os
import warnings
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import pandas as pd
import yaml
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema

import raysweep
from raysweep import _compat
from raysweep.errors import UserError
from raysweep.serve import bounds
from raysweep.serve.ensemble import load_folder
from raysweep.serve.inference import (
    NUMBER_COLUMNS,
    SESSION_COLUMN,
    geometry,
    predict_photos,
    predict_rows,
    read_photo,
)
from raysweep.serve.ood import FLAGS
from raysweep.tracking.store import open_client, store_errors, tracking_uri

CHECKPOINT_ARTIFACT = "checkpoint"
TRUST_OUTPUT = ("de00_bound", "bound_level", "bound_regime", "flags", "unchecked", *FLAGS)
# set_id: a column left out of the signature never reaches the model under MLflow's schema
# enforcement, and without it every bound would be the new-session one
TEXT_INPUTS = ("camera", "make", "model", SESSION_COLUMN)
REQUIREMENTS = ("torch", "timm", "numpy", "pandas", "pillow", "opencv-python-headless",
                "colour-science", "pyyaml", "scipy")


def signature():
    # Any, not double/string: MLflow refuses an int64 column as double and an all-empty (float
    # NaN) one as string, and pd.read_csv gives both on an ordinary sheet (ISO 100, sessions
    # 1..n, no make). The row code reads them (inference.numbers refuses "ISO 100").
    inputs = Schema([ColSpec("string", "image_b64", required=False)]
                    + [ColSpec(AnyType(), c, required=False) for c in TEXT_INPUTS + NUMBER_COLUMNS])
    outputs = Schema([ColSpec("double", "L"), ColSpec("double", "a"), ColSpec("double", "b"),
                      ColSpec("string", "hex"), ColSpec("double", "ita_deg"),
                      ColSpec("string", "ita_category")]
                     # the error bound and OOD flags (raysweep.serve.bounds / ood)
                     + [ColSpec("double", "de00_bound"), ColSpec("double", "bound_level"),
                        ColSpec("string", "bound_regime"), ColSpec("string", "flags"),
                        ColSpec("string", "unchecked")]
                     + [ColSpec("boolean", f) for f in FLAGS])
    return ModelSignature(inputs=inputs, outputs=outputs)


class RaysweepModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        # a checkpoint, or an ensemble folder of member checkpoints (raysweep.serve.ensemble)
        self.predictor = load_folder(context.artifacts[CHECKPOINT_ARTIFACT], device="cpu")
        bounds.attach(self.predictor, context.artifacts[CHECKPOINT_ARTIFACT])  # calibration.json

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_frame(self.predictor, pd.DataFrame(model_input))


def predict_frame(predictor, frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    overrides = frame.drop(columns=[c for c in ("image_b64",) if c in frame.columns])
    has_image = "image_b64" in frame.columns and frame["image_b64"].notna().all() and \
        (frame["image_b64"].astype(str) != "").all()
    if predictor.cfg.uses_image or has_image:
        if not has_image:
            raise UserError(f"this model (features={predictor.cfg.features}) needs a photo in "
                            "column image_b64 on every row", where="pyfunc input",
                            fix="send the photo file base64-encoded as image_b64")
        photos = []
        for i, b64 in enumerate(frame["image_b64"]):
            try:
                raw = base64.b64decode(str(b64), validate=True)
            except (binascii.Error, ValueError):
                raise UserError(f"row {i}: image_b64 is not valid base64",
                                where="pyfunc input") from None
            photos.append(read_photo(raw, geometry(predictor)[1], name=f"row{i}"))
        out = predict_photos(predictor, photos, overrides)
        return out[["L", "a", "b", "hex", "ita_deg", "ita_category", *TRUST_OUTPUT]]
    # tabular: the metadata and mean colour columns are the whole input, as in `predict`
    out = predict_rows(predictor, overrides)
    return out[["L", "a", "b", "hex", "ita_deg", "ita_category", *TRUST_OUTPUT]]


@contextlib.contextmanager
def using_store(uri: str):
    """Point MLflow's fluent API (which log_model needs) at `uri`, and restore it afterwards:
    a library call must not leave the caller's process logging somewhere else."""
    old = _compat.mlflow_store_uris()
    # set_registry_uri also exports MLFLOW_REGISTRY_URI (set_tracking_uri may export its own):
    # left behind, every later subprocess (a CLI, a test) would use this registry
    env_keys = ("MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI")
    old_env = {k: os.environ.get(k) for k in env_keys}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        _compat.restore_mlflow_store_uris(old)
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log_pyfunc(checkpoint_dir: str | Path, registered_name: str | None = None,
               name: str = "model"):
    """Log the checkpoint as a pyfunc model in the active run; optionally register it.

    Returns mlflow's ModelInfo (`.model_uri`, `.registered_model_version`).
    """
    reqs = []
    for pkg in REQUIREMENTS:
        try:
            reqs.append(f"{pkg}=={md.version(pkg)}")
        except md.PackageNotFoundError:
            reqs.append(pkg)
    with warnings.catch_warnings():
        # an input example would need a photo; the signature alone validates requests
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        # explicit requirements: mlflow's inference would load the model in a subprocess
        return mlflow.pyfunc.log_model(
            name=name, python_model=str(Path(__file__).with_name("model_code.py")),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_dir)},
            code_paths=[str(Path(raysweep.__file__).parent)],
            signature=signature(), pip_requirements=reqs,
            registered_model_name=registered_name,
        )


def register_champion(checkpoint_dir: str | Path, name: str, run_id: str, uri: str,
                      alias: str = "champion", scores: dict | None = None) -> str:
    """Log the checkpoint as a pyfunc in run `run_id`, register it as `name` and point `alias`
    at the new version; returns the URI `models:/NAME@ALIAS`.

    `scores` (the evaluation's metrics) must all be finite: a model whose scores are NaN or inf
    has diverged and is refused before anything is registered.
    """
    bad = {k: v for k, v in (scores or {}).items() if not math.isfinite(float(v))}
    if bad:
        raise UserError(f"refusing to register {name}@{alias}: its scores are not finite ({bad})",
                        where=str(checkpoint_dir),
                        fix="the model has diverged; lower lr or enable grad_clip and re-run")

    with using_store(uri), mlflow.start_run(run_id=run_id):
        info = log_pyfunc(checkpoint_dir, registered_name=name)
    MlflowClient(uri).set_registered_model_alias(name, alias, str(info.registered_model_version))
    return f"models:/{name}@{alias}"


def load_pyfunc_predictor(uri: str, device: str = "auto"):
    """The raysweep Predictor inside an MLflow pyfunc model (models:/NAME@alias, runs:/...).

    Only the model's checkpoint artifact is read, with torch.load(weights_only=True). The
    pickled python_model that `mlflow.pyfunc.load_model` would unpickle is never loaded: a model
    fetched from a tracking server must not be able to run code here.
    """
    open_client()  # raysweep's bounded MLflow HTTP retries: ~10 s when the server is down, not 252
    try:
        store = tracking_uri()
        # models:/ resolves through the registry: read the same store raysweep registered in
        with store_errors(store, where=f"MLFLOW_TRACKING_URI, loading {uri}"), using_store(store):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except UserError:
        raise
    except Exception as e:  # mlflow raises several types for a missing model or registry
        raise UserError(f"cannot load MLflow model {uri}: {type(e).__name__}: {e}", where=uri,
                        fix="check MLFLOW_TRACKING_URI and the model name/alias "
                            "(`python -m raysweep.eval_winners` registers NAME@champion), or "
                            "pass a checkpoint folder") from None
    try:
        spec = yaml.safe_load((local / "MLmodel").read_text()) or {}
        rel = spec["flavors"]["python_function"]["artifacts"][CHECKPOINT_ARTIFACT]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise UserError(f"{uri} is not a raysweep model (no {CHECKPOINT_ARTIFACT!r} artifact "
                        "in its MLmodel)", where=uri) from None
    folder = (local / rel).resolve()
    if not folder.is_relative_to(local.resolve()):
        raise UserError(f"{uri}: its MLmodel points outside the model folder", where=uri)
    return bounds.attach(load_folder(folder, device=device), folder)  # with its calibration.json
