"""Security: Ray token auth stays on, servers the code starts listen on loopback, nothing loads a
pickle, manifest paths stay in the dataset folder, and secrets never reach MLflow.

Some guarantees are proven elsewhere and only cited in RELIABILITY.md (manifest `..` and
absolute paths: tests/test_data_bad_input.py; secret scrubbing of trial params:
tests/test_search_tracking.py; example env files: tests/test_infra.py).
"""

from __future__ import annotations

import ast
import collections
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from raysweep.errors import UserError
from raysweep.train import checkpoint, predictor

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "raysweep"


def shipped_files() -> list[Path]:
    """Every file the project ships that could configure Ray or a server (tests excluded)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    keep = (".py", ".yaml", ".yml", ".sh", ".md", ".toml", ".env", ".example", "Makefile",
            "Dockerfile")
    return [ROOT / f for f in out if not f.startswith("tests/") and f.endswith(keep)
            and (ROOT / f).is_file()]


@functools.cache
def package_calls() -> dict[str, list[tuple[Path, ast.Call]]]:
    """Every call in raysweep/ by its callee's dotted name, parsed once for all the checks (a
    parse of the package per name took about a second each)."""
    calls = collections.defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                calls[ast.unparse(node.func)].append((path, node))
    return dict(calls)


def python_calls(name: str) -> list[tuple[Path, ast.Call]]:
    """(file, ast.Call) for every call of `name` (dotted, e.g. 'torch.load') in raysweep/."""
    return package_calls().get(name, [])


def kwarg(call: ast.Call, key: str):
    for kw in call.keywords:
        if kw.arg == key:
            return ast.literal_eval(kw.value) if isinstance(kw.value, ast.Constant) else \
                ast.unparse(kw.value)
    return None


# ---- Ray: token auth on, dashboard on loopback -------------------------------------------------

def test_nothing_turns_ray_token_auth_off():
    off = re.compile(r"RAY_AUTH_MODE\W{0,3}disabled|auth_mode\W{0,3}disabled|mode:\s*disabled",
                     re.IGNORECASE)
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in shipped_files()
            for i, line in enumerate(p.read_text(errors="ignore").splitlines(), 1)
            if off.search(line)]
    assert hits == []


def test_token_auth_is_documented_and_set_wherever_a_cluster_starts():
    assert "token" in (ROOT / "infra" / "README.md").read_text().lower()
    for path in (ROOT / "infra").rglob("*.yaml"):
        text = path.read_text()
        for line in text.splitlines():
            if re.search(r"^\s*-.*\bray start\b", line):  # a launcher command, not a comment
                assert "RAY_AUTH_MODE=token" in line, f"{path.name}: {line.strip()}"
        if "kind: RayCluster" in text or "kind: RayJob" in text:
            assert re.search(r"authOptions:\s*\n\s*mode:\s*token", text), path.name


def test_a_local_ray_started_by_the_code_binds_the_dashboard_to_loopback():
    calls = list(python_calls("ray.init"))
    assert calls, "expected raysweep to start a local Ray somewhere"
    for path, call in calls:
        if kwarg(call, "address") == "local" and kwarg(call, "include_dashboard") is not False:
            assert kwarg(call, "dashboard_host") == "127.0.0.1", f"{path}:{call.lineno}"
    for path in PACKAGE.rglob("*.py"):  # no server of ours listens on every interface
        assert "0.0.0.0" not in path.read_text(), path


def test_exposed_dashboards_in_infra_come_with_token_auth():
    # infra/ binds the dashboard to 0.0.0.0 where a private network or a port-forward needs it;
    # then token auth must be on for that same head node.
    for path in (ROOT / "infra").rglob("*.yaml"):
        text = path.read_text()
        for line in text.splitlines():
            if "--dashboard-host=0.0.0.0" in line:
                assert "RAY_AUTH_MODE=token" in line, f"{path.name}: {line.strip()}"
        if re.search(r"dashboard-host:\s*\"?0\.0\.0\.0", text):
            assert re.search(r"mode:\s*token", text), path.name


# ---- no pickles: torch.load(weights_only=True) only --------------------------------------------

def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    loads = list(python_calls("torch.load"))
    assert loads, "expected checkpoint loading in raysweep/"
    for path, call in loads:
        assert kwarg(call, "weights_only") is True, f"{path}:{call.lineno}"
    for name in ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads",
                 "joblib.load", "dill.load", "mlflow.pyfunc.load_model", "torch.jit.load"):
        assert list(python_calls(name)) == [], name
    for path, call in python_calls("np.load"):
        assert kwarg(call, "allow_pickle") is False, f"{path}:{call.lineno}"


class Payload:
    """Unpickling this runs os.mkdir(marker): what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def malicious_checkpoint(tmp_path):
    """A real checkpoint folder whose model.pt is replaced by a code-running pickle."""
    from raysweep.train.loop import fit
    from tests.helpers.fakes import make_prepared

    good = tmp_path / "good"
    fit(dict(backbone="tinycnn", width=8, image_size=16, epochs=1, batch_size=16,
             features="image+meta", fusion="concat", device="cpu"),
        make_prepared(n=24, size=16), checkpoint_dir=str(good))
    marker = tmp_path / "pwned"
    torch.save({"weight": Payload(marker)}, good / checkpoint.MODEL_FILE)
    return good, marker


