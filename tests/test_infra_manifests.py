"""What infra/ ships so that a cluster at scale costs only what the sweep needs and runs one
known build of the code (#23): one image pinned per commit everywhere, a RayJob whose submitter
can pull it, a head that never holds a GPU node, node groups with their own resource (raysweep
pins trials to one group), workers with bucket-only rights, spot retries. Parsed, never applied:
no KubeRay and no `ray up` run here."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
RELEASE = INFRA / "docker" / "release.sh"
PLACEHOLDER = re.compile(r"^REGISTRY/raysweep:GIT_SHA-ray[0-9.]+-py\d+-gpu$")
PIN_PREFIX = "raysweep_group_"


def load(rel: str) -> dict:
    return yaml.safe_load((INFRA / rel).read_text())


def kuberay_clusters() -> dict[str, dict]:
    return {"raycluster.yaml": load("kuberay/raycluster.yaml")["spec"],
            "rayjob.yaml": load("kuberay/rayjob.yaml")["spec"]["rayClusterSpec"]}


def pods(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]["spec"],
            *(g["template"]["spec"] for g in spec["workerGroupSpecs"])]


def every_image() -> dict[str, str]:
    found = {}
    for name, spec in kuberay_clusters().items():
        for i, pod in enumerate(pods(spec)):
            for c in pod["containers"]:
                found[f"{name}:pod{i}:{c['name']}"] = c["image"]
    submitter = load("kuberay/rayjob.yaml")["spec"]["submitterPodTemplate"]["spec"]
    found["rayjob.yaml:submitter"] = submitter["containers"][0]["image"]
    found["aws.yaml:docker"] = load("ray/aws.yaml")["docker"]["image"]
    return found


def head_groups(spec: dict) -> dict:
    env = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    return json.loads(next(e["value"] for e in env if e["name"] == "RAYSWEEP_NODE_GROUPS"))


def test_one_image_everywhere_and_it_is_the_placeholder_release_pins():
    images = every_image()
    assert len(set(images.values())) == 1, images
    image = next(iter(images.values()))
    # The committed files cannot start a cluster: the placeholder is no pullable name.
    assert PLACEHOLDER.match(image), image
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    assert "ARG GIT_SHA" in dockerfile and "org.opencontainers.image.revision" in dockerfile


def test_release_render_pins_every_file_by_digest(tmp_path):
    image = "ghcr.io/acme/raysweep:0123456789ab-ray2.60.0-py311-gpu@sha256:" + "ab" * 32
    out = subprocess.run([str(RELEASE), "render", image, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rendered = sorted(p.name for p in tmp_path.iterdir())
    assert rendered == ["aws.yaml", "raycluster.yaml", "rayjob.yaml"]
    for p in tmp_path.iterdir():
        text = p.read_text()
        assert "GIT_SHA" not in text and "REGISTRY/" not in text, p.name
        assert text.count(image) >= 1, p.name
    aws = yaml.safe_load((tmp_path / "aws.yaml").read_text())
    assert aws["docker"]["image"] == image
    job = yaml.safe_load((tmp_path / "rayjob.yaml").read_text())["spec"]
    assert job["submitterPodTemplate"]["spec"]["containers"][0]["image"] == image


def test_release_refuses_a_tag_that_moves(tmp_path):
    for image in ("ghcr.io/acme/raysweep:latest", "ghcr.io/acme/raysweep:0.1.0-ray2.60.0-py311"):
        out = subprocess.run([str(RELEASE), "render", image, str(tmp_path)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and "pinned neither by digest" in out.stderr, image
    assert not list(tmp_path.iterdir())


def test_release_build_refuses_uncommitted_image_inputs():
    script = RELEASE.read_text()
    # What enters the image must be committed, or the sha in its tag would lie.
    assert "git status --porcelain -- raysweep search_spaces pyproject.toml" in script
    assert '--build-arg GIT_SHA="$sha"' in script


def test_rayjob_submitter_can_pull_the_private_image():
    spec = load("kuberay/rayjob.yaml")["spec"]
    submitter = spec["submitterPodTemplate"]["spec"]
    head_pod = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert submitter["imagePullSecrets"] == head_pod["imagePullSecrets"]
    assert submitter["restartPolicy"] == "Never"
    assert "command" not in submitter["containers"][0], "KubeRay supplies the submit command"


def test_head_never_sits_on_a_gpu_node_and_workers_go_to_the_gpu_pool():
    for name, spec in kuberay_clusters().items():
        head = spec["headGroupSpec"]["template"]["spec"]
        assert head.get("nodeSelector"), name
        assert not head.get("tolerations"), f"{name}: the head must not tolerate the GPU taint"
        terms = head["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        excluded = {e["key"] for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]
                    if e["operator"] == "DoesNotExist"}
        assert {"nvidia.com/gpu.present", "cloud.google.com/gke-accelerator"} <= excluded, name
        for group in spec["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            assert pod["nodeSelector"] != head["nodeSelector"], name
    submitter = load("kuberay/rayjob.yaml")["spec"]["submitterPodTemplate"]["spec"]
    assert submitter["nodeSelector"] == kuberay_clusters()["rayjob.yaml"]["headGroupSpec"][
        "template"]["spec"]["nodeSelector"]


def test_kuberay_groups_carry_the_resource_raysweep_pins_trials_to():
    for name, spec in kuberay_clusters().items():
        declared = head_groups(spec)
        for group in spec["workerGroupSpecs"]:
            started = json.loads(json.loads(group["rayStartParams"]["resources"]))
            pins = {k: v for k, v in declared[group["groupName"]]["resources"].items()
                    if k.startswith(PIN_PREFIX)}
            assert started == pins and len(pins) == 1, (name, started, pins)


def test_rays_own_kuberay_reader_sees_the_groups_the_head_declares():
    """The autoscaler's view of each manifest (Ray's KubeRay config reader, which parses the
    quoted `rayStartParams.resources`) equals RAYSWEEP_NODE_GROUPS, the group's resource too."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    for name, spec in kuberay_clusters().items():
        cr = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
              "metadata": {"name": "raysweep", "namespace": "default"}, "spec": spec}
        config = _derive_autoscaling_config_from_ray_cr(cr)
        seen = {group: {"max_workers": t["max_workers"],
                        "resources": {k: v for k, v in t["resources"].items() if k != "memory"}}
                for group, t in config["available_node_types"].items()
                if group != config["head_node_type"]}
        assert seen == head_groups(spec), name


