"""Hostile and careless input through the real CLIs (`python -m raysweep.<cmd>`), one class per
test: the defects of issue 13 must stay fixed.

A diverged model (NaN weights), corrupt checkpoints, finite EXIF garbage, manifests with clashing
column names or the wrong encoding, a decompression bomb, a tracking server that is down, and the
commands run with no arguments. Each case ends with a flagged result or one `error:` paragraph
and a non-zero exit, never a traceback or a number that looks valid. Tiny data, `tinycnn`, one
epoch; the one case that runs a whole sweep is marked slow.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from raysweep.data.demo import FOREIGN, exif_bytes, make_folder
from tests.helpers.cli import assert_clear_error, cli
from tests.helpers.photos import png_claiming, write_card
from tests.helpers.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("adv")
    make_folder(root, n=12, size=96)
    return root, write_card(root)


@pytest.fixture(scope="module")
def ckpt(folder, tmp_path_factory):
    from raysweep.data.pipeline import load_prepared
    from raysweep.train.loop import fit

    data = load_prepared(folder[1], crop="adaptive_bg", size=32, progress=False)
    out = tmp_path_factory.mktemp("model") / "ckpt"
    fit(dict(backbone="tinycnn", width=8, image_size=32, epochs=1, batch_size=8,
             features="image+meta", fusion="concat", device="cpu"), data,
        checkpoint_dir=str(out))
    return out


def photos(folder, n=2):
    return sorted((folder[0] / "photos").glob("*.jpg"))[:n]


def copy_ckpt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- 1. a diverged model ------------------------------------------------------------------------

@pytest.mark.slow  # measured above 15 s in `make test-fast` on 2 shared cores
def test_predict_with_a_diverged_model_flags_every_row_and_fails(folder, ckpt, tmp_path):
    bad = copy_ckpt(ckpt, tmp_path / "nan")
    state = torch.load(bad / "model.pt", weights_only=True)
    torch.save({k: torch.full_like(v, math.nan) if v.is_floating_point() else v
                for k, v in state.items()}, bad / "model.pt")
    for fmt in ("table", "csv", "json"):
        r = cli("predict", *photos(folder), "--model", bad, "--format", fmt, cwd=tmp_path)
        assert r.returncode == 1, r.stderr[-2000:]
        assert "#-8" not in r.stdout and "Traceback" not in r.stderr
        assert "diverged" in r.stderr
    out = pd.read_csv(pd.io.common.StringIO(
        cli("predict", *photos(folder), "--model", bad, "--format", "csv", cwd=tmp_path).stdout))
    assert (out["ita_category"] == "invalid").all() and out["hex"].isna().all()
    assert out["notes"].str.contains("not a finite colour").all()


def test_nan_never_leads_the_tune_table_or_the_leaderboard():
    from raysweep.evaluate.leaders import pick_leaders
    from raysweep.evaluate.trials import used_groups
    from raysweep.sweep import results

    def trial(tid, values, error=None):
        hist = pd.DataFrame({"training_iteration": range(1, len(values) + 1),
                             "epoch": range(1, len(values) + 1), "val_de00_mean": values})
        return SimpleNamespace(config={"lr": 0.1}, error=error, metrics_dataframe=hist,
                               metrics={}, path=f"/x/trial_{tid}", checkpoint=None)

    table = results.table([trial("nan", [math.nan, math.nan]), trial("inf", [math.inf]),
                           trial("ok", [5.0, 4.0]),
                           trial("failed", [1.0], error=RuntimeError("non-finite"))],
                          "val_de00_mean", "min", 2, ["lr"])
    assert table["trial_id"].tolist()[0] == "ok" and table["val_de00_mean"].iloc[0] == 4.0
    assert table.set_index("trial_id").loc["failed", "rank"] == 4  # failed after finished
    assert table.set_index("trial_id")["val_de00_mean"].drop(["ok", "failed"]).isna().all()
    assert "0.0" not in results.leaderboard(table.iloc[1:3], "val_de00_mean", ["lr"])
    runs = pd.DataFrame({"run_id": list("abc"), "status": "FINISHED",
                         "val_de00_mean": [math.nan, -math.inf, 3.0],
                         **{k: ["x"] * 3 for k in ("backbone", "fusion", "crop", "features")}})
    assert pick_leaders(runs, 3, ["fusion"])["run_id"].tolist() == ["c"]
    tab = used_groups({"backbone": "smallcnn", "fusion": "none", "crop": "adaptive_bg",
                       "features": "mean+meta"})
    assert tab["backbone"] == tab["crop"] == "-"


def test_the_registry_refuses_non_finite_scores(ckpt):
    from raysweep.errors import UserError
    from raysweep.serve.pyfunc import register_champion

    with pytest.raises(UserError, match="not finite"):
        register_champion(ckpt, "never", "0" * 32, "sqlite:///unused.db",
                          scores={"test_de00_mean": math.nan})


# ---- 9. an interrupted sweep's table --------------------------------------------------------------

def test_an_interrupted_trial_is_interrupted_not_finished_or_stopped_early():
    from raysweep.sweep import results

    hist = pd.DataFrame({"training_iteration": [1], "epoch": [1], "val_de00_mean": [5.0]})
    res = [SimpleNamespace(config={"epochs": 4}, error=None, metrics_dataframe=hist, metrics={},
                           path=f"/x/trial_{t}", checkpoint=None) for t in ("run", "asha")]
    analysis = SimpleNamespace(trials=[SimpleNamespace(path="/x/trial_run", status="RUNNING"),
                                       SimpleNamespace(path="/x/trial_asha", status="TERMINATED")])
    table = results.table(_Grid(res, analysis), "val_de00_mean", "min", 4, []
                          ).set_index("trial_id")
    assert table.loc["run", "status"] == "INTERRUPTED" and not table.loc["run", "stopped_early"]
    assert table.loc["asha", "status"] == "FINISHED" and table.loc["asha", "stopped_early"]


class _Grid(list):
    """A ResultGrid stand-in: iterable Results plus Tune's trial states."""

    def __init__(self, items, analysis):
        super().__init__(items)
        self._experiment_analysis = analysis


