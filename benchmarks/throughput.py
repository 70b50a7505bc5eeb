"""How many results per second the sweep's driver absorbs, and how long trials wait for it.

64 trials at once on one local Ray with 70 logical CPUs (the trials only sleep and report, so
a machine of a few cores can hold them; no autoscaling cluster: 64 trial processes are what
fits beside it), three runs in a row, each on a fresh Ray:

1. flat out, bare Ray Tune: the same trial function through a plain `tune.Tuner`
   (benchmarks.simulate.bare_fit: Tune's defaults with raysweep's two result loggers, no
   MLflow): what Tune's own driver absorbs on the same machine, the ceiling;
2. flat out, raysweep: through `raysweep.sweep.run.run_sweep` with MLflow on a real
   `mlflow server` this benchmark starts on 127.0.0.1; each trial reports back to back, so the
   driver is the bottleneck: the results per second it absorbs (over the middle 80% of all
   reports, in the order they returned) and the waits;
3. paced, raysweep: each trial reports every 0.5 s (64 x 2 = 128 results/s offered, what 64
   GPUs at 2 s per epoch and 0.25 GPU per trial send): the wait in `tune.report` (median, p95).

A trial times every `tune.report` call (benchmarks.simulate.fake_loop): the time it waited for
the driver to take its result. Checked afterwards: MLflow holds every result of every trial.

    python -m benchmarks.throughput            # 64 trials, 40 reports each
    python -m benchmarks.throughput --quick    # 16 trials, 20 reports each
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import Section, describe_machine, load_note, machine, md_table
from benchmarks.scale import failed_trials
from benchmarks.simulate import (
    BARRIER_ENV,
    EPOCH_S_ENV,
    WAITS_ENV,
    bare_fit,
    fake_loop,
    mlflow_server,
    own_environ,
    percentile,
    small_dataset,
)

LOGICAL_CPUS = 70


def sweep(root: Path, name: str, trials: int, reports: int, pause: float) -> dict:
    """raysweep's run: `run_sweep` with every callback and MLflow on the server."""
    from raysweep.sweep.run import run_sweep
    from raysweep.sweep.spec import Request

    def fit() -> dict:
        out = run_sweep(Request(space="tabular", data=str(small_dataset()), num_samples=trials,
                                max_concurrent=trials, cpus_per_worker=1,
                                storage=str(root / "runs"), name=name, seed=0, searcher="random",
                                early_stopping=False,
                                sets=(f"epochs={reports}", "features=mean+meta")),
                        loop=fake_loop)
        return {"tracking_s": out.tracking_s, "parent": out.parent_run_id,
                "failed": int((out.table["status"] != "FINISHED").sum())}

    return timed(root, name, trials, pause, fit)


def bare_sweep(root: Path, name: str, trials: int, reports: int, pause: float) -> dict:
    """Bare Ray Tune (benchmarks.simulate.bare_fit), no MLflow: the same function."""
    def fit() -> dict:
        configs = [{"epochs": reports, "lr": 10 ** (-4 + 3 * i / trials)} for i in range(trials)]
        grid = bare_fit(root / "runs", name, configs, trials)
        return {"tracking_s": 0.0, "parent": None, "failed": failed_trials(grid)}

    return timed(root, name, trials, pause, fit)


