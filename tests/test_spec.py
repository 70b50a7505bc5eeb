"""SweepSpec: the typed record of a sweep, its JSON round trip, its version, and --resume reading
it; plus the two resume/summary defects of issue 13 item 9 (no Ray, no real sweep)."""

from __future__ import annotations

import json
import warnings
from dataclasses import FrozenInstanceError, fields, replace
from types import SimpleNamespace

import pandas as pd
import pytest

from raysweep import search
from raysweep.config import SELECT_METRIC, SELECT_MODE
from raysweep.errors import UserError
from raysweep.sweep import resolve, results, spaces
from raysweep.sweep.run import SweepResult
from raysweep.sweep.spec import (
    SPEC_FILE,
    VERSION,
    EarlyStopping,
    Request,
    Resources,
    SweepSpec,
    Tracking,
    saved_parent_run,
)

SPACE = '''"""Tiny study."""
MAX_EPOCHS = 3
FIXED = {"backbone": "tinycnn", "width": 8, "crop": "adaptive_bg", "image_size": 16}

def define_by_run(trial):
    return {"lr": trial.suggest_float("lr", 1e-5, 3e-2, log=True)}
'''


def a_spec(**changes) -> SweepSpec:
    spec = SweepSpec(
        name="s1", storage="/tmp/runs", space="quickstart", space_source="/x/quickstart.py",
        data="synthetic default", sets=("lr=0.001",), seed=7, num_samples=5, epochs=3,
        metric="val_de00_mean", mode="min", searcher="random", smoke_test=False, max_failures=2,
        resources=Resources(workers_per_trial=2, cpus_per_worker=1.5, gpus_per_trial=None,
                            max_concurrent=1),
        early_stopping=EarlyStopping(enabled=False, grace_period=1, reduction_factor=3),
        tracking=Tracking(uri="sqlite:///x.db", experiment="quickstart"))
    return replace(spec, **changes)


def test_the_spec_round_trips_through_json_and_is_frozen():
    spec = a_spec()
    raw = json.loads(spec.to_json())
    assert raw["version"] == VERSION
    assert SweepSpec.from_json(spec.to_json(), where="x") == spec
    # the parent run it opened is written beside it, not put into the spec
    text = spec.to_json(parent_run_id="abc")
    assert SweepSpec.from_json(text, where="x") == spec and saved_parent_run(text) == "abc"
    assert saved_parent_run(spec.to_json()) is None
    with pytest.raises(FrozenInstanceError):
        spec.seed = 1  # type: ignore[misc]


def test_a_newer_or_broken_record_is_one_clear_user_error():
    raw = json.loads(a_spec().to_json())
    with pytest.raises(UserError, match="version 99") as err:
        SweepSpec.from_json(json.dumps({**raw, "version": 99}), where="runs/s1/" + SPEC_FILE)
    assert "resume it with the raysweep that started it" in err.value.message()
    with pytest.raises(UserError, match="not valid JSON"):
        SweepSpec.from_json("{", where="x")
    del raw["resources"]
    with pytest.raises(UserError, match="lacks or mistypes"):
        SweepSpec.from_json(json.dumps(raw), where="x")


def test_a_record_from_before_the_spec_still_resumes():
    legacy = {"space": "quickstart", "space_source": "/x/quickstart.py", "sets": ["lr=0.001"],
              "seed": 3, "num_samples": 4, "smoke_test": True, "max_epochs": 2,
              "grace_period": 1, "reduction_factor": 3, "metric": "val_de00_mean",
              "mode": "min", "workers_per_trial": 2, "data": "synthetic default",
              "parent_run_id": "p1", "tracking_uri": "sqlite:///m.db"}
    spec = SweepSpec.from_json(json.dumps(legacy), where="x")
    assert (spec.seed, spec.num_samples, spec.epochs, spec.resources.workers_per_trial) == \
        (3, 4, 2, 2)
    assert spec.tracking == Tracking("sqlite:///m.db", "quickstart")
    assert saved_parent_run(json.dumps(legacy)) == "p1"
    assert spec.early_stopping.enabled and spec.sets == ("lr=0.001",)


def test_resume_reads_the_spec_and_leaves_the_loaded_space_alone(tmp_path, monkeypatch):
    space_file = tmp_path / "tiny_study.py"
    space_file.write_text(SPACE)
    root = tmp_path / "runs"
    saved = a_spec(name="s1", storage=str(root), space="tiny_study",
                   space_source=str(space_file))
    (root / "s1").mkdir(parents=True)
    (root / "s1" / SPEC_FILE).write_text(saved.to_json(parent_run_id="abc"))
    loaded = []
    real_load = spaces.load_space
    monkeypatch.setattr(spaces, "load_space", lambda s: loaded.append(real_load(s)) or loaded[-1])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    # `--resume --name s1` alone: everything else comes from the spec, not the defaults
    spec, sweep = resolve.resolve(Request(resume=True, name="s1", storage=str(root),
                                          max_failures=2))
    assert spec == saved and sweep.parent_run_id == "abc"
    assert sweep.overrides == {"lr": 0.001}
    assert loaded[0].FIXED == {"backbone": "tinycnn", "width": 8, "crop": "adaptive_bg",
                               "image_size": 16}, "the loaded space was changed"
    assert sweep.space.FIXED["epochs"] == 3
    # resource flags given again win (the sweep resumes on another cluster)
    spec, _ = resolve.resolve(Request(resume=True, name="s1", storage=str(root),
                                      max_concurrent=4, max_failures=2))
    assert spec.resources.max_concurrent == 4 and spec.resources.workers_per_trial == 2
    # another space than the sweep's is refused
    other = tmp_path / "other.py"
    other.write_text(SPACE)
    with pytest.raises(UserError, match="searched space 'tiny_study'"):
        resolve.resolve(Request(space=str(other), resume=True, name="s1", storage=str(root)))
    # a newer record is refused before Ray starts
    (root / "s1" / SPEC_FILE).write_text(json.dumps({**json.loads(saved.to_json()),
                                                      "version": VERSION + 1}))
    with pytest.raises(UserError, match=f"version {VERSION + 1}"):
        resolve.resolve(Request(resume=True, name="s1", storage=str(root)))