# ---- 3 and 7. the registry: no pickle, and a server that is down ---------------------------------

@pytest.fixture(scope="module")
def registry(ckpt, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from raysweep.serve.pyfunc import register_champion

    root = tmp_path_factory.mktemp("reg")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(uri)
    for name in ("older", "newest"):
        exp = client.create_experiment(name, artifact_location=(root / name).as_uri())
        run = client.create_run(exp).info.run_id
        register_champion(ckpt, name, run, uri, scores={"test_de00_mean": 3.0})
        time.sleep(0.01)  # distinct creation timestamps
    return {"uri": uri, "root": root}


@pytest.mark.slow  # measured above 15 s in `make test-fast` on 2 shared cores
def test_predict_without_model_uses_the_latest_champion_and_says_so(folder, registry, tmp_path):
    r = cli("predict", *photos(folder), "--format", "csv", cwd=tmp_path,
            env={"MLFLOW_TRACKING_URI": registry["uri"]})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "models:/newest@champion" in r.stderr
    assert len(pd.read_csv(pd.io.common.StringIO(r.stdout))) == 2


@pytest.mark.slow  # measured above 15 s in `make test-fast` on 2 shared cores
def test_mlflow_loads_the_champion_without_unpickling(registry, tmp_path):
    """`mlflow.pyfunc.load_model` as `mlflow models serve` uses it, pickle forbidden."""
    script = ("import mlflow.pyfunc, pandas as pd\n"
              "m = mlflow.pyfunc.load_model('models:/newest@champion')\n"
              "print(m.metadata.flavors['python_function']['model_code_path'])")
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT),
                            "MLFLOW_TRACKING_URI": registry["uri"],
                            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("model_code.py")
    assert not list(registry["root"].rglob("python_model.pkl"))


