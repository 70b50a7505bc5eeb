"""Planning on a cluster that scales from zero, and the storage checks that run before Ray and
before MLflow (pure functions and the CLI; the real autoscaling cluster is test_autoscaling.py)."""

from __future__ import annotations

import json

import pytest

from raysweep.errors import UserError
from raysweep.sweep import cluster, resources, storage
from raysweep.sweep.spec import Request, Resources

HEAD_ONLY = [{"Alive": True, "Resources": {"memory": 1e9, "node:__internal_head__": 1.0}}]
GPU_GROUPS = json.dumps({"gpu1": {"max_workers": 8, "resources": {"CPU": 8, "GPU": 1}},
                         "gpu4": {"max_workers": 2, "resources": {"CPU": 48, "GPU": 4}}})


def shape_of(nodes=HEAD_ONLY, env=None, types=()):
    groups, source = cluster.declared_groups(env or {}, bootstrap="/nonexistent")
    return cluster.decide(nodes, groups, source, types)


def test_cpu_less_head_is_a_growable_cluster():
    s = shape_of()
    assert s.may_grow and s.alive == 1 and s.cpus == 0 and "no CPU and no GPU" in s.reason
    assert not shape_of([{"Alive": True, "Resources": {"CPU": 8.0}}]).may_grow


def test_node_groups_from_env_and_from_the_launcher_config(tmp_path):
    s = shape_of(env={cluster.GROUPS_ENV: GPU_GROUPS})
    assert s.may_grow and [g.name for g in s.groups] == ["gpu1", "gpu4"]
    assert "gpu1 (up to 8 x 8 CPU, 1 GPU)" in s.reason
    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text("head_node_type: head\navailable_node_types:\n"
                      "  head: {resources: {CPU: 0}, max_workers: 0}\n"
                      "  gpu: {resources: {CPU: 8, GPU: 1}, min_workers: 0, max_workers: 3}\n")
    groups, source = cluster.declared_groups({}, bootstrap=str(config))
    assert [(g.name, g.max_workers, g.resources["GPU"]) for g in groups] == [("gpu", 3, 1.0)]
    with pytest.raises(UserError, match=cluster.GROUPS_ENV):
        cluster.declared_groups({cluster.GROUPS_ENV: "{not json"})


def test_autoscaler_status_names_launchable_types():
    status = json.dumps({"autoscaler_report": {
        "node_availability_summary": {"node_availabilities": {"gpu": {}}},
        "node_type_mapping": {"abc": "ray.head.default"}}})
    assert cluster.autoscaler_node_types(status) == ["gpu"]
    assert cluster.autoscaler_node_types(None) == []
    assert cluster.autoscaler_node_types(json.dumps({"load_metrics_report": {}})) == []
    assert shape_of([{"Alive": True, "Resources": {"CPU": 4.0}}], types=["gpu"]).may_grow


def test_gpu_flag_is_trusted_on_a_head_only_cluster():
    """The shipped RayJob: --gpus-per-trial 0.25 on a head with 0 CPU, 0 GPU (was: 'the Ray
    cluster has none')."""
    pl = resources.plan(200, Resources(gpus_per_trial=0.25), growth=shape_of())
    assert pl.grows and pl.gpus_per_worker == 0.25 and pl.max_concurrent == 200
    assert pl.trial_resources() == {"cpu": 1.0, "gpu": 0.25}
    assert "no CPU and no GPU" in pl.describe()
    assert pl.first_wave() == [{"CPU": 1.0, "GPU": 0.25}] * 200


def test_node_groups_bound_concurrency_and_default_to_gpus():
    """No flag (the AWS README command): GPU groups -> a quarter GPU per trial, and as many
    trials as ONE group holds at its maximum size (#23: not every GPU node of both types)."""
    s = shape_of(env={cluster.GROUPS_ENV: GPU_GROUPS})
    pl = resources.plan(500, growth=s)
    # gpu1 (the fewest GPUs per node): 8 nodes x min(8 CPU, 4 quarter-GPUs) = 32
    assert pl.gpus_per_worker == 0.25 and pl.max_concurrent == 32
    assert "node group gpu1" in pl.describe()
    assert resources.plan(10, growth=s).max_concurrent == 10
    assert resources.plan(500, Resources(max_concurrent=5), growth=s).max_concurrent == 5


