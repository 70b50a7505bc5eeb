"""Sweeps that are interrupted, started twice, doomed or unschedulable, through the real CLI
(issue 25). Tabular data and a tiny MLP keep each sweep to seconds of training; the Ray start is
most of the cost, so one interrupted sweep also carries the second-writer, secret and --resume
checks.

- Ctrl-C (SIGINT) or SIGTERM: exit 130, unfinished trials INTERRUPTED (never FINISHED or stopped
  early), the parent and every child run KILLED (none left RUNNING), the resume command printed.
- A second `search` of the same name while the first runs: refused at once, naming host and pid.
- AWS keys of the driver never reach Ray's logs (Tune copied them into the trainable's runtime env).
- `--resume` refuses flags it cannot honour (--set, --num-samples, --seed, --data).
- A sweep in which no trial finished exits non-zero with the parent FAILED; an empty validation
  split and an unschedulable worker are refused before any trial is queued.
- Sweep names are names: no path, no quote, not 300 characters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.cli import assert_clear_error, cli
from tests.helpers.photos import tabular

ROOT = Path(__file__).resolve().parents[1]
SECRET = "raysweep-test-secret-7f3a9c"

SPACE = '''"""Adversarial tabular study: a tiny MLP on mean+meta. Scientific: lr."""
MAX_EPOCHS = {epochs}
GRACE_PERIOD = 1
REDUCTION_FACTOR = 2
NUM_SAMPLES = 2
FIXED = {{"fusion": "none", "features": "mean+meta", "head": "lab", "batch_size": 8,
         "meta_hidden": 16, "device": "cpu", "aux_loss": "none", "grad_clip": 0.0,
         "epochs": {epochs}}}

def define_by_run(trial):
    return {{"lr": trial.suggest_categorical("lr", {lrs})}}
'''


def project(tmp_path: Path, epochs: int, lrs=(1e-3, 2e-3)) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    n = 40
    tabular(tmp_path / "data", n=n, target_L=40 + 20 * rng.random(n), mean_L=39 + 20 *
            rng.random(n), tone_id=[f"t{k // 2}" for k in range(n)])
    (tmp_path / "tab.py").write_text(SPACE.format(epochs=epochs, lrs=list(lrs)))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "")}
    return tmp_path, env


def search_args(root: Path, name: str = "adv", *extra) -> list[str]:
    return ["--space", "tab.py", "--data", str(root / "data"), "--storage", str(root / "runs"),
            "--name", name, "--max-concurrent", "2", *map(str, extra)]


def popen(root: Path, env: dict, *args: str) -> subprocess.Popen:
    full = {**{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",
                                                               "RAY_ADDRESS")},
            "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen([sys.executable, "-m", "raysweep.search", *args], cwd=root,
                            env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(sweep: Path, proc: subprocess.Popen, at_least: int = 3,
                    timeout: float = 600) -> None:
    """Until every trial of the sweep has reported `at_least` epochs (the driver still up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-4000:]
        files = list(sweep.glob("trial_*/result.json"))
        if len(files) >= 2 and all(len(f.read_text().splitlines()) >= at_least for f in files):
            return
        time.sleep(1)
    raise AssertionError("the trials never reported their first epochs")