def timed(root: Path, name: str, trials: int, pause: float, fit) -> dict:
    """`fit()` on a fresh local Ray whose trials report every `pause` s, once all started."""
    import ray

    waits = root / f"{name}.waits"
    with own_environ():
        # Trial processes inherit the environment Ray started with: one Ray per run.
        os.environ[EPOCH_S_ENV], os.environ[WAITS_ENV] = str(pause), str(waits)
        os.environ[BARRIER_ENV] = f"{root / name}.started:{trials}"
        ray.init(address="local", num_cpus=LOGICAL_CPUS, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        try:
            t0 = time.perf_counter()
            out = fit()
            out["wall_s"] = time.perf_counter() - t0
        finally:
            ray.shutdown()
    out["trials"] = [json.loads(x) for x in waits.read_text().splitlines() if x]
    return out


def absorbed(trials: list[dict], share: float = 0.8) -> tuple[float, float, int]:
    """(results/s, span s, results) over the middle `share` of all reports, ordered by when
    they returned: the driver's steady rate, without the start (trials leaving the barrier)
    and the tail (the last few trials, which cannot keep a driver busy). A window "while every
    trial reported" is no measure: a driver that serves some trials first lets them finish
    before the last one has reported at all."""
    ends = sorted(e for t in trials for e in t["ends"])
    if len(ends) < 10:
        return float("nan"), float("nan"), len(ends)
    lo, hi = int(len(ends) * (1 - share) / 2), int(len(ends) * (1 + share) / 2) - 1
    span = ends[hi] - ends[lo]
    return (hi - lo) / span if span > 0 else float("nan"), span, hi - lo


def mlflow_count(url: str, parent: str) -> int:
    """Results MLflow holds for the sweep: `epoch` points over its child runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    exp = client.get_experiment_by_name("tabular")
    runs = client.search_runs([exp.experiment_id], max_results=5000,
                              filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    return sum(len(client.get_metric_history(r.info.run_id, "epoch")) for r in runs)


def summarize(mode: str, res: dict, logged: int) -> dict:
    waits = [w for t in res["trials"] for w in t["waits"]]
    rate, span, n = absorbed(res["trials"])
    first = min((e for t in res["trials"] for e in t["ends"]), default=0.0)
    return {"mode": mode, "trials": len(res["trials"]), "results": len(waits),
            "in_mlflow": logged, "rate": rate, "span_s": span, "span_results": n,
            "median_ms": 1000 * percentile(waits, 50), "p95_ms": 1000 * percentile(waits, 95),
            "max_ms": 1000 * max(waits, default=float("nan")), "wall_s": res["wall_s"],
            "tracking_s": res["tracking_s"], "failed": res["failed"],
            # every report's return, ms after the run's first: the rate can be recomputed
            "ends_ms": [[round(1000 * (e - first)) for e in t["ends"]] for t in res["trials"]]}


# (label, runner, seconds between reports); bare Tune first, so that raysweep's flat-out run comes
# between two others and neither side of the comparison gets the quietest minutes by design
MODES = (("flat out, bare Ray Tune (no MLflow)", "bare", 0.0),
         ("flat out, raysweep + MLflow", "raysweep", 0.0),
         ("paced every 0.5 s, raysweep + MLflow", "raysweep", 0.5))


def run(quick: bool = False) -> Section:
    trials, reports = (16, 20) if quick else (64, 40)
    root = Path(tempfile.mkdtemp(prefix="raysweep-throughput-"))
    rows = []
    try:
        with mlflow_server(root) as server:
            url = os.environ["MLFLOW_TRACKING_URI"] = server.url
            for i, (mode, runner, pause) in enumerate(MODES):
                fn = bare_sweep if runner == "bare" else sweep
                res = fn(root, f"{runner}-{i}", trials, reports, pause)
                logged = mlflow_count(url, res["parent"]) if res["parent"] else None
                rows.append({**summarize(mode, res, logged), "load_1min": os.getloadavg()[0]})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return section(rows, trials, reports, quick)


def section(rows: list[dict], trials: int, reports: int, quick: bool) -> Section:
    table = [(r["mode"], r["trials"], r["results"], "-" if r["in_mlflow"] is None else
              r["in_mlflow"], r["rate"], r["median_ms"], r["p95_ms"], r["max_ms"], r["wall_s"],
              r["load_1min"]) for r in rows]
    bare, flat, paced = rows
    md = ["## Result throughput: what the driver absorbs, what trials wait\n",
          f"{trials} trials at once, {reports} reports each, on one local Ray per run: bare Ray "
          "Tune (`benchmarks.simulate.bare_fit`, no MLflow), then `run_sweep` with MLflow on a local "
          f"`mlflow server`, flat out and paced ({'quick' if quick else 'full'} mode). "
          f"Machine: {describe_machine()}; {load_note()}.\n",
          md_table(table, ["run", "trials", "results", "in MLflow", "absorbed results/s",
                           "median wait ms", "p95 wait ms", "max wait ms", "wall s",
                           "load (1 min) after"]), "",
          f"- flat out, raysweep's driver absorbed **{flat['rate']:.0f} results/s** (target "
          f">= 200); bare Ray Tune's, on the same machine in the same run: "
          f"**{bare['rate']:.0f} results/s** (raysweep / bare: {flat['rate'] / bare['rate']:.2f}x).",
          f"- paced (offered {trials * 2} results/s): median wait in tune.report "
          f"**{paced['median_ms']:.1f} ms** (target < 50 ms), p95 {paced['p95_ms']:.1f} ms.",
          "- absorbed results/s: the middle 80% of all reports, ordered by when they returned, "
          "over the time between the first and the last of them (the start, all trials leaving "
          "the barrier, and the tail of the last few trials left out); the wait is the time "
          "`tune.report` took in the trial.", "",
          f"Command: `python -m benchmarks.throughput{' --quick' if quick else ''}`"]
    return Section("\n".join(md), {"rows": rows, "trials": trials, "reports": reports,
                                   "machine": machine()})


if __name__ == "__main__":
    from benchmarks import main

    main("throughput", run)
