"""What the scale benchmarks share: a trial that only reports, a real MLflow server, the waits.

`fake_loop` stands in for raysweep's training loop (the `loop=` of `run_sweep`): it sleeps for
its "epoch" and reports what the real loop reports (the epoch, the validation metrics, a small
checkpoint when validation improved), and it times every `tune.report`: the time a trial
waited for the driver to take its result. Bare Tune runs the same function through
`bare_trial`, so both sides pay the same for the trial itself.
Nothing here imports torch: a trial process stays small, so 64 of them fit next to the rest.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

# Read by the trial processes (local Ray workers inherit the driver's environment).
EPOCH_S_ENV, WAITS_ENV = "RAYSWEEP_SIM_EPOCH_S", "RAYSWEEP_SIM_WAITS"
# "<folder>:<n>": a trial reports only once n trials have started (throughput is measured
# with all of them reporting; 64 trial processes take minutes to start on a loaded machine)
BARRIER_ENV = "RAYSWEEP_SIM_BARRIER"


def fake_loop(config: dict) -> None:
    """One trial: `epochs` reports, `RAYSWEEP_SIM_EPOCH_S` apart; a checkpoint when improved."""
    from ray import tune

    train = config["train"]
    epochs, pause = int(train["epochs"]), float(os.environ.get(EPOCH_S_ENV, "0.2"))
    lr = float(train.get("lr", 1e-3))
    wait_for_the_others()
    best, waits, ends, start = math.inf, [], [], time.time()
    for epoch in range(1, epochs + 1):
        if pause:
            time.sleep(pause)
        # a made-up score: better near lr 3e-3, improving for 6 epochs, then flat (so that
        # checkpoints come as often as in a real trial: early, then rarely)
        val = 2.0 + abs(math.log10(lr) + 2.5) + 1.0 / min(epoch, 5) + 0.01 * (epoch % 3)
        metrics = {"epoch": epoch, "train_loss": val / 2, "val_de00_mean": val,
                   "val_de00_median": val * 0.9, "val_de00_p95": val * 1.8, "epoch_s": pause,
                   "samples_per_s": 1000.0}
        t0 = time.perf_counter()
        if val < best:
            best = val
            with tempfile.TemporaryDirectory() as tmp:
                write_checkpoint(Path(tmp), train, epoch, metrics)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(metrics)
        waits.append(time.perf_counter() - t0)
        ends.append(time.time())
    out = os.environ.get(WAITS_ENV)
    if out:  # one line per trial; appends of one line this short do not interleave
        with open(out, "a") as fh:
            fh.write(json.dumps({"waits": waits, "ends": ends, "start": start}) + "\n")


def wait_for_the_others(timeout: float = 900.0) -> None:
    spec = os.environ.get(BARRIER_ENV)
    if not spec:
        return
    folder, n = spec.rsplit(":", 1)
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{os.getpid()}-{time.time_ns()}").touch()
    deadline = time.time() + timeout
    while len(os.listdir(folder)) < int(n) and time.time() < deadline:
        time.sleep(0.1)


def write_checkpoint(folder: Path, train: dict, epoch: int, metrics: dict) -> None:
    """The shape of raysweep's checkpoint folder, tiny: weights, metadata, optimizer state."""
    (folder / "model.pt").write_bytes(os.urandom(4096))
    (folder / "train_state.pt").write_bytes(os.urandom(8192))
    (folder / "checkpoint.json").write_text(json.dumps({"train": train, "epoch": epoch,
                                                         "metrics": metrics}))


def bare_trial(config: dict) -> None:
    """Bare Tune's trainable: the same function, given the trial's config as the loop is."""
    fake_loop({"train": config["cfg"]})


def bare_fit(storage: Path, name: str, configs: list[dict], slots: int):
    """Bare Ray Tune on `configs` (`slots` at once): `bare_trial` through a plain Tuner, Tune's
    defaults but for what raysweep also sets, so that the difference is raysweep's own: actor
    reuse (Tune's default starts a process per trial, seconds each on a busy machine), the
    same two result loggers (CSV, JSON; Tune's TensorBoard logger off) and the same quiet
    console. Returns the ResultGrid."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    with own_environ():
        os.environ.update(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_AIR_NEW_OUTPUT="0")
        return tune.Tuner(
            tune.with_resources(bare_trial, {"cpu": 1}),
            param_space={"cfg": tune.grid_search(configs)},
            # short folder names, as raysweep's: Tune's default name spells out the config
            tune_config=tune.TuneConfig(max_concurrent_trials=slots, reuse_actors=True,
                                        trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                      callbacks=[CSVLoggerCallback(), JsonLoggerCallback()]),
        ).fit()


def small_dataset() -> Path:
    """The data handed to the sweep (prepared once, outside the timed part; never read by the
    fake loop, but the sweep prepares and ships it as it would for real trials)."""
    from raysweep.sweep.data import smoke_dataset

    return smoke_dataset()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(NamedTuple):
    url: str
    pgid: int  # its process group: the server and its workers (`group_cpu_s`)


@contextmanager
def mlflow_server(root: Path, workers: int = 1) -> Iterator[Server]:
    """`mlflow server` (this environment's) on 127.0.0.1 and a free port, SQLite behind it,
    as infra/mlflow/start-server.sh runs it (MLflow 3's job runner off: about ten idle worker
    processes that would take CPU from the trials); stops it (its process group) on exit."""
    port = free_port()
    log = open(root / "mlflow-server.log", "w")
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "mlartifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers)],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while not _answers(f"{url}/health"):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("mlflow server did not start:\n" +
                                   (root / "mlflow-server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield Server(url, proc.pid)
    finally:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, 9)
        log.close()


@contextmanager
def own_environ() -> Iterator[None]:
    """os.environ as it was, afterwards: raysweep sets Tune's console variables for the run it
    starts (raysweep.sweep.console), and the other side of a comparison must not inherit them."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of a process group's live processes and the children they
    reaped: what a server started with `start_new_session` has cost so far."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:  # fields: state ppid pgrp ... utime(11) stime cutime cstime
            total += sum(int(f) for f in fields[11:15])
    return total / tick


def machine_cpu_s() -> tuple[float, float]:
    """(busy, all) CPU seconds of every core since boot (/proc/stat): their difference over a
    run says how much of the machine the run left idle."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:8]) - idle) / tick, sum(ticks[:8]) / tick


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]
