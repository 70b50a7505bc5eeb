"""`ray job submit ... python -m raysweep.search --space quickstart --smoke-test` against a real
head node that this test starts on loopback (and stops), in its own temp dir and ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.servers import free_ports

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    return str(found) if found.exists() else shutil.which("ray")


def test_job_submit_smoke_test(tmp_path):
    # A short temp dir: Ray's socket paths must stay under the 107-byte limit.
    temp = Path(os.environ.get("RAYSWEEP_TEST_RAY_TMP", f"/tmp/rs-{os.getpid()}"))
    port, dash = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("RAY_ADDRESS", None)
    start = [ray_cli(), "start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", "--num-cpus=8", "--node-ip-address=127.0.0.1",
             f"--temp-dir={temp}", "--include-dashboard=true", "--disable-usage-stats",
             # its own agent ports: the session's Ray (tests/conftest.py) holds the defaults, and
             # a head whose job agent cannot bind them never takes a job
             *(f"--{name}={p}" for name, p in zip(
                 ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                  "metrics-export-port", "runtime-env-agent-port"), free_ports(4)))]
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, text=True, timeout=180)
        submit = (
            [ray_cli(), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
             "--working-dir", ".",
             "--runtime-env-json", json.dumps({"env_vars": {
                 "MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"], "PYTHONPATH": "."}}),
             "--", sys.executable, "-m", "raysweep.search", "--space", "quickstart",
             "--smoke-test", "--storage", str(tmp_path / "runs"), "--name", "job-smoke"])
        # The head's job agent comes up some time after `ray start` returns (much later on a
        # loaded machine): poll for it against a generous deadline.
        deadline = time.monotonic() + 300
        while True:
            job = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=900)
            out = job.stdout + job.stderr
            if "No available agent" not in out or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert job.returncode == 0, out[-4000:]
        assert "MLflow parent run:" in out and "2 trials" in out, out[-4000:]
        assert (tmp_path / "runs" / "job-smoke" / "results.csv").exists()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        exp = client.get_experiment_by_name("quickstart")
        runs = client.search_runs([exp.experiment_id])
        assert sum(r.data.tags.get("raysweep.role") == "trial" for r in runs) == 2
        parent = next(r for r in runs if r.data.tags.get("raysweep.role") == "sweep")
        assert parent.data.tags["raysweep.cluster_cpus"] == "8"  # it joined our head node
    finally:
        stop_head(temp)


def stop_head(temp: Path) -> None:
    """`ray stop`, but only for the head this test started: `ray stop` itself would end every
    Ray on the machine, other people's too. Our processes all name our temp dir."""
    import signal

    def ours() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if str(temp).encode() in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids

    # The head's gcs_server, raylet and autoscaler monitor outlive a SIGTERM by 20 s and more
    # (seen with Ray 2.60), so a long grace only delays the SIGKILL that ends them anyway.
    for sig, grace_s in ((signal.SIGTERM, 3), (signal.SIGKILL, 15)):
        for pid in ours():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        while ours() and time.time() < deadline:
            time.sleep(0.5)
    shutil.rmtree(temp, ignore_errors=True)