def runs(env: dict, experiment: str = "tab"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id])
    parent = [r for r in found if r.data.tags.get("raysweep.role") == "sweep"]
    return parent, [r for r in found if r.data.tags.get("raysweep.role") == "trial"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_is_interrupted_everywhere(tmp_path, sig):
    root, env = project(tmp_path, epochs=5000)
    ray_tmp = Path(f"/tmp/rs25-{os.getpid()}-{sig.name}")  # short: Ray's socket paths
    env = {**env, "AWS_ACCESS_KEY_ID": "AKIA" + SECRET, "AWS_SECRET_ACCESS_KEY": SECRET,
           "RAY_TMPDIR": str(ray_tmp)}
    first = popen(root, env, *search_args(root, "adv", "--no-early-stopping"))
    try:
        wait_for_epochs(root / "runs" / "adv", first)
        # a second writer of the same sweep (its spec exists by now, so the one way in is
        # --resume): refused at once, naming the holder
        second = cli("search", "--resume", "--name", "adv", "--storage", root / "runs",
                     cwd=root, env=env, timeout=300)
        msg = assert_clear_error(second, "being written by another", f"pid {first.pid}")
        assert "host " in msg
        first.send_signal(sig)
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err[-4000:]
    assert "--resume --name adv" in out + err
    table = pd.read_csv(root / "runs" / "adv" / "results.csv")
    assert len(table) == 2 and (table["status"] == "INTERRUPTED").all(), table
    assert not table["stopped_early"].any()
    parent, children = runs(env)
    assert [p.info.status for p in parent] == ["KILLED"]
    assert len(children) == 2 and {c.info.status for c in children} == {"KILLED"}
    leaked = subprocess.run(["grep", "-rl", SECRET, str(ray_tmp)], capture_output=True,
                            text=True).stdout
    assert leaked == "", f"the AWS secret reached Ray's files: {leaked}"
    subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)
    # --resume continues the sweep as it was started: a flag it would ignore is refused
    tabular(root / "other")
    for flag in (["--set", "lr=0.1"], ["--num-samples", "5"], ["--seed", "3"],
                 ["--data", str(root / "other")], ["--grace-period", "3"]):
        r = cli("search", "--resume", "--name", "adv", "--storage", root / "runs", *flag,
                cwd=root, env=env, timeout=300)
        assert_clear_error(r, "--resume", flag[0])


@pytest.mark.slow
def test_a_sweep_in_which_no_trial_finished_fails(tmp_path):
    root, env = project(tmp_path, epochs=2, lrs=(1e12,))
    r = cli("search", *search_args(root, "doomed", "--max-failures", 0), cwd=root, env=env,
            timeout=900)
    assert r.returncode == 1, r.stderr[-4000:]
    assert "no trial finished" in r.stderr
    table = pd.read_csv(root / "runs" / "doomed" / "results.csv")
    assert (table["status"] == "FAILED").all()
    parent, _ = runs(env)
    assert [p.info.status for p in parent] == ["FAILED"]


def test_an_empty_validation_split_is_refused_before_ray(tmp_path):
    root, env = project(tmp_path, epochs=2)
    labels = pd.read_csv(root / "data" / "labels.csv")
    labels.assign(split=["train"] * 30 + ["test"] * 10).to_csv(root / "data" / "labels.csv",
                                                               index=False)
    r = cli("search", *search_args(root, "noval", "--set", "split_by=column"), cwd=root,
            env=env, timeout=300)
    assert_clear_error(r, "validation split empty", "split")
    assert "Ray" not in r.stderr.split("error:")[0]  # refused before Ray started
    assert not (root / "mlruns.db").exists()


@pytest.mark.slow
def test_an_unschedulable_worker_is_refused_naming_the_largest_node(tmp_path):
    root, env = project(tmp_path, epochs=2)
    r = cli("search", *search_args(root, "huge", "--cpus-per-worker", 64), cwd=root,
            env=env, timeout=600)
    msg = assert_clear_error(r, "64 CPU", "largest node")
    assert "--cpus-per-worker" in msg


@pytest.mark.parametrize("name, fragment", [
    ("../escaped", "not a sweep name"), ("a/b", "not a sweep name"),
    ('quote"d', "not a sweep name"), ("it's", "not a sweep name"),
    ("x" * 300, "300 characters"), (".hidden", "not a sweep name"),
])
def test_sweep_names_are_names(tmp_path, name, fragment):
    root, env = project(tmp_path, epochs=2)
    r = cli("search", *search_args(root, name), cwd=root, env=env, timeout=300)
    assert_clear_error(r, fragment, "--name")
    assert not (tmp_path / "escaped").exists() and not (root / "mlruns.db").exists()