def test_gpus_per_trial_is_the_trials_total_for_ddp_too():
    s = shape_of(env={cluster.GROUPS_ENV: GPU_GROUPS})
    pl = resources.plan(50, Resources(4, gpus_per_trial=4), growth=s)
    assert pl.gpus_per_worker == 1.0  # one GPU per worker, not 4 workers on one GPU
    # #23: a DDP trial's workers share one node (STRICT_PACK): only gpu4 holds one, 2 nodes x 1
    assert pl.max_concurrent == 2 and pl.strategy == "STRICT_PACK"
    wave = pl.first_wave()
    assert wave.count({"CPU": 1.0, "GPU": 1.0}) == 4 * pl.max_concurrent
    assert wave.count({"CPU": resources.DDP_DRIVER_CPU}) == pl.max_concurrent
    local = resources.plan(4, Resources(2, gpus_per_trial=1), cpus=8, gpus=1, local=False)
    assert local.gpus_per_worker == 0.5


def test_groups_without_gpus_refuse_a_gpu_flag():
    cpu_only = json.dumps({"cpu": {"max_workers": 4, "resources": {"CPU": 16}}})
    with pytest.raises(UserError, match="no node group"):
        resources.plan(8, Resources(gpus_per_trial=1), growth=shape_of(env={cluster.GROUPS_ENV: cpu_only}))
    pl = resources.plan(100, growth=shape_of(env={cluster.GROUPS_ENV: cpu_only}))
    assert pl.gpus_per_worker == 0 and pl.max_concurrent == 64


def test_fixed_cluster_still_refuses_gpus_it_does_not_have():
    with pytest.raises(UserError, match="has none"):
        resources.plan(4, Resources(gpus_per_trial=0.5), cpus=8, gpus=0, local=False)


# ------------------------------------------------------------------ --storage before Ray


def test_unwritable_or_non_directory_storage_is_refused(tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for bad, says in ((afile, "is a file"), (afile / "under", "which is a file"),
                      ("/proc/raysweep-nope", "cannot write")):
        with pytest.raises(UserError, match=says) as err:
            storage.check_writable(str(bad))
        assert "Traceback" not in err.value.message()
    storage.check_writable(str(tmp_path / "new" / "deep"))
    assert not (tmp_path / "new").exists()  # a check creates nothing (Tune creates it later)
    storage.check_writable("s3://bucket/prefix")  # remote: Tune's business


def test_search_refuses_bad_storage_before_ray_data_and_mlflow(tmp_path, mlflow_db, monkeypatch):
    """Issue 13 item 6: no Ray start, no data preparation, no MLflow run."""
    from raysweep.sweep import run as sweep_run

    def must_not_run(*a, **k):
        raise AssertionError("reached past the storage check")

    monkeypatch.setattr(resources, "connect", must_not_run)
    monkeypatch.setattr(sweep_run, "load_data", must_not_run)
    afile = tmp_path / "storage-file"
    afile.write_text("")
    with pytest.raises(UserError, match="is a file"):
        sweep_run.run_sweep(Request(space="quickstart", smoke_test=True, storage=str(afile), name="bad"))
    assert mlflow_db.search_experiments(filter_string="name = 'quickstart'") == []


def test_search_refuses_node_local_storage_on_growable_cluster_before_mlflow(
        tmp_path, mlflow_db, monkeypatch):
    from raysweep.sweep import run as sweep_run

    monkeypatch.setattr(resources, "connect", lambda **k: False)
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: HEAD_ONLY)
    monkeypatch.setattr(cluster, "_autoscaler_status", lambda: None)
    monkeypatch.setattr(sweep_run, "load_data", lambda *a, **k: pytest.fail("data prepared"))
    with pytest.raises(UserError, match="shared storage"):
        sweep_run.run_sweep(Request(space="quickstart", smoke_test=True,
                                    storage=str(tmp_path / "runs"), name="local"))
    runs = [r for e in mlflow_db.search_experiments()
            for r in mlflow_db.search_runs([e.experiment_id])]
    assert runs == [], "a refused sweep leaves no MLflow run behind"
