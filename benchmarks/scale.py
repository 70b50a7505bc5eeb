"""Many short trials: what raysweep's sweep costs per trial beyond bare Ray Tune.

N short trials (2 "epochs" of 0.2 s each, a checkpoint when they improve) run on one local Ray
with 8 trial slots, in one process, on the same machine, in three runs:

1. bare Ray Tune, the first N/2 trials;
2. raysweep, all N trials in one sweep, through `raysweep.sweep.run.run_sweep` (the library
   path of `python -m raysweep.search`: the tabular space, Optuna TPE, every callback, MLflow
   on a real `mlflow server` this benchmark starts on 127.0.0.1), with
   `benchmarks.simulate.fake_loop` as the training loop;
3. bare Ray Tune, the other N/2 trials.

Bare Tune (`benchmarks.simulate.bare_fit`: a plain Tuner with actor reuse and raysweep's two
result loggers) runs the same function on N configs of the same shape (full TrainConfig
dicts, 2 epochs, learning rates across the space's range: the function's work does not depend
on them). Its two halves come before and after raysweep's sweep, so a machine that gets
busier or quieter during the benchmark weighs on both sides; bare Tune pays one more Tuner
start for it (its time to a first result is in the result file).

Per trial slot cost = wall x slots / N - the trial's own 0.4 s. Checked afterwards: MLflow holds
N FINISHED child runs, each with both epochs, and the leaders' checkpoints.

    python -m benchmarks.scale                 # 1,000 trials
    python -m benchmarks.scale --trials 300    # fewer, when the machine is shared
    python -m benchmarks.scale --quick         # 40 trials
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import Section, describe_machine, load_note, machine, md_table
from benchmarks import simulate as sim
from benchmarks.simulate import (
    bare_fit,
    fake_loop,
    group_cpu_s,
    machine_cpu_s,
    mlflow_server,
    own_environ,
    small_dataset,
)
from raysweep.sweep import results
from raysweep.tracking.background import LANES

SLOTS, EPOCHS, EPOCH_S = 8, 2, 0.2
SPACE = "tabular"
# As infra/mlflow/start-server.sh runs it: one uvicorn worker. With `mlflow server`'s default 4,
# each request on a kept-alive connection waited ~44 ms for a delayed ACK (1.7 ms with 1; session
# 26), and the 1,000-trial sweep ended with a 53.5 s tracking backlog.
MLFLOW_WORKERS = 1


def raysweep_sweep(root: Path, n: int, phases: dict | None = None) -> tuple[float, object]:
    """raysweep's sweep of `n` trials: (wall s, SweepResult); `phases` gets the seconds of its
    Tune run (tuner built, trials run, MLflow's queue waited for: `mlflow_end_wait`, of which
    `mlflow_finish` the reconciliation and the leaders' checkpoint copies) and of its
    finalize (the leaderboard, parameter importance), the rest of the wall being the set-up."""
    from raysweep.sweep import run as sweep_run
    from raysweep.sweep.spec import Request
    from raysweep.tracking.callback import TrialLogger

    data = str(small_dataset())  # found in the cache (seconds), outside the timed part
    phases = {} if phases is None else phases
    timed = {(sweep_run, "run_tune"): "run_tune", (sweep_run, "finalize"): "finalize",
             (TrialLogger, "on_experiment_end"): "mlflow_end_wait",
             (TrialLogger, "_finish"): "mlflow_finish"}
    saved = {key: getattr(*key) for key in timed}
    for (owner, attr), fn in saved.items():
        setattr(owner, attr, _timed(fn, phases, timed[owner, attr]))
    t0 = time.perf_counter()
    try:
        with own_environ():  # raysweep sets Tune's console variables; bare Tune its own
            out = sweep_run.run_sweep(Request(space=SPACE, data=data, num_samples=n,
                                              max_concurrent=SLOTS, cpus_per_worker=1,
                                              storage=str(root / "runs"), name="scale",
                                              seed=0, early_stopping=False,
                                              sets=(f"epochs={EPOCHS}", "features=mean+meta")),
                                      loop=fake_loop)
    finally:
        for (owner, attr), fn in saved.items():
            setattr(owner, attr, fn)
    return time.perf_counter() - t0, out


def _timed(fn, into: dict, name: str):
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into[name] = time.perf_counter() - t0
    return timed


def bare_sweep(root: Path, name: str, configs: list[dict]) -> tuple[float, object]:
    t0 = time.perf_counter()
    grid = bare_fit(root / "runs", name, configs, SLOTS)
    return time.perf_counter() - t0, grid


def failed_trials(grid) -> int:
    """Bare Tune's failed trials, by the rule raysweep's leaderboard counts its own with (a row
    FAILED): an error, or a last result saying the weights diverged (config.DIVERGED), which
    ends a trial without an error so that Tune does not retry it."""
    return sum(1 for r in grid if results.trial_status(r, {}) == "FAILED")


def bare_configs(n: int) -> list[dict]:
    """N trial configs shaped as raysweep's loop gets them (a whole TrainConfig)."""
    from raysweep.config import TrainConfig

    return [TrainConfig.from_dict({"epochs": EPOCHS, "lr": 10 ** (-4 + 3 * i / max(1, n - 1))},
                                  where="scale benchmark").to_dict() for i in range(n)]


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


def trials_by_run(waits: Path, spans: dict[str, tuple[float, float]]) -> dict[str, list[dict]]:
    """The trials `fake_loop` recorded in `waits`, per run: those whose first report fell in the
    run's span."""
    trials = [json.loads(x) for x in waits.read_text().splitlines() if x] if waits.exists() else []
    return {name: [t for t in trials if t["ends"] and start <= t["ends"][0] <= stop]
            for name, (start, stop) in spans.items()}


def first_results(runs: dict[str, list[dict]], spans: dict[str, tuple[float, float]]
                  ) -> dict[str, float]:
    """Seconds from each run's start to its first trial's first report (the Tuner's start-up)."""
    return {name: min(t["ends"][0] for t in runs[name]) - start if runs[name] else math.nan
            for name, (start, _) in spans.items()}


def trial_flow(runs: dict[str, list[dict]], spans: dict[str, tuple[float, float]]
               ) -> dict[str, dict]:
    """Per run: the median wait in `tune.report` (ms; the driver taking results, and the
    checkpoint's copy into storage) and the mean number of trial functions running over the
    run's wall time (of SLOTS allowed): a driver that falls behind shows in both."""
    out = {}
    for name, (start, stop) in spans.items():
        lives = [t["ends"][-1] - t["start"] for t in runs[name] if "start" in t]
        report_waits = sorted(w for t in runs[name] for w in t["waits"])
        out[name] = {"median_wait_ms": 1000 * report_waits[len(report_waits) // 2]
                     if report_waits else math.nan,
                     "in_flight": sum(lives) / (stop - start) if lives else math.nan}
    return out


def run(quick: bool = False, trials: int | None = None) -> Section:
    import ray

    n = trials or (40 if quick else 1000)
    root = Path(tempfile.mkdtemp(prefix="raysweep-scale-"))
    configs = bare_configs(n)
    walls, spans, phases = {}, {}, {}
    try:
        with own_environ(), mlflow_server(root, workers=MLFLOW_WORKERS) as server:
            os.environ.update({"MLFLOW_TRACKING_URI": server.url, sim.EPOCH_S_ENV: str(EPOCH_S),
                               sim.WAITS_ENV: str(root / "waits.jsonl")})
            small_dataset()  # outside the timed runs
            ray.init(address="local", num_cpus=SLOTS, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            for name, part in (("bare_1", configs[: n // 2]), ("raysweep", None),
                               ("bare_2", configs[n // 2:])):
                start, cpu0 = time.time(), cpu_now(server.pgid)
                if part is None:
                    walls[name], out = raysweep_sweep(root, n, phases)
                else:
                    walls[name], grid = bare_sweep(root, name, part)
                    walls[f"{name}_failed"] = failed_trials(grid)
                spans[name] = (start, time.time())
                walls[f"{name}_load"] = os.getloadavg()[0]
                walls.update({f"{name}_{k}": v - cpu0[k]
                              for k, v in cpu_now(server.pgid).items()})
            tracked = check_mlflow(server.url, out, n)
            ray.shutdown()
        recorded = trials_by_run(root / "waits.jsonl", spans)
        starts, flow = first_results(recorded, spans), trial_flow(recorded, spans)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    walls.update({f"raysweep_{k}": v for k, v in phases.items()})
    return section(n, walls, starts, out, tracked, quick, flow)


def cpu_now(server_pgid: int) -> dict[str, float]:
    """CPU seconds so far: the machine's busy and total (all cores), the tracking server's, and
    this process's (Tune's driver, and raysweep's MLflow writer threads)."""
    busy, total = machine_cpu_s()
    return {"cpu_busy_s": busy, "cpu_all_s": total, "server_cpu_s": group_cpu_s(server_pgid),
            "driver_cpu_s": time.process_time()}


def cpu_lines(walls: dict, starts: dict, n: int) -> list[str]:
    """Where the CPU went: whether bare Tune left the cores idle (raysweep's own work could hide
    there) or not (then every CPU second raysweep adds costs wall time), and the tracking
    server's share of what raysweep adds."""
    if "raysweep_cpu_busy_s" not in walls:  # a result written before these were measured
        return []
    cores = machine()["cores"]
    share = {k: walls[f"{k}_cpu_busy_s"] / max(1e-9, walls[f"{k}_cpu_all_s"])
             for k in ("bare_1", "raysweep", "bare_2")}
    bare = (walls["bare_1_cpu_busy_s"] + walls["bare_2_cpu_busy_s"]) / n
    mine = walls["raysweep_cpu_busy_s"] / n
    server = walls["raysweep_server_cpu_s"] / n
    driver = walls["raysweep_driver_cpu_s"] / n
    bare_driver = (walls["bare_1_driver_cpu_s"] + walls["bare_2_driver_cpu_s"]) / n
    one_start = walls["bare_1"] + walls["bare_2"] - starts["bare_2"]
    return [f"- CPU: the {cores} cores were busy {share['bare_1']:.0%} / {share['raysweep']:.0%} "
            f"/ {share['bare_2']:.0%} of the time in the three runs. CPU seconds per trial (all "
            f"processes): bare Tune {bare:.3f}, raysweep {mine:.3f} ({mine - bare:+.3f}); of "
            f"raysweep's, the tracking server {server:.3f} and this driver process {driver:.3f} "
            f"(bare Tune's driver {bare_driver:.3f}). On cores kept busy by the trials, the "
            f"server's CPU alone costs {server * SLOTS / cores:.3f} s of wall per trial slot.",
            f"- with bare Tune's second Tuner start taken off its total ({starts['bare_2']:.1f} s "
            f"to its first result): {one_start:.0f} s, {per_slot(one_start, n):.3f} s per "
            f"slot; raysweep's per-slot cost beyond it: "
            f"**{per_slot(walls['raysweep'], n) - per_slot(one_start, n):.3f} s**."]


def per_slot(wall: float, n: int) -> float:
    return wall * SLOTS / n - EPOCHS * EPOCH_S


def section(n, walls, starts, out, tracked, quick, flow=None) -> Section:
    wall_rs, wall_bare = walls["raysweep"], walls["bare_1"] + walls["bare_2"]
    rs_fail = int((out.table["status"] != "FINISHED").sum())
    bare_fail = walls["bare_1_failed"] + walls["bare_2_failed"]
    ratio, extra = wall_rs / wall_bare, per_slot(wall_rs, n) - per_slot(wall_bare, n)
    tune_s, fin_s = walls["raysweep_run_tune"], walls["raysweep_finalize"]
    setup = wall_rs - tune_s - fin_s
    end_wait = walls.get("raysweep_mlflow_end_wait", math.nan)
    finish = walls.get("raysweep_mlflow_finish", math.nan)
    flow = flow or {}
    nan = {"median_wait_ms": math.nan, "in_flight": math.nan}
    rows = [(label, trials, failed, walls[key], starts[key],
             flow.get(key, nan)["median_wait_ms"], flow.get(key, nan)["in_flight"],
             walls[f"{key}_load"])
            for label, key, trials, failed in (
                ("1. bare Ray Tune, first half", "bare_1", n // 2, walls["bare_1_failed"]),
                ("2. raysweep.search path, MLflow server", "raysweep", n, rs_fail),
                ("3. bare Ray Tune, second half", "bare_2", n - n // 2,
                 walls["bare_2_failed"]))]
    cmd = "python -m benchmarks.scale" + (" --quick" if quick else "") + \
        ("" if n in (40, 1000) else f" --trials {n}")
    md = ["## Scale: many short trials through raysweep vs bare Ray Tune\n",
          f"{n} short trials ({EPOCHS} epochs x {EPOCH_S} s, a checkpoint when improved), "
          f"{SLOTS} at once, on one local Ray, in the order below: bare Tune's halves before "
          f"and after raysweep's sweep ({'quick' if quick else 'full'} mode); MLflow: `mlflow "
          f"server --workers {MLFLOW_WORKERS}` on SQLite, raysweep's writer with "
          f"{LANES} lanes. "
          f"Machine: {describe_machine()}; {load_note()}.\n",
          md_table(rows, ["run (in order)", "trials", "failed", "wall s",
                          "s to first result", "median wait in tune.report ms",
                          f"trials running (mean, of {SLOTS})", "load (1 min) after"]), "",
          f"- bare Ray Tune, both halves: {wall_bare:.0f} s, "
          f"{per_slot(wall_bare, n):.3f} s per trial slot; raysweep: {wall_rs:.0f} s, "
          f"{per_slot(wall_rs, n):.3f} s per trial slot.",
          f"- raysweep / bare Tune wall time: **{ratio:.2f}x** (target <= 1.3x); per-slot cost "
          f"beyond bare Tune's: **{extra:.3f} s** (target <= 0.1 s). Bare Tune's total holds "
          "two Tuner starts (column 's to first result'), raysweep's one.",
          f"- where raysweep's {wall_rs:.0f} s went: set-up (spec, dry run of the space, "
          f"Ray check, parent run, data) {setup:.0f} s, Tune run {tune_s:.0f} s "
          f"({per_slot(tune_s, n):.3f} s per trial slot, "
          f"{per_slot(tune_s, n) - per_slot(wall_bare, n):.3f} s beyond bare Tune's), "
          f"finalize (leaderboard, parameter importance over {n} trials, plots) "
          f"{fin_s:.0f} s. Set-up and finalize are paid once per sweep, not per trial.",
          f"- driver time in the MLflow callback's hooks: {out.tracking_s:.1f} s "
          f"({1000 * out.tracking_s / max(1, n):.1f} ms per trial), the end-of-sweep wait for "
          f"the tracking queue included ({end_wait:.1f} s of it: the writer's backlog when the "
          f"last trial ended {end_wait - finish:.1f} s, then the reconciliation and the "
          f"leaders' checkpoint copies {finish:.1f} s).",
          *cpu_lines(walls, starts, n),
          f"- MLflow afterwards: {tracked['finished']} of {tracked['runs']} child runs FINISHED, "
          f"{tracked['all_epochs']} with their last epoch; {tracked['sampled']} sampled "
          f"histories {'complete' if tracked['sampled_histories_ok'] else 'INCOMPLETE'}; "
          f"{tracked['checkpoint_uri_tags']} runs tagged with their checkpoint URI, "
          f"{tracked['checkpoints_copied']} checkpoints copied (the leaders)."]
    if n < 1000 and not quick:
        md.append(f"- {n} trials, not the 1,000 of the target: what fitted in the time left "
                  "on the shared machine (`--trials`).")
    md += ["", f"Command: `{cmd}`"]
    data = {"trials": n, "slots": SLOTS, "mlflow_workers": MLFLOW_WORKERS, "writer_lanes": LANES,
            "epochs": EPOCHS, "epoch_s": EPOCH_S,
            "order": ["bare_1", "raysweep", "bare_2"], "walls": walls,
            "seconds_to_first_result": starts, "trial_flow": flow,
            "wall_raysweep_s": wall_rs, "wall_bare_s": wall_bare, "ratio": ratio,
            "per_slot_raysweep_s": per_slot(wall_rs, n), "per_slot_bare_s": per_slot(wall_bare, n),
            "per_slot_extra_s": extra, "setup_s": setup, "tune_run_s": tune_s,
            "finalize_s": fin_s, "per_slot_tune_run_extra_s": per_slot(tune_s, n) - per_slot(
                wall_bare, n), "tracking_s": out.tracking_s, "mlflow": tracked,
            "failed": {"raysweep": rs_fail, "bare": bare_fail}, "machine": machine()}
    return Section("\n".join(md), data)


if __name__ == "__main__":
    from benchmarks import parse_args, write_section

    args = parse_args("scale", valued={"--trials": "trials per sweep (default: the full size)"})
    result = run(quick=args.quick, trials=int(args.trials) if args.trials else None)
    print(result)
    write_section("scale", args.quick, result)
