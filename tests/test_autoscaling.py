"""A sweep on a Ray cluster that scales from zero, as the shipped cluster configs build it.

A real head (`ray start --head --autoscaling-config`, 0 CPU, 0 GPU) whose autoscaler launches
worker nodes from 0 through Ray's fake multi-node provider: real raylets on 127.0.0.1 with fake
GPU resources (the trials train on the CPU). The sweep asks for half a GPU per trial; at submit
time the cluster has no GPU at all. Checked: the plan trusts the flag and says why, the
autoscaler adds at least two worker nodes, every trial runs there (the head has no CPU, so no
trial could run anywhere else) and the sweep finishes.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.servers import autoscaling_ray

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[1]
# Two trials fit a node (2 CPU, 1 GPU; a trial takes 1 CPU + 0.5 GPU): 4 at once need 2 nodes.
WORKERS = {"gpu": {"resources": {"CPU": 2, "GPU": 1, "object_store_memory": 100 * 2**20},
                   "max_workers": 3}}
TRIALS = 4


def test_sweep_scales_a_cluster_up_from_zero(tmp_path):
    from raysweep.sweep.data import smoke_dataset

    # generated (or found cached) here, not inside the timed sweep
    data = os.environ.get("RAYSWEEP_TEST_DATA") or smoke_dataset()
    # A short private temp dir: Ray's socket paths must stay under 107 bytes.
    tmp = Path(f"/tmp/rs-as-{os.getpid()}")
    tmp.mkdir(exist_ok=True)
    token = secrets.token_hex(32)
    with autoscaling_ray(tmp, WORKERS, token) as cluster:
        # Every fake node is this machine, so this folder really is shared: say so.
        shared = tmp_path / "shared"
        env = {**cluster["env"], "RAY_ADDRESS": cluster["address"],
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
               "RAYSWEEP_SHARED_STORAGE": str(shared), "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [sys.executable, "-m", "raysweep.search", "--space", "quickstart", "--smoke-test",
             "--data", str(data), "--num-samples", str(TRIALS), "--gpus-per-trial", "0.5",
             # The GPUs are fake: a trial given one trains on the CPU only when told (#23).
             "--set", "device=cpu",
             "--storage", str(shared), "--name", "from-zero"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        log = out.stdout + out.stderr
        assert out.returncode == 0, log[-5000:]
        assert f"planned {TRIALS} trial(s) at once" in log, log[-3000:]
        # Why it may grow: the autoscaler's report, or (before its first report) the CPU-less head.
        assert "0.5 GPU" in log and ("the autoscaler can launch gpu" in log
                                     or "no CPU and no GPU yet" in log), log[-3000:]
        assert "asked the autoscaler for the first wave: 4 bundle(s)" in log, log[-3000:]
        assert f"{TRIALS} trials (" in log and "0 failed" in log, log[-3000:]

        # What the autoscaler did, in its own event lines (streamed to the driver's output):
        # the cluster's size after each change. Each worker node has 1 GPU.
        sizes = [(float(c), float(g)) for c, g in
                 re.findall(r"Resized to ([0-9.]+) CPUs(?:, ([0-9.]+) GPUs)?", log) if g]
        events = "\n".join(ln for ln in log.splitlines() if "(autoscaler" in ln)
        assert sizes and max(g for _, g in sizes) >= 2, events[-4000:]
        # The head offers no CPU, so every trial (1 CPU each) ran on an added worker node.
        table = pd.read_csv(shared / "from-zero" / "results.csv")
        assert len(table) == TRIALS and set(table["status"]) == {"FINISHED"}, table
        assert (shared / "from-zero" / "results.csv").is_file()