@pytest.mark.slow  # measured above 15 s in `make test-fast` on 2 shared cores
def test_predict_from_the_registry_with_the_server_down_fails_fast(folder, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP")}
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "raysweep.predict", str(photos(folder)[0]),
                        "--model", "models:/quickstart@champion"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600,
                       env={**env, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": url})
    took = time.monotonic() - t0
    assert_clear_error(r, "cannot reach the MLflow tracking store", "Connection refused")
    assert took < 120, f"{took:.0f} s (MLflow's own retries take 252 s)"


@pytest.mark.slow  # measured above 15 s in `make test-fast` on 2 shared cores
def test_commands_without_arguments_in_an_empty_store(folder, tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"}
    assert_clear_error(cli("eval_winners", cwd=tmp_path, env=env), "no sweep in")
    assert_clear_error(cli("predict", photos(folder)[0], cwd=tmp_path, env=env),
                       "no model with alias @champion")


# ---- 4. corrupt checkpoints ---------------------------------------------------------------------

def _truncate(d):
    data = (d / "model.pt").read_bytes()
    (d / "model.pt").write_bytes(data[: len(data) // 2])


def _wrong_shape(d):
    state = torch.load(d / "model.pt", weights_only=True)
    key = next(k for k, v in state.items() if v.ndim >= 2)
    state[key] = torch.zeros(*[s + 1 for s in state[key].shape])
    torch.save(state, d / "model.pt")


@pytest.mark.parametrize("break_it, fragment", [
    (lambda d: (d / "model.pt").write_bytes(b""), "empty, truncated or not a torch file"),
    (_truncate, "empty, truncated or not a torch file"),
    (lambda d: (d / "model.pt").unlink(), "has no model.pt"),
    (lambda d: (d / "checkpoint.json").write_text('{"config": {'), "not JSON"),
    (lambda d: (d / "checkpoint.json").write_text("[]"), "lacks its `config`"),
    (_wrong_shape, "do not fit the model"),
], ids=["empty", "truncated", "missing-weights", "broken-json", "json-not-a-dict", "wrong-shape"])
def test_a_corrupt_checkpoint_is_one_paragraph(folder, ckpt, tmp_path, break_it, fragment):
    bad = copy_ckpt(ckpt, tmp_path / "bad")
    break_it(bad)
    assert_clear_error(cli("predict", photos(folder)[0], "--model", bad, cwd=tmp_path), fragment)


# ---- 5, 8, 12. data that looks fine and is not --------------------------------------------------

def _labels(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "labels.csv", dtype={"id": str})


def prepare(root: Path, tmp_path: Path, *extra: str):
    return cli("prepare", "--card", root / "dataset.yaml", "--size", 32, "--no-progress",
               "--workers", 1, *extra, cwd=tmp_path)


def test_finite_exif_garbage_becomes_missing(tmp_path):
    from PIL import Image

    from raysweep.data.pipeline import load_prepared

    make_folder(tmp_path, n=8, size=96)
    write_card(tmp_path)
    df = _labels(tmp_path)
    for i in (1, 2):
        path = tmp_path / df.file[i]
        Image.open(path).save(path, exif=exif_bytes(n=(4294967295, 1), bias=(-2**31, 1)))
    r = prepare(tmp_path, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    data = load_prepared(tmp_path / "dataset.yaml", size=32, progress=False)
    by_id = data.frame.set_index("sample_id")
    bad = [df.id[1], df.id[2]]
    assert by_id.loc[bad, "f_number"].isna().all()
    assert by_id.loc[bad, "exposure_bias_ev"].isna().all()
    assert by_id["f_number"].max() < 100


def _case_clash(root: Path):
    df = _labels(root).rename(columns={"id": "sample_id", "file": "image", "L-true": "Target_L",
                                       "a-true": "target_a", "b-true": "target_b"})
    df.assign(target_L=df["Target_L"]).to_csv(root / "labels.csv", index=False)
    return ""


@pytest.mark.parametrize("mutate, fragment", [
    (_case_clash, "differ only by case"),
    (lambda root: _labels(root).assign(note="café crème").to_csv(
        root / "labels.csv", index=False, encoding="latin-1"), "not UTF-8"),
    (lambda root: _labels(root).to_csv(root / "labels.csv", index=False, sep=";"),
     "semicolon-separated"),
], ids=["case-clash", "latin-1", "semicolons"])
def test_manifest_pitfalls_are_one_paragraph(tmp_path, mutate, fragment):
    make_folder(tmp_path, n=6, size=96)
    columns = mutate(tmp_path)
    r = cli("prepare", "--images", tmp_path, "--labels", tmp_path / "labels.csv", "--columns",
            FOREIGN if columns is None else columns, "--size", 32, "--no-progress", cwd=tmp_path)
    assert_clear_error(r, fragment)


def test_a_decompression_bomb_is_named(tmp_path):
    make_folder(tmp_path, n=6, size=96)
    write_card(tmp_path)
    df = _labels(tmp_path)
    (tmp_path / "photos" / "bomb.png").write_bytes(png_claiming(30000, 30000))
    df.loc[2, "file"] = "photos/bomb.png"
    df.to_csv(tmp_path / "labels.csv", index=False)
    msg = assert_clear_error(prepare(tmp_path, tmp_path), "decompression bomb")
    assert "corrupt or truncated" not in msg


# ---- the whole chain: a sweep whose lr diverges, then eval_winners and predict with no args ------

DIVERGING = '''"""Adversarial study: lr 1e12 diverges. Scientific: lr. Fixed: tinycnn, 16 px, no aux loss."""
MAX_EPOCHS = 2
GRACE_PERIOD = 2
REDUCTION_FACTOR = 2
FIXED = {"backbone": "tinycnn", "width": 8, "crop": "adaptive_bg", "image_size": 16,
         "batch_size": 8, "features": "image+meta", "fusion": "concat", "aux_loss": "none",
         "grad_clip": 0.0}

def define_by_run(trial):
    return {"lr": trial.suggest_categorical("lr", [1e-2, 1e12])}
'''


@pytest.mark.slow
def test_a_diverging_sweep_never_crowns_nan(tmp_path):
    project = tmp_path / "project"
    make_folder(project / "data" / "mine", n=24, size=96)
    write_card(project / "data" / "mine")
    (project / "diverging.py").write_text(DIVERGING)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlruns.db'}", "PWD": str(project),
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "")}
    # the default --max-failures 1: a diverged trial ends without a retry (it would diverge
    # the same way) and is said once, as a diverged trial
    r = cli("search", "--space", "diverging.py", "--data", "data/mine", "--num-samples", 4,
            "--max-concurrent", 2, "--storage", project / "runs",
            "--name", "adv", cwd=project, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "retrying" not in r.stderr and "diverged in epoch" in r.stderr, r.stderr[-4000:]
    table = pd.read_csv(project / "runs" / "adv" / "results.csv")
    lr = table["config"].map(lambda c: json.loads(c)["lr"])
    assert (table.loc[lr > 1, "status"] == "FAILED").all() and (lr > 1).any()
    assert table.loc[lr > 1, "val_de00_mean"].isna().all()  # never a 0.0
    assert (table["rank"][lr < 1] < table["rank"][lr > 1].min()).all()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    parent = client.search_runs([client.get_experiment_by_name("diverging").experiment_id],
                                filter_string="tags.`raysweep.role` = 'sweep'")[0]
    assert "***" not in parent.data.params["data"]  # PWD is no secret

    r = cli("eval_winners", "--n-boot", 50, "--out", project / "winners", cwd=project, env=env,
            timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "most recent" in r.stderr and "diverging@adv" in r.stderr
    assert "registered: models:/diverging@champion" in r.stderr
    champion = client.get_model_version_by_alias("diverging", "champion")
    run = client.get_run(champion.run_id)
    assert all(np.isfinite(v) for v in run.data.metrics.values())

    r = cli("predict", *photos((project / "data" / "mine", None)), "--format", "csv",
            cwd=project, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    out = pd.read_csv(pd.io.common.StringIO(r.stdout))
    assert out["hex"].str.match(r"^#[0-9a-f]{6}$").all()


def test_registering_leaves_the_callers_environment_alone(ckpt, tmp_path, monkeypatch):
    """register_champion points MLflow at a store for one call; MLflow's set_registry_uri also
    exports MLFLOW_REGISTRY_URI, which every later subprocess would have inherited."""
    from mlflow.tracking import MlflowClient

    from raysweep.serve.pyfunc import register_champion

    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment(
        "env", artifact_location=(tmp_path / "art").as_uri())).info.run_id
    register_champion(ckpt, "env", run, uri)
    assert "MLFLOW_REGISTRY_URI" not in os.environ and "MLFLOW_TRACKING_URI" not in os.environ
