"""Planning that costs only what the sweep needs (#23): one node group per sweep, trials and the
first-wave request pinned to it by the group's own resource, DDP workers on one node, and a
cluster running autoscaler v2 recognised as one that grows (it writes no autoscaler status)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from raysweep.errors import UserError
from raysweep.sweep import cluster, resources
from raysweep.sweep.spec import Resources

ROOT = Path(__file__).resolve().parents[1]
HEAD_ONLY = [{"Alive": True, "Resources": {"memory": 1e9, "node:__internal_head__": 1.0}}]
PINNED = json.dumps({
    "gpu1": {"max_workers": 8, "resources": {"CPU": 8, "GPU": 1, "raysweep_group_gpu1": 1}},
    "gpu4": {"max_workers": 2, "resources": {"CPU": 48, "GPU": 4, "raysweep_group_gpu4": 1}}})


def grown(groups: str = PINNED, **kw) -> cluster.Shape:
    found, source = cluster.declared_groups({cluster.GROUPS_ENV: groups}, bootstrap="/nonexistent")
    return cluster.decide(HEAD_ONLY, found, source, **kw)


def test_fractional_trials_take_one_group_and_are_pinned_to_it():
    pl = resources.plan(500, Resources(gpus_per_trial=0.25), growth=grown())
    assert pl.max_concurrent == 8 * 4 and pl.pin == "raysweep_group_gpu1"
    assert pl.trial_resources() == {"cpu": 1.0, "gpu": 0.25,
                                    "raysweep_group_gpu1": resources.PIN_SHARE}
    wave = pl.first_wave()
    # Every bundle the autoscaler sees names the group: it can add no g5.12xlarge for them.
    assert len(wave) == 32 and all(b.get("raysweep_group_gpu1") == resources.PIN_SHARE
                                   for b in wave)
    assert not any("raysweep_group_gpu4" in b for b in wave)
    assert "trials pinned by raysweep_group_gpu1" in pl.describe()


def test_ddp_trials_take_the_group_whose_node_holds_all_workers_strict_pack():
    pl = resources.plan(50, Resources(4, gpus_per_trial=4), growth=grown())
    assert (pl.pin, pl.strategy, pl.max_concurrent) == ("raysweep_group_gpu4", "STRICT_PACK", 2)
    assert "4 DDP workers on one node" in pl.describe()
    wave = pl.first_wave()
    assert wave.count({"CPU": 1.0, "GPU": 1.0, "raysweep_group_gpu4": resources.PIN_SHARE}) == 8
    assert wave.count({"CPU": resources.DDP_DRIVER_CPU,
                       "raysweep_group_gpu4": resources.PIN_SHARE}) == 2


def test_a_trial_no_node_holds_is_refused_naming_the_largest_node():
    with pytest.raises(UserError, match=r"largest is gpu4 \(up to 2 x 48 CPU, 4 GPU\)"):
        resources.plan(10, Resources(8, gpus_per_trial=8), growth=grown())


def test_cpu_trials_prefer_a_group_without_gpus():
    groups = json.loads(PINNED)
    groups["cpu"] = {"max_workers": 4, "resources": {"CPU": 16, "raysweep_group_cpu": 1}}
    pl = resources.plan(500, Resources(gpus_per_trial=0), growth=grown(json.dumps(groups)))
    assert pl.pin == "raysweep_group_cpu" and pl.max_concurrent == 64


def test_groups_without_their_own_resource_are_planned_but_say_they_cannot_pin():
    bare = json.dumps({"gpu": {"max_workers": 3, "resources": {"CPU": 4, "GPU": 1}}})
    pl = resources.plan(100, Resources(gpus_per_trial=0.5), growth=grown(bare))
    assert pl.pin == "" and pl.max_concurrent == 6
    assert pl.trial_resources() == {"cpu": 1.0, "gpu": 0.5}
    assert "may add another node type" in pl.describe()


def test_readme_plan_line_is_the_one_the_code_prints_for_the_shipped_rayjob():
    from raysweep.search import build_parser

    job = yaml.safe_load((ROOT / "infra" / "kuberay" / "rayjob.yaml").read_text())
    args = build_parser().parse_args(job["spec"]["entrypoint"].split()[3:])
    env = {e["name"]: e["value"] for e in job["spec"]["rayClusterSpec"]["headGroupSpec"]
           ["template"]["spec"]["containers"][0]["env"]}
    groups, source = cluster.declared_groups(env, bootstrap="/nonexistent")
    pl = resources.plan(args.num_samples, Resources(
        args.workers_per_trial or 1, args.cpus_per_worker or 1.0, args.gpus_per_trial,
        args.max_concurrent), growth=cluster.decide([{"Alive": True, "Resources": {}}], groups, source))
    assert pl.describe() in (ROOT / "infra" / "README.md").read_text()


# ------------------------------------------------------------------ autoscaler v2


def test_v2_reported_by_ray_makes_a_cluster_with_cpus_growable():
    """A v2 cluster writes no __autoscaling_status: a head with CPUs and no declared groups
    read as a fixed cluster ("the cluster has none"; local --storage accepted)."""
    head_with_cpus = [{"Alive": True, "Resources": {"CPU": 8.0}}]
    assert not cluster.decide(head_with_cpus).may_grow
    s = cluster.decide(head_with_cpus, autoscaler_v2=True)
    assert s.may_grow and "autoscaler v2" in s.reason and cluster.GROUPS_ENV in s.reason
    pl = resources.plan(40, Resources(gpus_per_trial=0.5), growth=s)  # trusted, not "the cluster has none"
    assert pl.grows and pl.gpus_per_worker == 0.5


def test_v2_is_not_claimed_for_a_plain_ray(ray_local):
    from raysweep import _compat

    assert _compat.autoscaler_v2() is False
    assert not cluster.shape(environ={}).may_grow


@pytest.mark.slow
def test_v2_detected_through_rays_own_api_on_a_live_cluster(tmp_path):
    """A Ray whose GCS runs autoscaler v2 (what KubeRay's `autoscalerOptions.version: v2`
    sets), in a fresh interpreter: shape() says it grows and a local --storage is refused."""
    script = textwrap.dedent(f"""
        import ray
        from raysweep import _compat
        from raysweep.errors import UserError
        from raysweep.sweep import cluster, storage
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                 _system_config={{"enable_autoscaler_v2": True}})
        s = cluster.shape(environ={{}})
        print("V2", _compat.autoscaler_v2(), s.may_grow, s.reason)
        try:
            storage.check_storage({str(tmp_path / 'runs')!r}, environ={{}})
            print("STORAGE accepted")
        except UserError as e:
            print("STORAGE refused", e.message()[:80])
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ,
                                                      "RAY_USAGE_STATS_ENABLED": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "V2 True True Ray reports autoscaler v2" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "STORAGE refused checkpoints must live on shared storage" in out.stdout, out.stdout


@pytest.mark.parametrize("logical_cpus, says", [(8, "they will share the cores"),
                                                (4, "the rest will queue")])
def test_more_trials_than_cores_on_a_local_ray_says_what_happens(monkeypatch, caplog,
                                                                 logical_cpus, says):
    """A local Ray with 8 logical CPUs on 2 cores runs 8 one-CPU trials side by side (the
    scale benchmark's setting): they do not queue, as the warning used to say."""
    monkeypatch.setattr(resources, "cores", lambda: 2)
    pl = resources.plan(100, Resources(max_concurrent=8), local=True, cpus=logical_cpus, gpus=0)
    assert pl.max_concurrent == 8
    assert "more than the 2 trial(s) this machine's cores run at once" in caplog.text
    assert says in caplog.text
