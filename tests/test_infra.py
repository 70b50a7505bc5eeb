"""infra/ stays deployable: every file parses, the cluster launcher configs pass the schema of the
installed Ray, the KubeRay manifests carry the fields and versions KubeRay needs, and the code
refuses node-local checkpoints on a multi-node cluster and keeps credentials out of logs."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import mlflow
import pytest
import ray
import yaml

from raysweep.errors import UserError
from raysweep.sweep import storage
from raysweep.tracking import secrets
from tests.helpers.servers import basic_auth, create_mlflow_user, mlflow_auth_server, wait_until

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
LAUNCHER = sorted((INFRA / "ray").glob("*.yaml"))
KUBERAY = sorted((INFRA / "kuberay").glob("*.yaml"))
ALL_YAML = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_infra_has_every_variant():
    names = {p.relative_to(INFRA).as_posix() for p in ALL_YAML}
    assert {"ray/aws.yaml", "ray/onprem.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml",
            "mlflow/docker-compose.yaml"} <= names
    assert (INFRA / "README.md").is_file()


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


# ------------------------------------------------------------------ cluster launcher


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_config_matches_ray_schema(path):
    config = load(path)
    # The file as written: the schema forbids unknown top-level keys, so typos fail here.
    jsonschema.validate(config, json.loads(RAY_SCHEMA.read_text()))
    # And as `ray up` sees it after filling in the provider's defaults (Ray's own yaml test).
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


# AWS nodes run the pinned image instead (tests/test_infra_manifests.py): no install at scale-up.
@pytest.mark.parametrize("path", [p for p in LAUNCHER if p.name != "aws.yaml"],
                         ids=lambda p: p.name)
def test_launcher_installs_project_and_pinned_ray_on_every_node(path):
    config = load(path)
    assert config["file_mounts"]["~/raysweep"] == "."
    assert "~/.ray/auth_token" in config["file_mounts"]
    setup = " ".join(config["setup_commands"])
    assert "-e ~/raysweep" in setup
    pins = re.findall(r"ray\[[^\]]*\]==([0-9.]+)", setup)
    assert pins == [ray.__version__], f"setup_commands must pin ray=={ray.__version__}"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        assert "RAY_AUTH_MODE=token" in start and "ray start" in start
    # The MLflow credentials reach the driver through the head's environment.
    assert ". ~/raysweep.env" in " ".join(config["head_start_ray_commands"])


def test_aws_gpu_workers_autoscale_from_zero_and_storage_is_s3():
    config = load(INFRA / "ray" / "aws.yaml")
    assert config["provider"]["type"] == "aws"
    assert config["idle_timeout_minutes"] > 0
    head_type = config["head_node_type"]
    head = config["available_node_types"][head_type]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    workers = {k: v for k, v in config["available_node_types"].items() if k != head_type}
    assert workers
    for name, node in workers.items():
        assert node["min_workers"] == 0, name
        assert 1 <= node["max_workers"] <= config["max_workers"], name
        assert node["resources"]["GPU"] >= 1, name
        assert "IamInstanceProfile" in node["node_config"], f"{name} needs S3 access"
    assert "--storage s3://" in (INFRA / "ray" / "aws.yaml").read_text()


def test_onprem_lists_machines():
    config = load(INFRA / "ray" / "onprem.yaml")
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"]
    assert len(config["provider"]["worker_ips"]) >= 1


# ------------------------------------------------------------------ KubeRay


def cluster_specs() -> list[tuple[str, dict]]:
    specs = []
    for path in KUBERAY:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "RayCluster":
                specs.append((path.name, doc["spec"]))
            elif doc and doc.get("kind") == "RayJob":
                specs.append((path.name, doc["spec"]["rayClusterSpec"]))
    return specs


def images(spec: dict) -> list[str]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c["image"] for g in groups for c in g["template"]["spec"]["containers"]]


def test_kuberay_manifests_carry_required_fields():
    kinds = {}
    for path in KUBERAY:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("ray.io"):
                assert doc["apiVersion"] == "ray.io/v1", path.name
                assert doc["metadata"]["name"], path.name
                kinds[doc["kind"]] = doc
    assert {"RayCluster", "RayJob"} <= set(kinds)
    assert len(cluster_specs()) == 2
    for name, spec in cluster_specs():
        assert spec["rayVersion"] == ray.__version__, name
        assert spec["enableInTreeAutoscaling"] is True, name
        assert spec["headGroupSpec"]["template"]["spec"]["containers"], name
        assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", name
        assert spec["workerGroupSpecs"], name
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] == 0 and group["replicas"] == 0, name
            assert group["maxReplicas"] >= 1, name
            limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert int(limits["nvidia.com/gpu"]) >= 1, name


def test_kuberay_images_match_installed_ray_and_dockerfile():
    tags = {image for _, spec in cluster_specs() for image in images(spec)}
    assert len(tags) == 1, f"head and workers must run one image, found {tags}"
    tag = tags.pop().rsplit(":", 1)[1]
    assert f"ray{ray.__version__}" in tag.split("-"), tag
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(ray.__version__)}$", dockerfile, re.M)
    base = re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-(py\d+)-gpu$", dockerfile, re.M)
    assert base, "the image must build on rayproject/ray at RAY_VERSION"
    assert base.group(1) in tag.split("-"), "image tag and base image disagree on Python"
    py = base.group(1)[2:]
    requires = re.search(r'requires-python = ">=3\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert int(py[1:]) >= int(requires.group(1)), "base image Python below requires-python"


def test_rayjob_runs_the_search():
    job = load(INFRA / "kuberay" / "rayjob.yaml")
    entry = job["spec"]["entrypoint"].split()
    assert entry[:5] == ["python", "-m", "raysweep.search", "--space", "fusion"]
    assert any(a.startswith("s3://") for a in entry), "a RayJob's checkpoints must go to S3"
    assert job["spec"]["shutdownAfterJobFinishes"] is True


# ------------------------------------------------------------------ MLflow server


def test_mlflow_stack_uses_postgres_s3_and_auth():
    compose = load(INFRA / "mlflow" / "docker-compose.yaml")
    services = compose["services"]
    assert {"postgres", "mlflow"} <= set(services)
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert env["MLFLOW_AUTH_DATABASE_URI"].startswith("postgresql://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert services["mlflow"]["build"]["args"]["MLFLOW_VERSION"] == mlflow.__version__
    dockerfile = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert f"ARG MLFLOW_VERSION={mlflow.__version__}" in dockerfile
    assert "--app-name basic-auth" in (INFRA / "mlflow" / "start-server.sh").read_text()


def test_example_env_files_hold_no_secrets():
    for path in [*INFRA.rglob("*.env.example"), INFRA / "kuberay" / "secrets.example.yaml"]:
        for line in path.read_text().splitlines():
            m = re.match(r"\s*([A-Z_]+)\s*[=:]\s*(\S*)", line)
            if m and secrets.is_secret_key(m.group(1)):
                assert m.group(2).startswith("CHANGE-ME") or m.group(2) == "...", line


def test_start_server_names_a_missing_setting():
    env = {"PATH": os.environ["PATH"]}
    out = subprocess.run(["sh", str(INFRA / "mlflow" / "start-server.sh")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "MLFLOW_BACKEND_STORE_URI is not set" in out.stderr


def http(url: str, user: str | None = None, password: str | None = None,
         timeout: float = 120) -> tuple[int, str]:
    # generous: on a loaded 2-core machine the auth app's first requests took over 10 s
    req = urllib.request.Request(url, headers=basic_auth(user, password) if user else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.slow
@pytest.mark.cluster
def test_start_server_enforces_basic_auth(tmp_path):
    """The real script and server: anonymous requests are refused, env credentials work."""
    with mlflow_auth_server(tmp_path) as (base, admin_pw):
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        # /health answers before the auth app has built its tables: poll the API itself until
        # it answers the admin (short per-try timeouts, a generous overall deadline)
        wait_until(lambda: http(search, "admin", admin_pw, timeout=30)[0] == 200, 300,
                   "mlflow auth API")
        assert http(search)[0] == 401
        assert http(search, "admin", "wrong")[0] == 401
        assert http(search, "admin", admin_pw)[0] == 200
        # the store URIs (a database password in production) reach the server processes
        # through the environment only: no command line of theirs names the store
        cmdlines = []
        for proc in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                cmdlines.append(proc.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:  # a process that ended while we looked
                pass
        assert any("basic-auth" in c for c in cmdlines)
        assert not any(str(tmp_path / "runs.db") in c for c in cmdlines)
        # The admin creates the sweep's user; the sweep then logs with env credentials only.
        create_mlflow_user(base, admin_pw, "raysweep", "sweep-pw-123-abcdef")
        script = ("import mlflow\nmlflow.set_experiment('auth-check')\n"
                  "with mlflow.start_run() as r:\n    mlflow.log_metric('val_de00_mean', 1.5)\n"
                  "print(r.info.run_id)")
        client_env = {**os.environ, "MLFLOW_TRACKING_URI": base,
                      "MLFLOW_TRACKING_USERNAME": "raysweep",
                      "MLFLOW_TRACKING_PASSWORD": "sweep-pw-123-abcdef"}
        out = subprocess.run([sys.executable, "-c", script], env=client_env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        run_id = out.stdout.strip().splitlines()[-1]
        code, body = http(f"{base}/api/2.0/mlflow/runs/get?run_id={run_id}",
                          "raysweep", "sweep-pw-123-abcdef")
        assert code == 200 and "val_de00_mean" in body


# ------------------------------------------------------------------ checkpoint storage

TWO_NODES = [{"Alive": True}, {"Alive": True}, {"Alive": False}]
ONE_NODE = [{"Alive": True}, {"Alive": False}]


@pytest.mark.parametrize("path", ["/tmp/raysweep", "relative/dir", "~/ray_results",
                                  "file:///tmp/raysweep", "memory://x", None, ""])
def test_local_path_refused_on_multi_node(path):
    with pytest.raises(UserError) as err:
        storage.check_storage(path, TWO_NODES, environ={}, may_grow=False)
    msg = err.value.message()
    assert "shared storage" in msg and "2 alive nodes" in msg
    assert "s3://" in msg and storage.SHARED_ENV in msg  # says how to fix it


@pytest.mark.parametrize("path", ["s3://bucket/raysweep", "gs://bucket/x", "abfs://c@a/x",
                                  "hdfs://nn:8020/x", "S3://Bucket/x"])
def test_remote_uri_accepted_on_multi_node(path):
    storage.check_storage(path, TWO_NODES, environ={}, may_grow=False)


def test_local_path_fine_on_one_node_but_not_when_the_cluster_can_grow():
    storage.check_storage("/tmp/raysweep", ONE_NODE, environ={}, may_grow=False)
    with pytest.raises(UserError, match="autoscaler"):
        storage.check_storage("/tmp/raysweep", ONE_NODE, environ={}, may_grow=True)


def test_shared_flag_and_prefixes(tmp_path):
    shared, other = tmp_path / "shared", tmp_path / "other"
    storage.check_storage(str(other), TWO_NODES, environ={storage.SHARED_ENV: "1"}, may_grow=False)
    env = {storage.SHARED_ENV: f"/nonexistent{os.pathsep}{shared}"}
    storage.check_storage(str(shared / "run"), TWO_NODES, environ=env, may_grow=False)
    with pytest.raises(UserError):
        storage.check_storage(str(other), TWO_NODES, environ=env, may_grow=False)
    with pytest.raises(UserError):
        storage.check_storage(str(other), TWO_NODES, environ={storage.SHARED_ENV: "0"},
                              may_grow=False)


def test_network_mounts_are_recognised():
    mounts = [("/", "ext4"), ("/mnt/shared", "nfs4"), ("/mnt/shared/scratch", "xfs")]
    assert storage.storage_problem("/mnt/shared/sweeps", True, {}, mounts) is None
    assert "xfs" in storage.storage_problem("/mnt/shared/scratch/x", True, {}, mounts)
    assert "ext4" in storage.storage_problem("/mnt/sharedx", True, {}, mounts)


def test_growable_cluster_counts_as_multi_node():
    head = [{"Alive": True, "Resources": {"CPU": 0.0, "memory": 1e9}}]
    with pytest.raises(UserError, match="no CPU and no GPU"):  # a CPU-less head: it must grow
        storage.check_storage("/tmp/raysweep", head, environ={})
    groups = {"RAYSWEEP_NODE_GROUPS": '{"gpu": {"max_workers": 2, "resources": {"GPU": 1}}}'}
    big_head = [{"Alive": True, "Resources": {"CPU": 8.0}}]
    storage.check_storage("/tmp/raysweep", big_head, environ={})
    with pytest.raises(UserError, match="node groups"):
        storage.check_storage("/tmp/raysweep", big_head, environ=groups)


def test_check_storage_needs_ray():
    # A fresh interpreter: this session's own Ray (tests/conftest.py) may be up here.
    code = ("from raysweep.sweep import storage\n"
            "try:\n    storage.check_storage('/tmp/x')\n"
            "except RuntimeError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items()
                                           if k != "RAY_ADDRESS"})
    assert "refused:" in out.stdout and "ray.init" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
def test_check_storage_on_a_real_single_node_ray(ray_local):
    """ray.nodes() and the autoscaler query on a real Ray (the session's); the two-node refusal
    on a real cluster is exercised end to end in tests/test_multinode.py."""
    assert sum(n["Alive"] for n in ray.nodes()) == 1
    from raysweep.sweep import cluster

    assert not cluster.shape(environ={}).may_grow  # a plain Ray reports no node types
    storage.check_storage("/tmp/raysweep-single-node", environ={})
    with pytest.raises(UserError, match="autoscaler"):  # the same real nodes, may grow
        storage.check_storage("/tmp/raysweep-single-node", may_grow=True)


# ------------------------------------------------------------------ credentials


def test_tracking_auth_from_env():
    auth = secrets.tracking_auth_from_env({
        "MLFLOW_TRACKING_URI": "https://mlflow.example", "MLFLOW_TRACKING_USERNAME": "sweeper",
        "MLFLOW_TRACKING_PASSWORD": "pw-123456"})
    assert auth.username == "sweeper" and auth.has_password
    assert "pw-123456" not in auth.describe() and "pw-123456" not in repr(auth)
    assert secrets.tracking_auth_from_env({}).tracking_uri is None


def test_tracking_auth_refuses_uri_credentials_and_half_config():
    with pytest.raises(UserError, match="contains credentials") as err:
        secrets.tracking_auth_from_env({"MLFLOW_TRACKING_URI": "https://u:topsecret@h:5000"})
    assert "topsecret" not in err.value.message()
    with pytest.raises(UserError, match="MLFLOW_TRACKING_PASSWORD is not set"):
        secrets.tracking_auth_from_env({"MLFLOW_TRACKING_USERNAME": "u"})


def test_scrub_secrets():
    env = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI", "HOME": "/root"}
    params = {"lr": 0.001, "backbone": "resnet18", "max_tokens": 5, "author": "ann",
              "mlflow_password": "hunter2", "api_key": "k", "nested": {"db_token": "t"},
              "uri": "postgresql://mlflow:pgpass@db:5432/mlflow",
              "note": "key wJalrXUtnFEMI pasted", "list": ["wJalrXUtnFEMI", 3]}
    before = copy.deepcopy(params)
    out = secrets.scrub_secrets(params, environ=env)
    assert params == before, "scrub_secrets must not mutate its input"
    assert out["lr"] == 0.001 and out["backbone"] == "resnet18"
    assert out["max_tokens"] == 5 and out["author"] == "ann"
    assert out["mlflow_password"] == out["api_key"] == out["nested"]["db_token"] == "***"
    assert out["uri"] == "postgresql://mlflow:***@db:5432/mlflow"
    assert out["list"] == ["***", 3] and out["note"] == "key *** pasted"
    assert "/root" in secrets.scrub_secrets({"home": "/root"}, environ=env).values()


def test_scrub_secrets_keeps_the_working_directory():
    """PWD/OLDPWD hold paths, not passwords: a path under them must be logged as it is."""
    env = {"PWD": "/home/ann/project", "OLDPWD": "/home/ann", "DB_PWD": "s3cr3t-value"}
    out = secrets.scrub_secrets({"data": "/home/ann/project/data/synth", "home": "/home/ann",
                                 "note": "pw s3cr3t-value"}, environ=env)
    assert out["data"] == "/home/ann/project/data/synth"
    assert out["home"] == "/home/ann"
    assert out["note"] == "pw ***"


# ------------------------------------------------------------------ scale-from-zero fixes (#14)


def test_kuberay_autoscaler_v2_and_pods_it_can_remove():
    for name, spec in cluster_specs():
        assert spec["autoscalerOptions"]["version"] == "v2", name
        groups = json.loads(next(e["value"] for e in spec["headGroupSpec"]["template"]["spec"]
                                 ["containers"][0]["env"] if e["name"] == "RAYSWEEP_NODE_GROUPS"))
        head_env = {e["name"] for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0]
                    ["env"]}
        assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" in head_env, name
        assert spec["headGroupSpec"]["template"]["spec"]["imagePullSecrets"], name
        for group in spec["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            assert pod["restartPolicy"] == "Never", name
            assert pod["imagePullSecrets"], name
            # KubeRay sizes /dev/shm itself; a hand-made volume would shrink the object store.
            assert not any(v.get("mountPath") == "/dev/shm"
                           for c in pod["containers"] for v in c.get("volumeMounts", [])), name
            limits = pod["containers"][0]["resources"]["limits"]
            declared = groups[group["groupName"]]
            assert declared["max_workers"] == group["maxReplicas"], name
            hardware = {k: v for k, v in declared["resources"].items()
                        if not k.startswith("raysweep_group_")}  # the group's own resource
            assert hardware == {"CPU": int(limits["cpu"]),
                                "GPU": int(limits["nvidia.com/gpu"])}, name


def test_rayjob_entrypoint_plans_on_a_head_only_cluster():
    """The shipped RayJob's flags, planned with what Ray reports at submit time (a head with 0
    CPU and 0 GPU) and the node groups the manifest declares: GPU trials, no error."""
    from raysweep.search import build_parser
    from raysweep.sweep import cluster, resources
    from raysweep.sweep.spec import Resources

    job = load(INFRA / "kuberay" / "rayjob.yaml")
    args = build_parser().parse_args(job["spec"]["entrypoint"].split()[3:])
    env = {e["name"]: e["value"] for e in job["spec"]["rayClusterSpec"]["headGroupSpec"]
           ["template"]["spec"]["containers"][0]["env"]}
    groups, source = cluster.declared_groups(env, bootstrap="/nonexistent")
    head = [{"Alive": True, "Resources": {"memory": 1e9}}]
    pl = resources.plan(args.num_samples, Resources(args.workers_per_trial or 1, 1.0,
                                                    args.gpus_per_trial, args.max_concurrent),
                        growth=cluster.decide(head, groups, source))
    assert pl.grows and pl.gpus_per_worker == 0.25 and pl.max_concurrent == 8 * 4


def test_aws_launcher_groups_plan_gpu_trials_and_keep_the_password_on_the_head():
    from raysweep.sweep import cluster, resources

    config = load(INFRA / "ray" / "aws.yaml")
    groups = cluster.groups_from_launcher_config(config)
    pl = resources.plan(100, growth=cluster.decide([{"Alive": True, "Resources": {}}], groups,
                                                    "aws.yaml"))
    assert pl.gpus_per_worker == 0.25, "no flag on GPU node groups still trains on the GPUs"
    # the password stays on the head: test_launcher_mlflow_login_reaches_the_head_only
    text = (INFRA / "ray" / "aws.yaml").read_text()
    assert "--workers-per-trial 4 --gpus-per-trial 4" in text  # one GPU per DDP worker
    assert "--max-failures 3" in text  # spot capacity is preempted


def test_readme_states_versions_and_flag_meanings():
    readme = (INFRA / "README.md").read_text()
    assert f"Ray {ray.__version__}" in readme and "KubeRay 1.5.1" in readme
    for flag in ("--gpus-per-trial", "--cpus-per-worker", "--workers-per-trial",
                 "--max-concurrent", "RAYSWEEP_NODE_GROUPS", "RAYSWEEP_SHARED_STORAGE"):
        assert flag in readme, flag


# ------------------------------------------------------------------ secrets off argv and workers (#14)

SECRET = "pw-7f3a9c-not-on-argv"  # a value that must never show up where `ps` or a worker sees it


def stub(bin_dir: Path, name: str, body: str) -> None:
    """A fake executable that records how it was called (argv one per line, then its stdin)."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def run_start_command(command: str, home: Path) -> subprocess.CompletedProcess:
    """One launcher start command in bash, as Ray's runner runs it, with `ray` stubbed out to
    print what its environment holds (ulimit left out: this machine's hard limit is lower)."""
    stub(home / "bin", "ray", 'echo "ray $1 pw=${MLFLOW_TRACKING_PASSWORD:-none}"')
    env = {"HOME": str(home), "PATH": f"{home / 'bin'}:/usr/bin:/bin", "RAY_HEAD_IP": "10.0.0.1"}
    return subprocess.run(["bash", "-c", command.replace("ulimit -n 65536", "true")], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_mlflow_login_reaches_the_head_only(path, tmp_path):
    """file_mounts go to every node (the head's autoscaler copies them on to each worker it
    starts): the MLflow login is not among them, no worker command reads it, and the head's
    start command exports it once `ray rsync-up` (head only) has put it there."""
    config = load(path)
    mounts = " ".join([*config["file_mounts"], *config["file_mounts"].values()])
    assert "raysweep.env" not in mounts and "cluster.env" not in mounts
    for key in ("setup_commands", "worker_setup_commands", "worker_start_ray_commands"):
        assert "raysweep.env" not in " ".join(config[key]), key
    head_start = config["head_start_ray_commands"][-1]
    assert any("chmod 600 ~/raysweep.env" in c for c in config["head_setup_commands"])
    home = tmp_path / "head"
    home.mkdir()
    (home / "raysweep-storage.env").write_text("")  # on-prem: the all-nodes storage file
    started = run_start_command(head_start, home)  # before the rsync-up: starts, says why
    assert started.returncode == 0 and "ray start pw=none" in started.stdout
    assert "ray rsync-up" in started.stderr
    (home / "raysweep.env").write_text(f"MLFLOW_TRACKING_PASSWORD={SECRET}\n")
    assert f"ray start pw={SECRET}" in run_start_command(head_start, home).stdout
    worker = tmp_path / "worker"
    worker.mkdir()
    (worker / "raysweep-storage.env").write_text("")
    out = run_start_command(config["worker_start_ray_commands"][-1], worker)
    assert out.returncode == 0 and "ray start pw=none" in out.stdout
    readme = (INFRA / "README.md").read_text()
    # AWS: the copy docker/release.sh pins to the image ("$RELEASE/aws.yaml")
    config_path = f'"$RELEASE/{path.name}"' if path.name == "aws.yaml" else f"infra/ray/{path.name}"
    assert f"ray rsync-up {config_path} ~/.config/raysweep/cluster.env ~/raysweep.env" \
        in readme and f"ray up {config_path} --restart-only" in readme


def test_start_server_keeps_store_uris_off_the_command_line(tmp_path):
    """`mlflow server` reads MLFLOW_BACKEND_STORE_URI itself: the database password goes through
    the environment, never the argv that `ps` shows."""
    stub(tmp_path / "bin", "mlflow",
         f'printf "%s\\n" "$@" > {tmp_path}/argv; env > {tmp_path}/env')
    db = f"postgresql://mlflow:{SECRET}@postgres:5432"
    env = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
           "MLFLOW_BACKEND_STORE_URI": f"{db}/mlflow", "MLFLOW_AUTH_DATABASE_URI": f"{db}/auth",
           "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/mlflow",
           "MLFLOW_AUTH_ADMIN_PASSWORD": SECRET, "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET}
    out = subprocess.run(["sh", str(INFRA / "mlflow" / "start-server.sh")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    argv = (tmp_path / "argv").read_text()
    assert argv.startswith("server\n--app-name\nbasic-auth\n") and "--serve-artifacts" in argv
    assert SECRET not in argv and "postgresql" not in argv
    assert f"MLFLOW_BACKEND_STORE_URI={db}/mlflow" in (tmp_path / "env").read_text()


def test_compose_secrets_stay_off_command_lines_and_mlflow_has_its_own_minio_key():
    compose = load(INFRA / "mlflow" / "docker-compose.yaml")
    services = compose["services"]
    for name, svc in services.items():
        argv = json.dumps([svc.get("command"), svc.get("entrypoint"),
                           (svc.get("healthcheck") or {}).get("test")])
        assert not re.search(r"PASSWORD|SECRET|://[^/\s\"]*:[^/\s\"]*@", argv), name
    mlflow_env = services["mlflow"]["environment"]
    assert "ROOT" not in mlflow_env["AWS_ACCESS_KEY_ID"] + mlflow_env["AWS_SECRET_ACCESS_KEY"]
    assert "MINIO_MLFLOW_USER" in mlflow_env["AWS_ACCESS_KEY_ID"]
    assert "minio-setup" in services["mlflow"]["depends_on"]
    assert any(p.endswith(":9000:9000") for p in services["minio"]["ports"]), "S3 API published"


def test_minio_setup_creates_a_bucket_only_user_without_secrets_on_argv(tmp_path):
    """infra/mlflow/minio-setup.sh against a recording `mc`: the MLflow user and the optional
    checkpoint user each get a policy for their bucket alone; no secret is ever an argument."""
    log, kept = tmp_path / "mc.log", tmp_path / "policies"
    kept.mkdir()
    stub(tmp_path / "bin", "mc",
         f'echo "ARGV $*" >> {log}; for a; do case "$a" in *.json) cp "$a" {kept}/;; esac; '
         f'done; if [ "$2 $3" = "user add" ]; then sed "s/^/STDIN /" >> {log}; fi')
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
           "MC_HOST_minio": f"http://minio-admin:{SECRET}-root@minio:9000",
           "ARTIFACT_BUCKET": "mlflow-artifacts", "MINIO_MLFLOW_USER": "mlflow-artifacts",
           "MINIO_MLFLOW_PASSWORD": f"{SECRET}-mlflow", "MINIO_CHECKPOINT_USER": "ckpt",
           "MINIO_CHECKPOINT_PASSWORD": f"{SECRET}-ckpt"}
    out = subprocess.run(["sh", str(INFRA / "mlflow" / "minio-setup.sh")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = log.read_text().splitlines()
    argvs = [line for line in lines if line.startswith("ARGV ")]
    assert argvs and not any(SECRET in a for a in argvs)
    assert "STDIN mlflow-artifacts" in lines and f"STDIN {SECRET}-mlflow" in lines
    assert f"STDIN {SECRET}-ckpt" in lines
    assert "ARGV admin policy attach minio mlflow-artifacts-readwrite --user mlflow-artifacts" \
        in argvs and "ARGV admin policy attach minio raysweep-readwrite --user ckpt" in argvs
    policies = [json.loads(p.read_text()) for p in kept.glob("*.json")]
    resources = [r for p in policies for st in p["Statement"] for r in st["Resource"]]
    assert set(resources) == {"arn:aws:s3:::mlflow-artifacts", "arn:aws:s3:::mlflow-artifacts/*",
                              "arn:aws:s3:::raysweep", "arn:aws:s3:::raysweep/*"}


def test_gitignore_keeps_filled_env_files_out_and_templates_in():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "-q", path],
                              timeout=120).returncode == 0

    for filled in ("infra/mlflow/server.env", "infra/ray/cluster.env", "infra/x/y/storage.env",
                   ".env", "infra/kuberay/secrets.yaml"):
        assert ignored(filled), filled
    templates = [*INFRA.rglob("*.env.example"), INFRA / "kuberay" / "secrets.example.yaml"]
    for path in templates:
        assert not ignored(path.relative_to(ROOT).as_posix()), path
