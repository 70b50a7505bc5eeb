"""The training data as an MLflow dataset input: digest = the content hash, source = the card,
schema = the manifest's columns, profile = the split counts; on the parent run, copied to every
trial run, and found again by MLflow's "runs on this dataset" filter."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raysweep.data.prepared import Prepared
from raysweep.tracking import datasets
from raysweep.tracking.store import Tracker

HASH = "0123456789abcdef"


@pytest.fixture
def prepared(tmp_path) -> Prepared:
    (tmp_path / "labels.csv").write_text("image,target_L\n")
    card = tmp_path / "dataset.yaml"
    card.write_text("name: clinic-2024\nmanifest: labels.csv\n")
    n = 10
    frame = pd.DataFrame({"image": [f"p{i}.png" for i in range(n)],
                          "target_L": np.linspace(30, 70, n), "iso": np.arange(n) * 100,
                          "flagged": [i % 2 == 0 for i in range(n)]})
    split = np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2)
    return Prepared(sample_id=np.array([f"s{i}" for i in range(n)]), images=None,
                    mean_lab=np.zeros((n, 3), np.float32), meta=np.zeros((n, 5), np.float32),
                    camera=np.array(["cam"] * n), device=np.array(["dev"] * n),
                    target=np.zeros((n, 3), np.float32), split=split, frame=frame,
                    info={"content_hash": HASH, "card": str(card), "split_id": "abc123",
                          "split_by": "tone_id"})


def test_describe_names_the_card_and_the_content_hash(prepared):
    d = datasets.describe(prepared)
    assert d["name"] == "clinic-2024" and d["digest"] == HASH
    assert json.loads(d["source"]) == {"uri": prepared.info["card"]}
    cols = {c["name"]: c["type"] for c in json.loads(d["schema"])["mlflow_colspec"]}
    assert cols == {"image": "string", "target_L": "double", "iso": "long", "flagged": "boolean"}
    profile = json.loads(d["profile"])
    assert profile["splits"] == {"train": 6, "val": 2, "test": 2} and profile["num_rows"] == 10


def test_parent_and_trial_runs_link_to_the_dataset(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracker = Tracker("datasets-test", "sweep-1", uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    parent = tracker.start_parent(tags={}, params={})
    datasets.log_input(tracker, parent, datasets.describe(prepared))
    children = [tracker.start_child(f"t{i}", f"trial_{i}", {"lr": 0.01}) for i in range(2)]
    for child in children:
        datasets.log_like_parent(tracker, child)
    client = tracker.client
    for run_id in (parent, *children):
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert len(inputs) == 1, run_id
        assert inputs[0].dataset.digest == HASH  # the digest IS the content hash
        assert inputs[0].dataset.name == "clinic-2024"
        assert {t.key: t.value for t in inputs[0].tags} == {datasets.CONTEXT_TAG: "training"}
    found = client.search_runs([tracker.experiment_id], filter_string=f"dataset.digest = '{HASH}'")
    assert {r.info.run_id for r in found} == {parent, *children}
    other = client.search_runs([tracker.experiment_id], filter_string="dataset.digest = 'x'")
    assert other == []
