"""#23 3(c): on an autoscaling cluster (Ray's fake node provider, as in test_autoscaling.py) a
sweep scales the GPU group from zero to its maximum and back to zero, and leaves no standing
autoscaler request: after a normal end, and 60 s after its driver was killed with SIGKILL while
the first-wave request stood (the head-node watchdog clears it).

A monitor process joins the cluster and samples, every 0.5 s, the alive worker nodes and the
autoscaler's standing request (`_compat.standing_request`); the assertions read its samples.
The timings it prints are from this shared 2-core machine: not targets, only what was seen.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers.servers import autoscaling_ray, stop_group

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[1]
GROUP = {"CPU": 2, "GPU": 1, "raysweep_group_gpu": 1}  # two 0.5-GPU trials per node
MAX_WORKERS = 2
WORKERS = {"gpu": {"resources": {**GROUP, "object_store_memory": 100 * 2**20},
                   "max_workers": MAX_WORKERS}}
IDLE_MINUTES = 0.1  # idle nodes go after 6 s, so "back to zero" is seen in a test's time

MONITOR = textwrap.dedent("""
    import json, os, sys, time
    import ray
    from raysweep import _compat
    ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
    out = open(sys.argv[2], "a", buffering=1)
    while not os.path.exists(sys.argv[3]):
        workers = sum(1 for n in ray.nodes() if n["Alive"]
                      and "node:__internal_head__" not in n["Resources"])
        out.write(json.dumps({"t": time.time(), "workers": workers,
                              "request": len(_compat.standing_request())}) + "\\n")
        time.sleep(0.5)
""")


def samples(path: Path, since: float = 0.0) -> list[dict]:
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in rows if r["t"] >= since]


def wait_for_sample(path: Path, check, since: float, timeout_s: float) -> dict | None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        hit = next((r for r in samples(path, since) if check(r)), None)
        if hit:
            return hit
        time.sleep(1)
    return None


def settles_at_zero(path: Path, since: float, hold_s: float, timeout_s: float) -> float | None:
    """The time from which every sample (for at least `hold_s`, all of them since) shows zero
    workers; None when that does not happen within `timeout_s` after `since`."""
    deadline = since + timeout_s
    while time.time() < deadline:
        rows = samples(path, since)
        busy = [r["t"] for r in rows if r["workers"]]
        zero_from = max(busy, default=since)
        if rows and rows[-1]["t"] - zero_from >= hold_s:
            return zero_from
        time.sleep(2)
    return None


def search(env: dict, cwd: Path, shared: Path, name: str, trials: int) -> list[str]:
    from raysweep.sweep.data import smoke_dataset

    data = os.environ.get("RAYSWEEP_TEST_DATA") or smoke_dataset()
    return [sys.executable, "-m", "raysweep.search", "--space", "quickstart", "--smoke-test",
            "--data", str(data), "--num-samples", str(trials), "--gpus-per-trial", "0.5",
            # the GPUs are fake: train on the CPU on purpose
            "--set", "device=cpu", "--storage", str(shared), "--name", name]


def test_cluster_goes_zero_to_max_to_zero_and_no_request_outlives_the_driver(tmp_path):
    tmp = Path(f"/tmp/rs-ac-{os.getpid()}")  # Ray's socket paths must stay short
    tmp.mkdir(exist_ok=True)
    with autoscaling_ray(tmp, WORKERS, secrets.token_hex(32), idle_minutes=IDLE_MINUTES) as c:
        shared = tmp_path / "shared"
        env = {**c["env"], "RAY_ADDRESS": c["address"], "PYTHONPATH": str(ROOT),
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
               "RAYSWEEP_SHARED_STORAGE": str(shared),
               "RAYSWEEP_NODE_GROUPS": json.dumps({"gpu": {"max_workers": MAX_WORKERS,
                                                           "resources": GROUP}})}
        trace, stop = tmp_path / "monitor.jsonl", tmp_path / "monitor.stop"
        monitor = subprocess.Popen([sys.executable, "-c", MONITOR, c["address"], str(trace),
                                    str(stop)], env=env, cwd=ROOT, start_new_session=True)
        try:
            normal_end(env, tmp_path, shared, trace)
            killed_driver(env, tmp_path, shared, trace, c["temp"])
        finally:
            stop.touch()
            stop_group(monitor)


def normal_end(env: dict, cwd: Path, shared: Path, trace: Path) -> None:
    start = time.time()
    out = subprocess.run(search(env, cwd, shared, "cost-normal", 2 * MAX_WORKERS), cwd=cwd,
                         env=env, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    ended = time.time()
    assert out.returncode == 0, log[-5000:]
    assert "trials pinned by raysweep_group_gpu" in log, log[-3000:]
    assert "withdrew the first-wave request to the autoscaler: the first wave runs" in log, \
        log[-3000:]
    during = samples(trace, start)
    assert max(r["workers"] for r in during) == MAX_WORKERS, during[-20:]  # zero to max
    assert during[0]["workers"] == 0
    assert [r for r in samples(trace, ended + 1) if r["request"]] == [], "request after the end"
    last_busy = max(r["t"] for r in during if r["workers"])
    zero = settles_at_zero(trace, start, hold_s=30, timeout_s=(ended - start) + 300)
    assert zero, f"the cluster did not return to zero workers: {samples(trace, ended)[-5:]}"
    print(f"normal end: sweep {ended - start:.0f} s, 0 -> {MAX_WORKERS} -> 0 workers (the last "
          f"worker gone {last_busy - ended:+.0f} s from the driver's exit), no request after "
          "the end")


def killed_driver(env: dict, cwd: Path, shared: Path, trace: Path, ray_temp: Path) -> None:
    proc = subprocess.Popen(search(env, cwd, shared, "cost-killed", 6 * MAX_WORKERS), cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in proc.stdout:  # kill it while the first-wave request stands
            seen.append(line)
            if "asked the autoscaler for the first wave" in line:
                break
        else:
            pytest.fail("the driver never asked for its first wave:\n" + "".join(seen[-60:]))
        stood = wait_for_sample(trace, lambda r: r["request"] > 0, time.time() - 5, 30)
        proc.kill()  # SIGKILL: no handler, no finally
        killed = time.time()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert stood, "the request was not standing when the driver was killed: nothing tested"
    cleared = wait_for_sample(trace, lambda r: r["request"] == 0, killed, 60)
    assert cleared, f"a request outlived the killed driver: {samples(trace, killed)[-5:]}"
    time.sleep(max(0.0, killed + 60 - time.time()))
    later = samples(trace, killed + 59)
    assert later and all(r["request"] == 0 for r in later), later[:5]
    # Zero workers, and staying there: a leftover request would have had nodes launched.
    zero = settles_at_zero(trace, killed, hold_s=30, timeout_s=300)
    assert zero, f"workers stayed after the killed driver: {samples(trace, killed)[-5:]}"
    most = max(r["workers"] for r in samples(trace, killed))
    logs = "".join(p.read_text(errors="replace") for p in ray_temp.rglob("worker-*.err"))
    assert "withdrew its autoscaler request" in logs, "the watchdog did not clear it"
    print(f"killed driver: request cleared {cleared['t'] - killed:.1f} s after SIGKILL, none "
          f"60 s later; at most {most} worker(s) after the kill, zero from "
          f"{zero - killed:+.0f} s on")
