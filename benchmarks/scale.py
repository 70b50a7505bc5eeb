"""Many short trials: what raysweep's sweep costs per trial beyond bare Ray Tune.

N short trials (2 "epochs" of 0.2 s each, a checkpoint when they improve) run twice on one local
Ray with 8 trial slots, in one process, on the same machine:

1. through `raysweep.sweep.run.run_sweep` (the library path of `python -m raysweep.search`: the
   tabular space, Optuna TPE, every callback, MLflow on a real `mlflow server` this benchmark
   starts on 127.0.0.1), with `benchmarks.simulate.fake_loop` as the training loop;
2. through a bare `tune.Tuner` running the same function on the same trial configs (the
   configs raysweep's searcher chose), with Tune's defaults.

Per trial slot cost = wall x slots / N - the trial's own 0.4 s. Checked afterwards: MLflow holds
N FINISHED child runs, each with both epochs, and the leaders' checkpoints.

    python -m benchmarks.scale                 # 1,000 trials
    python -m benchmarks.scale --trials 300    # fewer, when the machine is shared
    python -m benchmarks.scale --quick         # 40 trials
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import Section, describe_machine, load_note, machine, md_table
from benchmarks.simulate import EPOCH_S_ENV, fake_loop, mlflow_server, small_dataset

SLOTS, EPOCHS, EPOCH_S = 8, 2, 0.2
SPACE = "tabular"
LOOP = fake_loop


def raysweep_sweep(root: Path, n: int) -> tuple[float, object]:
    from raysweep.sweep.run import run_sweep
    from raysweep.sweep.spec import Request

    data = str(small_dataset())  # found in the cache (seconds), outside the timed part
    t0 = time.perf_counter()
    out = run_sweep(Request(space=SPACE, data=data, num_samples=n,
                            max_concurrent=SLOTS, cpus_per_worker=1, storage=str(root / "runs"),
                            name="scale", seed=0, early_stopping=False,
                            sets=(f"epochs={EPOCHS}", "features=mean+meta")), loop=LOOP)
    return time.perf_counter() - t0, out


def bare_sweep(root: Path, configs: list[dict]) -> tuple[float, object]:
    from ray import tune

    from benchmarks.simulate import bare_trial

    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(bare_trial, {"cpu": 1}),
        param_space={"cfg": tune.grid_search(configs)},
        # short folder names, as raysweep's: Tune's default name spells out the whole config
        tune_config=tune.TuneConfig(max_concurrent_trials=SLOTS,
                                    trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=tune.RunConfig(name="bare", storage_path=str(root / "runs"), verbose=0))
    grid = tuner.fit()
    return time.perf_counter() - t0, grid


def check_mlflow(url: str, out, n: int) -> dict:
    """What the tracking server holds after the sweep: runs, epochs, leaders' checkpoints."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name(SPACE)
    runs = client.search_runs([exp.experiment_id], max_results=50000,
                              filter_string=f"tags.mlflow.parentRunId = '{out.parent_run_id}'")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    complete = [r for r in finished if r.data.metrics.get("epoch") == EPOCHS]
    sample = finished[:: max(1, len(finished) // 25)]
    steps_ok = all(sorted(m.step for m in client.get_metric_history(r.info.run_id, "epoch"))
                   == list(range(1, EPOCHS + 1)) for r in sample)
    with_uri = [r for r in runs if r.data.tags.get("raysweep.checkpoint_uri")]
    copied = [r for r in runs
              if any(a.path == "checkpoint" for a in client.list_artifacts(r.info.run_id))]
    return {"runs": len(runs), "finished": len(finished), "all_epochs": len(complete),
            "sampled_histories_ok": steps_ok, "sampled": len(sample),
            "checkpoint_uri_tags": len(with_uri), "checkpoints_copied": len(copied)}


def trial_configs(out) -> list[dict]:
    import json

    return [json.loads(c) for c in out.table["config"]]


def run(quick: bool = False, trials: int | None = None) -> Section:
    import ray

    n = trials or (40 if quick else 1000)
    root = Path(tempfile.mkdtemp(prefix="raysweep-scale-"))
    os.environ[EPOCH_S_ENV] = str(EPOCH_S)
    small_dataset()  # outside the timed sweeps
    try:
        with mlflow_server(root) as url:
            os.environ["MLFLOW_TRACKING_URI"] = url
            ray.init(address="local", num_cpus=SLOTS, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            wall_rs, out = raysweep_sweep(root, n)
            wall_bare, grid = bare_sweep(root, trial_configs(out))
            tracked = check_mlflow(url, out, n)
            ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return section(n, wall_rs, wall_bare, out, grid, tracked, quick)


def per_slot(wall: float, n: int) -> float:
    return wall * SLOTS / n - EPOCHS * EPOCH_S


def section(n, wall_rs, wall_bare, out, grid, tracked, quick) -> Section:
    rs_fail = int((out.table["status"] != "FINISHED").sum())
    bare_fail = sum(1 for r in grid if r.error)
    ratio, extra = wall_rs / wall_bare, per_slot(wall_rs, n) - per_slot(wall_bare, n)
    rows = [("raysweep.search path, MLflow server", n, rs_fail, wall_rs, per_slot(wall_rs, n)),
            ("bare Ray Tune, same function and configs", len(grid), bare_fail, wall_bare,
             per_slot(wall_bare, n))]
    cmd = "python -m benchmarks.scale" + (" --quick" if quick else "") + \
        ("" if n in (40, 1000) else f" --trials {n}")
    md = ["## Scale: many short trials through raysweep vs bare Ray Tune\n",
          f"{n} short trials ({EPOCHS} epochs x {EPOCH_S} s, a checkpoint when improved), "
          f"{SLOTS} at once, on one local Ray ({'quick' if quick else 'full'} mode). "
          f"Machine: {describe_machine()}; {load_note()}.\n",
          md_table(rows, ["run", "trials", "failed", "wall s", "cost per trial slot s"]), "",
          f"- raysweep / bare Tune wall time: **{ratio:.2f}x** (target <= 1.3x); per-slot cost "
          f"beyond bare Tune's: **{extra:.3f} s** (target <= 0.1 s).",
          f"- driver time in the MLflow callback's hooks: {out.tracking_s:.1f} s "
          f"({1000 * out.tracking_s / max(1, n):.1f} ms per trial).",
          f"- MLflow afterwards: {tracked['finished']} of {tracked['runs']} child runs FINISHED, "
          f"{tracked['all_epochs']} with their last epoch; {tracked['sampled']} sampled "
          f"histories {'complete' if tracked['sampled_histories_ok'] else 'INCOMPLETE'}; "
          f"{tracked['checkpoint_uri_tags']} runs tagged with their checkpoint URI, "
          f"{tracked['checkpoints_copied']} checkpoints copied (the leaders)."]
    if n < 1000 and not quick:
        md.append(f"- {n} trials, not the 1,000 of the target: what fitted on the shared machine "
                  "(`--trials`).")
    md += ["",
           f"Command: `{cmd}`"]
    data = {"trials": n, "slots": SLOTS, "epochs": EPOCHS, "epoch_s": EPOCH_S,
            "wall_raysweep_s": wall_rs, "wall_bare_s": wall_bare, "ratio": ratio,
            "per_slot_raysweep_s": per_slot(wall_rs, n), "per_slot_bare_s": per_slot(wall_bare, n),
            "per_slot_extra_s": extra, "tracking_s": out.tracking_s, "mlflow": tracked,
            "failed": {"raysweep": rs_fail, "bare": bare_fail}, "machine": machine()}
    return Section("\n".join(md), data)


if __name__ == "__main__":
    from benchmarks import write_section

    args = sys.argv[1:]
    count = int(args[args.index("--trials") + 1]) if "--trials" in args else None
    result = run(quick="--quick" in args, trials=count)
    print(result)
    write_section("scale", "--quick" in args, result)
