"""Start and stop the outside processes of the slow tests: an MLflow server and `ray start` nodes.

Every process starts in its own session (process group) and is stopped by that group id; Ray's
daemons are also found by the private temp dir they were given, so a test never stops anything
it did not start (no `ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
# How long a server or node may take to come up: generous, because on a loaded 2-core machine
# (two pytest workers beside other jobs) an MLflow auth server took over 120 s. Each test's own
# timeout still bounds the wait.
START_TIMEOUT_S = 600
# MLflow 3's server starts a job runner with about ten Huey consumer processes (each importing
# MLflow: ~240 MB and seconds of CPU) for GenAI jobs that raysweep never submits; the test
# servers run without it.
NO_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together so they cannot repeat)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               alive: Callable[[], str | None] = lambda: None) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        dead = alive()
        if dead:
            raise RuntimeError(f"{what}: process exited early\n{dead}")
        if time.time() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.5)


def get_json(url: str, timeout: float = 10, headers: dict | None = None) -> dict:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def post_json(url: str, body: dict, timeout: float = 10) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except urllib.error.URLError:
        return False


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the process group of `proc`, then SIGKILL what is left after `grace` seconds."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def pids_mentioning(marker: str) -> list[int]:
    """Our own processes whose command line contains `marker` (a private temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            found.append(int(entry.name))
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def mlflow_server(root: Path, env: dict | None = None,
                  artifacts: str | None = None) -> Iterator[str]:
    """A plain `mlflow server` with a SQLite store on a free loopback port; yields its URL.
    `artifacts`: where it keeps artifacts (default a folder under root; e.g. s3://...)."""
    port = free_port()
    log = open(root / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", artifacts or str(root / "mlartifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=root, env={**os.environ, **NO_JOBS, **(env or {})}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/health"), START_TIMEOUT_S, "mlflow server",
                   alive=lambda: None if proc.poll() is None else
                   (root / "mlflow-server.log").read_text()[-3000:])
        yield url
    finally:
        stop_group(proc)
        log.close()


def basic_auth(user: str, password: str) -> dict:
    from base64 import b64encode

    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


@contextmanager
def mlflow_auth_server(root: Path) -> Iterator[tuple[str, str]]:
    """infra/mlflow/start-server.sh (basic auth on) with SQLite stores on a free loopback port;
    yields (url, admin password)."""
    script = Path(__file__).resolve().parents[2] / "infra" / "mlflow" / "start-server.sh"
    port, admin_pw = free_port(), "adm-" + os.urandom(8).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"PATH": f"{BIN}:{os.environ['PATH']}",
                "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{root}/runs.db",
                "MLFLOW_ARTIFACTS_DESTINATION": str(root / "artifacts"),
                "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root}/auth.db",
                "MLFLOW_AUTH_ADMIN_PASSWORD": admin_pw,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
                "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1",
                **NO_JOBS})
    log_path = root / "mlflow-auth-server.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(["sh", str(script)], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def dead() -> str | None:
            return None if proc.poll() is None else log_path.read_text()[-3000:]

        wait_until(lambda: http_ok(f"{url}/health"), START_TIMEOUT_S, "mlflow auth server",
                   alive=dead)
        # /health answers before the auth app has built its tables: until the API answers the
        # admin, creating a user fails.
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        wait_until(lambda: get_json(search, 30, basic_auth("admin", admin_pw)) is not None,
                   START_TIMEOUT_S, "mlflow auth API", alive=dead)
        yield url, admin_pw
    finally:
        stop_group(proc)
        log.close()


def create_mlflow_user(url: str, admin_pw: str, user: str, password: str) -> None:
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/users/create",
                                 data=json.dumps({"username": user, "password": password}).encode(),
                                 headers={"Content-Type": "application/json",
                                          **basic_auth("admin", admin_pw)})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
    except urllib.error.HTTPError as e:
        raise AssertionError(f"creating MLflow user {user!r}: {e.code} {e.read()[:500]!r}") from e


# Ray replaces a loopback address by the machine's routable one unless it is told that the
# cluster is single-host; every process of these tests' clusters stays on 127.0.0.1.
LOOPBACK_RAY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def autoscaling_config(gcs_port: int, worker_types: dict, idle_minutes: float = 5) -> dict:
    """A cluster launcher config for Ray's fake multi-node provider: the autoscaler starts and
    stops worker nodes as local raylets (real Ray processes) instead of cloud instances.
    Ray's own `AutoscalingCluster` does this too, but it runs `ray stop --force` (every Ray
    on the machine) and reads a template that the Ray 2.60.0 wheel does not ship."""
    return {
        "cluster_name": "raysweep-autoscaling-test", "max_workers": sum(
            t["max_workers"] for t in worker_types.values()),
        "upscaling_speed": 10.0, "idle_timeout_minutes": idle_minutes,
        # All nodes share 127.0.0.1, so the autoscaler must tell them apart by node id.
        # No SSH updaters: the provider starts each raylet itself, already set up.
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{gcs_port}",
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {"ssh_user": "ray"},
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
            **{name: {"node_config": {}, "min_workers": 0, **t}
               for name, t in worker_types.items()}},
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


@contextmanager
def autoscaling_ray(tmp: Path, worker_types: dict, token: str,
                    idle_minutes: float = 5) -> Iterator[dict]:
    """A head with 0 CPU / 0 GPU whose autoscaler adds `worker_types` nodes from 0; yields
    {"address", "env"}: the environment a driver needs to join it. Stops every process it
    started (the head's group, then anything that names the private temp dir) and removes that
    dir (a short path under /tmp, outside pytest's own clean-up)."""
    gcs, = free_ports(1)
    config = tmp / "autoscaling.json"
    config.write_text(json.dumps(autoscaling_config(gcs, worker_types, idle_minutes)))
    env = {**os.environ, **LOOPBACK_RAY, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "RAY_USAGE_STATS_ENABLED": "0"}
    for key in ("RAY_ADDRESS", "RAYSWEEP_NODE_GROUPS"):
        env.pop(key, None)
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    # The fake provider knows the head by this id (Ray 2.60.0's own test setup does the same).
    head_env = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}
    log_path = tmp / "head.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}",
         f"--autoscaling-config={config}", "--num-cpus=0", "--num-gpus=0",
         "--object-store-memory=200000000", f"--temp-dir={tmp}/ray",
         "--include-dashboard=false", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
         "--min-worker-port=0", "--max-worker-port=0"],
        env=head_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "Ray runtime started" in log_path.read_text(), START_TIMEOUT_S,
                   "ray head",
                   alive=lambda: None if proc.poll() is None else log_path.read_text()[-3000:])
        yield {"address": f"127.0.0.1:{gcs}", "env": env, "temp": tmp / "ray"}
    finally:
        stop_group(proc)
        kill_pids(pids_mentioning(str(tmp)))  # the worker raylets the autoscaler started
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def moto_s3(root: Path, bucket: str = "raysweep-test") -> Iterator[dict]:
    """An S3-compatible server (moto) on a free loopback port with one bucket; yields the
    environment variables that point boto3, pyarrow (Ray Tune) and MLflow at it."""
    port = free_port()
    log_path = root / "moto.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url,
           "MLFLOW_S3_ENDPOINT_URL": url}
    try:
        wait_until(lambda: http_ok(f"{url}/moto-api/"), START_TIMEOUT_S, "moto server",
                   alive=lambda: None if proc.poll() is None else log_path.read_text()[-3000:])
        import boto3

        boto3.client("s3", endpoint_url=url, aws_access_key_id="testing",
                     aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        yield env
    finally:
        stop_group(proc)
        log.close()
