"""A real two-node Ray cluster on this machine runs a submitted sweep end to end.

Two `ray start` nodes on 127.0.0.1 with their own ports and temp dirs (token auth on, as on a
real cluster), the second with a custom resource `node2`, and an MLflow server with basic auth.
The sweep is submitted with `ray job submit --working-dir`, exactly as infra/README.md tells
users; the MLflow credentials reach the driver only through the head node's environment, as the
cluster configs arrange. Checked: a node-local --storage is refused on the two-node cluster,
the trials ran on both nodes (Ray's state API), and every trial's run arrived in MLflow over HTTP.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.servers import (
    BIN,
    START_TIMEOUT_S,
    basic_auth,
    create_mlflow_user,
    free_ports,
    get_json,
    kill_pids,
    mlflow_auth_server,
    pids_mentioning,
    stop_group,
    wait_until,
)

# A hang (a node that never joins) must fail the test, not the CI run.
pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
# Ray swaps a loopback --node-ip-address / --address for the machine's routable address (so that
# other hosts can reach the node). Here both "hosts" are this machine and only loopback traffic
# is allowed, so the head runs with Ray's switch for single-host clusters, and the second node's
# `ray start` keeps 127.0.0.1 as given; its children inherit the loopback setting.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
WORKER_START = """
import sys
from ray._private import ray_constants, services
services.resolve_ip_for_localhost = lambda host: host
ray_constants.ENABLE_RAY_CLUSTER = True
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())
"""
TRIALS = 4
SWEEP = "multinode"


def node_ports(n_ports: int = 7) -> list[str]:
    names = ["dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port"]
    return [f"--{k}={p}" for k, p in zip(names, free_ports(n_ports))]


def ray_cli(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    with mlflow_auth_server(root) as (url, admin_pw):
        sweep_pw = "sweep-pw-" + secrets.token_hex(8)
        create_mlflow_user(url, admin_pw, "raysweep", sweep_pw)
        yield url, admin_pw, sweep_pw


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, mlflow_server):
    tmp = tmp_path_factory.mktemp("ray")
    # Ray's own temp dir short: its socket paths must stay under AF_UNIX's 107 bytes, which a
    # pytest temp path (longer under pytest-xdist: .../popen-gw0/...) does not leave room for.
    ray_tmp = Path(f"/tmp/rs-mn-{os.getpid()}")
    url, admin_pw, sweep_pw = mlflow_server
    token = secrets.token_hex(32)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_", "RAY_ADDRESS", "RAYSWEEP_"))}
    env = {**base, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    # The head's environment carries the MLflow login, like `. ~/raysweep.env` in the configs;
    # the submitting client's environment (env) does not.
    head_env = {**env, **LOOPBACK, "MLFLOW_TRACKING_URI": url,
                "MLFLOW_TRACKING_USERNAME": "raysweep", "MLFLOW_TRACKING_PASSWORD": sweep_pw}
    gcs, dash, client = free_ports(3)
    procs: list[subprocess.Popen] = []
    try:
        head_log = tmp / "head.log"
        procs.append(subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             f"--ray-client-server-port={client}", "--min-worker-port=0", "--max-worker-port=0",
             *node_ports(), "--num-cpus=1", f"--temp-dir={ray_tmp}/head", "--disable-usage-stats"],
            env=head_env, stdout=open(head_log, "w"), stderr=subprocess.STDOUT,
            start_new_session=True))
        address = f"http://127.0.0.1:{dash}"
        auth = {"Authorization": f"Bearer {token}"}
        wait_until(lambda: bool(get_json(f"{address}/api/version", headers=auth)), START_TIMEOUT_S,
                   "ray head", alive=lambda: None if procs[0].poll() is None
                   else head_log.read_text()[-3000:])
        node2_log = tmp / "node2.log"
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER_START, "start", f"--address=127.0.0.1:{gcs}",
             "--block", "--min-worker-port=0", "--max-worker-port=0", *node_ports(),
             "--num-cpus=1", '--resources={"node2": 1}', f"--temp-dir={ray_tmp}/node2",
             "--disable-usage-stats"],
            env={**env, **LOOPBACK}, stdout=open(node2_log, "w"), stderr=subprocess.STDOUT,
            start_new_session=True))

        def nodes() -> list[dict]:
            out = ray_cli(["list", "nodes", f"--address={address}", "--format=json"], env)
            try:
                return json.loads(out.stdout) if out.returncode == 0 else []
            except json.JSONDecodeError:  # "No resource in the cluster" while the head starts
                return []

        wait_until(lambda: sum(n["state"] == "ALIVE" for n in nodes()) == 2, START_TIMEOUT_S,
                   "node2",
                   alive=lambda: None if procs[1].poll() is None
                   else node2_log.read_text()[-3000:])
        alive = [n for n in nodes() if n["state"] == "ALIVE"]
        assert {n["node_ip"] for n in alive} == {"127.0.0.1"}, "everything stays on loopback"
        head_id = next(n["node_id"] for n in alive if n["is_head_node"])
        node2_id = next(n["node_id"] for n in alive if "node2" in n["resources_total"])
        assert head_id != node2_id
        yield {"address": address, "env": env, "tmp": tmp, "head": head_id, "node2": node2_id,
               "mlflow": url, "admin_pw": admin_pw, "sweep_pw": sweep_pw}
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        kill_pids(pids_mentioning(str(ray_tmp)))  # anything that escaped its process group
        shutil.rmtree(ray_tmp, ignore_errors=True)


def submit(cluster: dict, args: list[str], runtime_env: dict | None = None,
           timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = ["job", "submit", f"--address={cluster['address']}", f"--working-dir={ROOT}"]
    if runtime_env:
        cmd.append(f"--runtime-env-json={json.dumps(runtime_env)}")
    # The head's job agent comes up some time after the node does (much later on a loaded
    # machine): resubmit until it takes the job, against a generous deadline.
    deadline = time.monotonic() + 300
    while True:
        out = ray_cli([*cmd, "--", "python", "-m", "raysweep.search", *args], cluster["env"],
                      timeout=timeout)
        if "No available agent" not in out.stdout + out.stderr or time.monotonic() > deadline:
            return out
        time.sleep(5)


def test_node_local_storage_is_refused(two_nodes):
    storage = two_nodes["tmp"] / "local-storage"
    out = submit(two_nodes, ["--space", "quickstart", "--smoke-test", "--name", "refused",
                             "--storage", str(storage)], timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-3000:]
    assert "checkpoints must live on shared storage" in log, log[-3000:]
    assert "2 alive nodes" in log and "RAYSWEEP_SHARED_STORAGE" in log


def test_sweep_runs_on_both_nodes_and_logs_to_mlflow_over_http(two_nodes):
    # Both "hosts" are this machine, so this folder really is shared: say so, as a user with
    # an NFS mount would.
    storage = two_nodes["tmp"] / "shared-storage"
    out = submit(two_nodes, ["--space", "quickstart", "--smoke-test", "--num-samples",
                             str(TRIALS), "--max-concurrent", "2", "--name", SWEEP,
                             "--storage", str(storage)],
                 runtime_env={"env_vars": {"RAYSWEEP_SHARED_STORAGE": str(storage)}})
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-5000:]
    assert (storage / SWEEP / "results.csv").is_file()

    # Where the trials ran: Ray's state API, over the dashboard's HTTP with the token.
    listed = ray_cli(["list", "actors", f"--address={two_nodes['address']}", "--detail",
                      "--format=json", "--limit=10000"], two_nodes["env"])
    assert listed.returncode == 0, listed.stderr[-2000:]
    actors = json.loads(listed.stdout)
    trial_nodes = Counter(a["node_id"] for a in actors
                          if "run_trial" in a["class_name"] or "ImplicitFunc" in a["class_name"])
    classes = sorted({a["class_name"] for a in actors})
    print("trial actors per node:", {("head" if k == two_nodes["head"] else "node2"
                                      if k == two_nodes["node2"] else k): v
                                     for k, v in trial_nodes.items()}, "classes:", classes)
    assert trial_nodes[two_nodes["head"]] >= 1, (trial_nodes, classes)
    assert trial_nodes[two_nodes["node2"]] >= 1, (trial_nodes, classes)

    # What MLflow received, read back over HTTP as another client would.
    mlflow, auth = two_nodes["mlflow"], basic_auth("admin", two_nodes["admin_pw"])
    exp = get_json(f"{mlflow}/api/2.0/mlflow/experiments/get-by-name?experiment_name=quickstart",
                   headers=auth)["experiment"]
    runs = []
    token = None
    while True:
        body = {"experiment_ids": [exp["experiment_id"]], "max_results": 1000,
                **({"page_token": token} if token else {})}
        page = post_json_auth(f"{mlflow}/api/2.0/mlflow/runs/search", body, auth)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            break

    def tags(run: dict) -> dict:
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    parents = [r for r in runs if tags(r).get("raysweep.sweep_name") == SWEEP
               and "mlflow.parentRunId" not in tags(r)]
    assert len(parents) == 1, [tags(r) for r in runs]
    parent = parents[0]
    assert parent["info"]["status"] == "FINISHED"
    children = [r for r in runs
                if tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    assert len(children) == TRIALS
    for child in children:
        metrics = {m["key"] for m in child["data"].get("metrics", [])}
        # What to read when a run arrives empty (once in a clean-clone CI under two workers):
        # the run's own record and the driver's MLflow warnings.
        said = [ln for ln in log.splitlines() if "MLflow" in ln or "mlflow" in ln]
        assert "val_de00_mean" in metrics, (metrics, child["info"], tags(child), said[-40:])
        assert tags(child).get("backbone") and tags(child).get("raysweep.trial_id")
        params = {p["key"]: p["value"] for p in child["data"].get("params", [])}
        assert all(two_nodes["sweep_pw"] not in v for v in params.values())
    # The driver authenticated as the user from the head's environment: the auth app made that
    # user the manager of the experiment it created.
    perm = get_json(f"{mlflow}/api/3.0/mlflow/users/permissions/get?username=raysweep"
                    f"&resource_type=experiment&resource_id={exp['experiment_id']}", headers=auth)
    assert perm["permission"] == "MANAGE", perm  # everyone else has the default, READ


def post_json_auth(url: str, body: dict, headers: dict) -> dict:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read().decode())