def test_a_new_sweep_resolves_flags_over_the_space_defaults(tmp_path):
    space_file = tmp_path / "tiny_study.py"
    space_file.write_text(SPACE)
    spec, _ = resolve.resolve(Request(space=str(space_file), storage=str(tmp_path / "runs"),
                                      name="n", num_samples=3, workers_per_trial=2,
                                      early_stopping=False, sets=("lr=0.01",), seed=5))
    assert (spec.num_samples, spec.epochs, spec.seed, spec.sets) == (3, 3, 5, ("lr=0.01",))
    assert spec.resources == Resources(2, 1.0, None, None)
    assert spec.early_stopping == EarlyStopping(False, 1, 3)
    assert spec.path == f"{tmp_path / 'runs'}/n" and spec.tracking.experiment == "tiny_study"
    assert (spec.metric, spec.mode) == (SELECT_METRIC, SELECT_MODE)


def test_every_flag_becomes_its_setting_in_one_place():
    parse = search.build_parser().parse_args
    assert {f.name for f in fields(Request)} <= set(vars(parse([])))
    assert Request.from_args(parse([])) == Request()
    args = parse(["--space", "fusion", "--no-early-stopping", "--set", "lr=1", "--set", "seed=2",
                  "--num-samples", "3", "--gpus-per-trial", "0.5", "--searcher", "random"])
    assert Request.from_args(args) == Request(
        space="fusion", early_stopping=False, sets=("lr=1", "seed=2"), num_samples=3,
        gpus_per_trial=0.5, searcher="random")


# -- issue 13 item 9 -------------------------------------------------------------------------


def finished_after(epochs: int, planned: int = 3):
    history = pd.DataFrame({"training_iteration": list(range(1, epochs + 1)),
                            "val_de00_mean": [5.0 - e for e in range(epochs)]})
    return SimpleNamespace(config={"lr": 0.1, "epochs": planned}, error=None,
                           metrics_dataframe=history, metrics={}, path=f"/x/trial_{epochs}",
                           checkpoint=None)


def test_without_early_stopping_no_trial_counts_as_stopped_by_asha(monkeypatch, capsys):
    trials = [finished_after(1), finished_after(3)]
    on = results.table(trials, "val_de00_mean", "min", 3, ["lr"])
    off = results.table(trials, "val_de00_mean", "min", 3, ["lr"], early_stopping=False)
    assert on["stopped_early"].sum() == 1 and off["stopped_early"].sum() == 0

    for early_stopping, says in ((False, "(early stopping off, 0 failed)"),
                                 (True, "(1 stopped early by ASHA, 0 failed)")):
        table = on if early_stopping else off
        out = SweepResult("s", "/tmp/s", "p", table, "sqlite:///x", "val_de00_mean",
                          ["lr"], early_stopping=early_stopping)
        monkeypatch.setattr(search, "run_sweep", lambda *a, _out=out, **k: _out)
        assert search.main(["--space", "quickstart"]) == 0
        printed = capsys.readouterr().out
        assert says in printed and ("ASHA" in printed) == early_stopping


def test_replayed_epochs_are_not_reported_to_optuna_again():
    """A trial restored from its best checkpoint reports epochs 2-3 again: Optuna must neither
    warn (once per epoch) nor take the second value."""
    from raysweep.sweep.tuner import ReplayingOptunaSearch

    define = spaces.DefineByRun(lambda t: {"lr": t.suggest_float("lr", 1e-4, 1e-1, log=True)},
                                {}, {})
    searcher = ReplayingOptunaSearch(space=define, metric="val_de00_mean", mode="min", seed=0)
    assert searcher.suggest("t1") is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step, value in ((1, 5.0), (2, 4.0), (3, 3.0), (2, 9.0), (3, 9.0), (4, 2.0)):
            searcher.on_trial_result("t1", {"val_de00_mean": value,
                                            "training_iteration": step})
    assert not [w for w in caught if "already reported" in str(w.message)]
    steps = searcher._ot_trials["t1"]._cached_frozen_trial.intermediate_values
    assert steps == {1: 5.0, 2: 4.0, 3: 3.0, 4: 2.0}


def test_a_diverged_trial_is_a_failed_optuna_trial():
    """The loop ends a diverged trial with a last result (NaN score, config.DIVERGED) instead of
    an error Tune would retry; Optuna must record it FAILED, as it did the error, not leave it
    RUNNING (Optuna refuses NaN for a COMPLETE trial)."""
    import math

    import optuna

    from raysweep.config import DIVERGED
    from raysweep.sweep.tuner import ReplayingOptunaSearch

    define = spaces.DefineByRun(lambda t: {"lr": t.suggest_float("lr", 1e-4, 1e-1, log=True)},
                                {}, {})
    searcher = ReplayingOptunaSearch(space=define, metric="val_de00_mean", mode="min", seed=0)
    for tid in ("t1", "t2"):
        assert searcher.suggest(tid) is not None
    last = {"val_de00_mean": math.nan, "training_iteration": 2, "epoch": 2,
            DIVERGED: "NonFiniteLoss: non-finite training loss at epoch 2, batch 0"}
    searcher.on_trial_result("t1", last)
    searcher.on_trial_complete("t1", result=last)
    searcher.on_trial_complete("t2", result={"val_de00_mean": 3.0, "training_iteration": 2})
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