def test_a_malicious_checkpoint_is_refused_without_running_it(malicious_checkpoint, tmp_path):
    folder, marker = malicious_checkpoint
    with pytest.raises(UserError, match="refusing to load"):
        predictor.load(folder, device="cpu")
    assert not marker.exists(), "the pickle ran"
    # and from the command line: one paragraph, exit 2, still nothing ran
    photo = tmp_path / "p.png"
    import cv2

    cv2.imwrite(str(photo), np.full((32, 32, 3), 128, np.uint8))
    r = subprocess.run([sys.executable, "-m", "raysweep.predict", str(photo), "--model",
                        str(folder)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "refusing to load" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def test_a_registered_model_is_read_without_unpickling_its_python_model(tmp_path, monkeypatch):
    """predict --model models:/... reads the checkpoint inside the model, not python_model.pkl
    (which mlflow.pyfunc.load_model would unpickle): a poisoned one changes nothing."""
    from mlflow.tracking import MlflowClient

    from raysweep.serve import loading, pyfunc
    from raysweep.train.loop import fit
    from tests.helpers.fakes import make_prepared

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    data = make_prepared(n=24, size=16)
    fit(dict(backbone="tinycnn", width=8, image_size=16, epochs=1, batch_size=16,
             features="image+meta", fusion="concat", device="cpu"), data,
        checkpoint_dir=str(tmp_path / "ckpt"))
    client = MlflowClient(uri)
    exp = client.create_experiment("sec", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp).info.run_id
    model_uri = pyfunc.register_champion(tmp_path / "ckpt", "sec", run, uri)
    marker = tmp_path / "pwned"
    # models from code: no pickled python model is stored at all ...
    assert not list((tmp_path / "art").rglob("python_model.pkl"))
    mlmodels = list((tmp_path / "art").rglob("MLmodel"))
    assert mlmodels
    for mlmodel in mlmodels:
        conf = yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"]
        assert "python_model" not in conf and conf["model_code_path"].endswith("model_code.py")
        # ... and one planted by an attacker with write access to the artifact store is never read
        (mlmodel.parent / "python_model.pkl").write_bytes(
            __import__("pickle").dumps(Payload(marker)))
    predictor = loading.load_predictor(model_uri, device="cpu")
    assert not marker.exists()
    assert predictor.predict(data).shape == (len(data), 3)
    # MLflow's own loader, with pickle deserialisation forbidden, loads it too and runs nothing
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    assert not marker.exists()
    assert model.metadata.flavors["python_function"].get("model_code_path")


# ---- dataset paths -----------------------------------------------------------------------------

def test_a_symlink_out_of_the_dataset_folder_is_rejected(tmp_path):
    from raysweep.data.demo import make_folder
    from raysweep.data.pipeline import load_prepared
    from tests.helpers.photos import write_card

    root = tmp_path / "ds"
    labels, df = make_folder(root, n=6, size=96)
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((root / df.file[2]).read_bytes())
    (root / "photos" / "link.jpg").symlink_to(outside)
    df.loc[2, "file"] = "photos/link.jpg"
    df.to_csv(labels, index=False)
    card = write_card(root)
    with pytest.raises(UserError, match="is a link that leaves the dataset folder"):
        load_prepared(card, size=32, progress=False)
    # a link that stays inside is fine, and so is a linked dataset folder
    (root / "photos" / "link.jpg").unlink()
    (root / "photos" / "link.jpg").symlink_to(root / df.file[3])
    assert len(load_prepared(card, size=32, progress=False)) == 6
    (tmp_path / "linked").symlink_to(root)
    assert len(load_prepared(tmp_path / "linked", size=32, progress=False)) == 6


# ---- secrets -----------------------------------------------------------------------------------

def test_secrets_never_reach_mlflow_params_or_tags(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from raysweep.tracking import callback
    from raysweep.tracking import store as tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LAB_DB_PASSWORD", "s3cr3t-pass-42")  # any secret-named env var
    t = tracking.Tracker("sec", "sweep")
    run = t.start_parent(
        tags={"raysweep.note": "uses s3cr3t-pass-42 inside"},
        params={"data": "https://alice:hunter2@example.org/ds", "aws_secret_access_key": "AKIA",
                "copy_of_password": "s3cr3t-pass-42", "lr": 0.1})
    logger = callback.TrialLogger(t, max_epochs=1)
    trial = type("T", (), {"trial_id": "x", "config": {"lr": 0.1, "hf_token": "hf_abcdef123"},
                           "__str__": lambda self: "trial_x"})()
    logger.on_trial_start(0, [], trial)
    client = MlflowClient(t.uri)
    parent, child = client.get_run(run).data, client.get_run(logger.runs["x"]).data
    everything = " ".join([*parent.params.values(), *parent.tags.values(),
                           *child.params.values(), *child.tags.values()])
    for secret in ("s3cr3t-pass-42", "hunter2", "AKIA", "hf_abcdef123"):
        assert secret not in everything, secret
    assert parent.params["lr"] == "0.1" and parent.params["data"].startswith("https://alice:")
    assert child.params["hf_token"] == "***"


def test_the_leaderboard_holds_no_secret_values():
    """results.csv carries each trial's config: the same scrubbing applies there."""
    from types import SimpleNamespace

    from raysweep.sweep import results

    history = pd.DataFrame({"training_iteration": [1], "epoch": [1], "val_de00_mean": [5.0]})
    trial = SimpleNamespace(config={"lr": 0.1, "wandb_api_key": "k-123456"}, error=None,
                            metrics_dataframe=history, metrics={}, path="/x/trial_abc",
                            checkpoint=None)
    csv = results.to_csv(results.table([trial], "val_de00_mean", "min", 1, ["lr"]))
    assert "k-123456" not in csv and "***" in csv and "0.1" in csv


def _import_env(**extra: str) -> dict[str, str]:
    """This environment without what makes MLflow switch its telemetry off by itself (CI, pytest)."""
    env = {k: v for k, v in os.environ.items() if k not in (
        "CI", "PYTEST_CURRENT_TEST", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "GITHUB_ACTIONS")}
    return {**env, **extra}


TELEMETRY_PROBE = ("import raysweep.tracking.store, mlflow; "
                   "from mlflow.telemetry.client import get_telemetry_client as g; "
                   "print('client', g() is not None)")


@pytest.mark.parametrize(("env", "expected"), [({}, "client False"),
                                               ({"MLFLOW_DISABLE_TELEMETRY": "false"},
                                                "client True")])
def test_mlflow_telemetry_is_off_unless_the_user_turns_it_on(env, expected):
    """MLflow 3 would fetch its telemetry config from the internet at import and report every
    client call; raysweep turns that off before mlflow is imported, and a user's choice wins."""
    out = subprocess.run([sys.executable, "-c", TELEMETRY_PROBE], capture_output=True,
                         text=True, timeout=120, env=_import_env(**env), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == expected