def test_aws_node_types_have_their_own_resource_and_install_nothing():
    config = load("ray/aws.yaml")
    head = config["head_node_type"]
    pins = [[k for k in t["resources"] if k.startswith(PIN_PREFIX)]
            for name, t in config["available_node_types"].items() if name != head]
    assert all(len(p) == 1 for p in pins) and len({p[0] for p in pins}) == len(pins), pins
    commands = " ".join(config[k] if isinstance(config[k], str) else " ".join(config[k])
                        for k in ("initialization_commands", "setup_commands",
                                  "head_setup_commands", "worker_setup_commands"))
    assert "pip install" not in commands, "a node that scales up must not resolve packages"
    assert "~/raysweep" not in config["file_mounts"], "the code comes with the image"
    assert config["docker"]["pull_before_run"] is True


def test_aws_workers_get_their_own_profile_and_bucket_only_rights():
    config = load("ray/aws.yaml")
    head_type = config["head_node_type"]
    arns = {name: t["node_config"]["IamInstanceProfile"]["Arn"]
            for name, t in config["available_node_types"].items()}
    head_arn = arns.pop(head_type)
    assert head_arn.endswith("/raysweep-head")
    assert set(arns.values()) == {head_arn.replace("raysweep-head", "raysweep-worker")}
    readme = (INFRA / "README.md").read_text()
    before, after = readme.split("# raysweep-worker: the bucket", 1)
    block = before.rsplit("```bash", 1)[1] + after.split("```", 1)[0]  # the commands, whole
    worker = [ln for ln in block.splitlines() if "raysweep-worker" in ln]
    policies = {ln.split("policy-document ")[1] for ln in worker if "policy-document" in ln}
    assert policies == {'"$TRUST"', '"$BUCKET_AND_IMAGE"'}, worker
    rights = block.split("BUCKET_AND_IMAGE=", 1)[1].split("# raysweep-worker", 1)[0]
    assert "s3:PutObject" in rights and "repository/raysweep" in rights
    assert "ec2:" not in rights.lower() and "iam:" not in rights.lower()
    assert not any("attach-role-policy" in ln for ln in worker), "no managed policy on workers"


def test_spot_clusters_retry_preempted_trials():
    from raysweep.search import build_parser

    entry = load("kuberay/rayjob.yaml")["spec"]["entrypoint"].split()
    args = build_parser().parse_args(entry[3:])
    assert args.max_failures >= 2
    assert "--max-failures 3" in (INFRA / "ray" / "aws.yaml").read_text()


def test_onprem_head_declares_its_worker_machines_as_a_node_group():
    from raysweep.sweep import cluster

    config = load("ray/onprem.yaml")
    head_start = config["head_start_ray_commands"][-1]
    value = re.search(r"RAYSWEEP_NODE_GROUPS='([^']+)'", head_start).group(1)
    groups = cluster.parse_groups(value)
    assert [g.max_workers for g in groups] == [len(config["provider"]["worker_ips"])]
    pins = [k for k in groups[0].resources if k.startswith(PIN_PREFIX)]
    worker_start = config["worker_start_ray_commands"][-1]
    started = json.loads(re.search(r"--resources='([^']+)'", worker_start).group(1))
    assert pins and started == {pins[0]: 1}
    assert "--num-cpus=0" in head_start, "trials stay off the head"


def test_release_render_keeps_a_users_file_and_writes_nothing(tmp_path):
    """A differing file of the same name in OUT is refused, before any file is written; an
    identical earlier render may stand (rendering twice into one folder works)."""
    image = "ghcr.io/acme/raysweep:0123456789ab-ray2.60.0-py311-gpu@sha256:" + "cd" * 32
    render = [str(RELEASE), "render", image, str(tmp_path)]
    mine = tmp_path / "rayjob.yaml"
    mine.write_text("my own job\n")
    out = subprocess.run(render, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "exists and differs" in out.stderr
    assert mine.read_text() == "my own job\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rayjob.yaml"]
    mine.unlink()
    for _ in range(2):
        out = subprocess.run(render, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aws.yaml", "raycluster.yaml", "rayjob.yaml"]