def test_the_lease_names_its_holder_and_a_dead_holder_frees_it(tmp_path):
    from raysweep.errors import UserError
    from raysweep.sweep import lease

    sweep = str(tmp_path / "runs" / "s")
    os.makedirs(sweep)  # a sweep folder that exists keeps its lease file
    with lease.hold(sweep) as held:
        code = ("from raysweep.sweep import lease\n"
                f"with lease.hold({sweep!r}): pass\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 1 and f"pid {held['pid']}" in r.stderr
        with pytest.raises(UserError, match="being written by another"):
            with lease.hold(sweep):
                pass
    with lease.hold(sweep):  # released with its holder
        pass
    dead = {"host": held["host"], "pid": 2 ** 22 + 7, "renewed": time.time()}
    assert lease.stale(dead) and not lease.stale({**dead, "pid": os.getpid()})
    assert lease.stale({"host": "elsewhere", "pid": 1, "renewed": time.time() - 1e4})
    assert json.loads((tmp_path / "runs" / "s" / lease.LEASE_FILE).read_text())["pid"] \
        == os.getpid()


def test_a_lease_on_a_new_sweep_that_wrote_nothing_leaves_no_folder(tmp_path):
    from raysweep.sweep import lease

    sweep = tmp_path / "runs" / "s"
    with lease.hold(str(sweep)):
        assert (sweep / lease.LEASE_FILE).is_file()
    assert not (tmp_path / "runs").exists(), "a refused sweep leaves nothing on the storage"
    with lease.hold(str(sweep)):
        (sweep / "experiment_state.json").write_text("{}")
    assert (sweep / lease.LEASE_FILE).is_file(), "a sweep that wrote keeps its folder"


def test_an_s3_lease_is_one_writer_and_a_stale_one_is_taken_over(monkeypatch):
    """The S3 lease is a conditional put (If-None-Match: *), so one writer wins the race; a
    lease its holder stopped renewing belongs to a dead driver and is taken over."""
    import boto3
    from moto import mock_aws

    from raysweep.errors import UserError
    from raysweep.sweep import lease

    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="sweeps-25")
        with lease.hold("s3://sweeps-25/runs/a") as held:
            with pytest.raises(UserError, match=f"pid {held['pid']}"):
                with lease.hold("s3://sweeps-25/runs/a"):
                    pass
        with lease.hold("s3://sweeps-25/runs/a"):  # released at the end of the block
            pass
        old = {"host": "gone-host", "pid": 1, "token": "t", "started": 0, "renewed": 0}
        s3.put_object(Bucket="sweeps-25", Key=f"runs/b/{lease.LEASE_FILE}",
                      Body=json.dumps(old).encode())
        with lease.hold("s3://sweeps-25/runs/b") as taken:
            body = s3.get_object(Bucket="sweeps-25", Key=f"runs/b/{lease.LEASE_FILE}")["Body"]
            assert json.loads(body.read())["token"] == taken["token"]


@pytest.mark.parametrize("line, fragment", [('FIXED = ["epochs", 2]', "FIXED = ['epochs', 2]"),
                                            ('NUM_SAMPLES = "8"', "is not an int")])
def test_a_space_constant_of_the_wrong_type_is_one_paragraph(tmp_path, line, fragment):
    (tmp_path / "bad.py").write_text(f'"""Bad study. Scientific: lr."""\n{line}\n'
                                     "def define_by_run(trial):\n"
                                     '    return {"lr": trial.suggest_float("lr", 1e-3, 1e-2)}\n')
    r = cli("search", "--space", "bad.py", "--storage", tmp_path / "runs", "--name", "b",
            cwd=tmp_path, timeout=300)
    assert_clear_error(r, fragment, "bad.py")


