"""The training data as an MLflow dataset input, on the sweep's parent run, every trial run and
the evaluation run.

MLflow keeps one dataset per (experiment, name, digest): the digest is the manifest's content
hash, so every run trained on the same rows links to the same dataset, the UI's Dataset column
names it, and "runs on this dataset" (a `dataset.digest = '...'` filter) finds them all. The
source is the dataset card; the schema holds the manifest's columns; the profile holds the split
counts and the split id (the rows each split got are in the split file the parent run tags).

A trial's input is copied from its parent (one read per sweep, cached), so the Tune callback
needs nothing but the tracker, and a resumed sweep's new trials link to the same dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from raysweep.data.card import load_card
from raysweep.data.prepared import SPLITS, Prepared

CONTEXT_TAG = "mlflow.data.context"  # mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT
TRAINING, EVALUATION = "training", "evaluation"
_PARENT_INPUTS: dict[str, list] = {}  # parent run id -> its dataset entities (see log_like_parent)


def describe(data: Prepared) -> dict:
    """The dataset of `data` as plain values (name, digest, source, schema, profile): what
    `log_input` writes. Plain, so that it pickles with anything that holds it."""
    info = data.info
    card = str(info.get("card") or "")
    counts = {s: int((data.split == s).sum()) for s in SPLITS}
    profile = {"num_rows": len(data), "splits": counts, "split_id": info.get("split_id"),
               "split_by": info.get("split_by"), "tabular": data.images is None}
    return {"name": _card_name(card), "digest": str(info.get("content_hash") or ""),
            "source_type": "local", "source": json.dumps({"uri": card}),
            "schema": json.dumps({"mlflow_colspec": _colspecs(data.frame)}),
            "profile": json.dumps(profile)}


def log_input(tracker, run_id: str, dataset: dict, context: str = TRAINING) -> None:
    """Link `run_id` to `dataset` (from `describe`). Best effort, as every link here: a run
    without its dataset link is still a run, and no sweep or evaluation stops for one."""
    from mlflow.entities import Dataset

    with tracker.best_effort(f"linking run {run_id} to dataset {dataset.get('name')}"):
        tracker.call(tracker.client.log_inputs, run_id,
                     datasets=[_input(Dataset(**dataset), context)])


def log_like_parent(tracker, run_id: str) -> None:
    """Link a trial's run to the datasets of the sweep's parent run (read once per parent)."""
    parent = tracker.parent_run_id
    if not parent:
        return
    with tracker.best_effort(f"linking run {run_id} to its sweep's dataset"):
        if parent not in _PARENT_INPUTS:
            run = tracker.call(tracker.client.get_run, parent)
            _PARENT_INPUTS[parent] = [d.dataset for d in run.inputs.dataset_inputs]
        if _PARENT_INPUTS[parent]:
            tracker.call(tracker.client.log_inputs, run_id,
                         datasets=[_input(d, TRAINING) for d in _PARENT_INPUTS[parent]])


def _input(dataset, context: str):
    from mlflow.entities import DatasetInput, InputTag

    return DatasetInput(dataset, tags=[InputTag(CONTEXT_TAG, context)])


def _card_name(card: str) -> str:
    """The card's `name:`, else its folder's name (what load_card would call it)."""
    if not card:
        return "dataset"
    try:
        return load_card(card).name or Path(card).parent.name
    except Exception:  # noqa: BLE001 - a moved or edited card still names a dataset
        return Path(card).parent.name or "dataset"


def _colspecs(frame: pd.DataFrame) -> list[dict]:
    """MLflow's column-spec schema of the manifest columns (what the UI's schema view reads)."""
    def kind(dtype) -> str:
        if pd.api.types.is_bool_dtype(dtype):
            return "boolean"
        if pd.api.types.is_integer_dtype(dtype):
            return "long"
        if pd.api.types.is_numeric_dtype(dtype):
            return "double"
        return "string"

    return [{"type": kind(frame[c].dtype), "name": str(c), "required": True}
            for c in frame.columns]