def test_a_mistyped_sweep_record_is_one_paragraph(tmp_path):
    from raysweep.sweep.spec import SPEC_FILE, EarlyStopping, Resources, SweepSpec, Tracking

    spec = SweepSpec("s", str(tmp_path / "runs"), "quickstart", "quickstart", "synthetic default",
                     (), 0, 2, 2, "val_de00_mean", "min", "tpe", False, 1,
                     Resources(1, 1.0, None, None), EarlyStopping(True, 1, 3),
                     Tracking("sqlite:///m.db", "quickstart"))
    raw = {**json.loads(spec.to_json()), "num_samples": "two"}
    (tmp_path / "runs" / "s").mkdir(parents=True)
    (tmp_path / "runs" / "s" / SPEC_FILE).write_text(json.dumps(raw))
    r = cli("search", "--resume", "--name", "s", "--storage", tmp_path / "runs", cwd=tmp_path,
            timeout=300)
    assert_clear_error(r, "mistypes num_samples='two'")


def test_a_quote_in_the_space_file_or_folder_makes_a_valid_default_name(tmp_path):
    from raysweep.sweep.resolve import check_name, resolve
    from raysweep.sweep.spec import Request

    folder = tmp_path / "it's here"
    root, _ = project(folder, epochs=2)
    (root / "tab.py").rename(root / "o'brien.py")
    spec, _ = resolve(Request(space=str(root / "o'brien.py"), data=str(root / "data"),
                              storage=str(root / "runs")))
    check_name(spec.name)
    assert spec.name.startswith("o_brien-") and spec.path == f"{root / 'runs'}/{spec.name}"


def test_an_interrupted_trial_is_closed_killed_by_the_reconciler():
    """Tune's clean-up after Ctrl-C marks running trials TERMINATED before the tracking
    callback's end-of-sweep reconciliation: only `done` tells a finished trial from a stopped
    one, and the stopped one's run must not be closed FINISHED."""
    from types import SimpleNamespace

    from raysweep.config import DIVERGED
    from raysweep.tracking.reconcile import terminal_status

    def trial(status, **last):
        return SimpleNamespace(status=status, last_result=last, config={"epochs": 4})

    assert terminal_status(trial("TERMINATED", done=False, training_iteration=2)) == "KILLED"
    # restored by --resume: Tune did not save `done` for a trial that ended on its own
    assert terminal_status(trial("TERMINATED", done=False, training_iteration=4)) == "FINISHED"
    assert terminal_status(trial("TERMINATED", done=True)) == "FINISHED"
    assert terminal_status(trial("TERMINATED")) == "FINISHED"  # no result: as before
    assert terminal_status(trial("ERROR", done=False)) == "FAILED"
    assert terminal_status(trial("RUNNING", done=False)) is None
    # diverged weights end a trial with a result saying so, not an error Tune would retry
    why = {DIVERGED: "NonFiniteLoss: non-finite training loss at epoch 2, batch 0"}
    for done in (True, False):
        assert terminal_status(trial("TERMINATED", done=done, training_iteration=2,
                                     **why)) == "FAILED"


def test_the_table_tells_interrupted_from_finished_trials():
    """A trial restored by --resume may say done=False (Tune does not save it for a trial that
    ended on its own): only a sweep that was interrupted asks, and a trial that ran all its
    epochs finished."""
    from types import SimpleNamespace

    from raysweep.sweep import results

    def trial(tid, epochs, done):
        hist = pd.DataFrame({"training_iteration": range(1, epochs + 1),
                             "epoch": range(1, epochs + 1), "val_de00_mean": [5.0] * epochs})
        return SimpleNamespace(config={"epochs": 4}, error=None, metrics_dataframe=hist,
                               metrics={"done": done}, path=f"/x/trial_{tid}", checkpoint=None)

    grid = [trial("ran_all", 4, False), trial("stopped", 2, False), trial("asha", 2, True)]
    calm = results.table(grid, "val_de00_mean", "min", 4, []).set_index("trial_id")
    assert (calm["status"] == "FINISHED").all()
    cut = results.table(grid, "val_de00_mean", "min", 4, [], interrupted=True
                        ).set_index("trial_id")
    assert cut["status"].to_dict() == {"ran_all": "FINISHED", "stopped": "INTERRUPTED",
                                       "asha": "FINISHED"}
    assert cut["stopped_early"].to_dict() == {"ran_all": False, "stopped": False, "asha": True}
