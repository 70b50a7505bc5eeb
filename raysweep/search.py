"""`python -m raysweep.search`: a hyper-parameter sweep with Ray Tune, Optuna TPE, ASHA and MLflow.

    python -m raysweep.search --space quickstart            # laptop: starts a local Ray
    ray job submit --working-dir . -- python -m raysweep.search --space fusion   # a cluster

Everything a user can get wrong (space, parameter names, values, storage, tracking server) is
checked before Ray starts. Trials run the one training loop in the Tune trial process (reused
across trials), or in a TorchTrainer when a trial asks for several workers. MLflow gets one
parent run per invocation and one child per trial; `--resume` continues an interrupted sweep
into the same runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raysweep.data.prepared import Prepared
from raysweep.errors import UserError, run_cli, setup_logging, unknown_name
from raysweep.sweep import resources, results, spaces
from raysweep.sweep.data import describe_data, load_data, smoke_dataset
from raysweep.sweep.trainable import LOOP
from raysweep.sweep.tuner import build_tuner

log = logging.getLogger("raysweep.search")
DEFAULT_STORAGE = "~/raysweep_results"
STATE_FILE = "raysweep_sweep.json"
# Keeping 3 checkpoints per trial makes Tune snapshot its state more often than it likes; the
# snapshot is cheap here (small state) and the warning would drown the progress bar.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
SMOKE = {"num_samples": 2, "epochs": 2}
SEARCHERS = ("tpe", "random")


@dataclass
class SweepResult:
    name: str
    path: str  # the sweep's folder (Tune experiment) under --storage
    parent_run_id: str
    table: pd.DataFrame  # one row per trial, best first (also in <path>/results.csv)
    tracking_uri: str
    metric: str
    searched: list[str]  # the parameters the space searches
    complete: bool = True  # False: interrupted, continue with --resume
    tracking_s: float = 0.0  # driver time spent logging trials to MLflow


def storage_root(storage: str | None) -> str:
    storage = storage or DEFAULT_STORAGE
    if "://" in storage:
        return storage.rstrip("/")
    return os.path.abspath(os.path.expanduser(storage))


def run_search(space: str | None, data: str | Path | Prepared | None = None, num_samples: int | None = None,
               max_concurrent: int | None = None, workers_per_trial: int | None = None,
               gpus_per_trial: float | None = None, cpus_per_worker: float | None = None,
               storage: str | None = None, name: str | None = None, resume: bool = False,
               seed: int = 0, sets: Sequence[str] = (), smoke_test: bool = False,
               grace_period: int | None = None, reduction_factor: int | None = None,
               max_failures: int = 1, searcher: str = "tpe", early_stopping: bool = True,
               loop: str = LOOP, verbose: int = 0) -> SweepResult:
    """Run (or with `resume`, continue) a sweep; see the module docstring and `--help`.

    `searcher` "random" and `early_stopping=False` exist for baselines (benchmarks): the same
    space sampled at random, every trial run to its last epoch.
    """
    if searcher not in SEARCHERS:
        raise unknown_name("searcher", searcher, SEARCHERS, where="--searcher")
    # 0 must not quietly mean "the space's default" (the `or` below): say it is invalid.
    for flag, value, least in (("--num-samples", num_samples, 1),
                               ("--max-concurrent", max_concurrent, 1),
                               ("--workers-per-trial", workers_per_trial, 1),
                               ("--grace-period", grace_period, 1),
                               ("--reduction-factor", reduction_factor, 2),
                               ("--max-failures", max_failures, 0)):
        if value is not None and value < least:
            raise UserError(f"{flag} must be at least {least}, got {value}", where=flag,
                            fix=f"pass {flag} {least} or more, or leave it out for the default")
    if isinstance(data, str | Path) and "://" not in str(data):
        from raysweep.data.card import card_path

        card_path(data)  # a missing dataset fails here, before a run is opened in MLflow
    root = storage_root(storage)
    # -- everything the user can get wrong, before Ray starts ------------------------------
    from raysweep.sweep.storage import check_storage, check_writable

    check_writable(root)
    saved = None
    if resume:
        if not name:
            raise UserError("--resume needs the --name of the sweep to continue",
                            fix=f"look up the name under {root} and pass --name NAME")
        saved = json.loads(results.read_text(f"{root}/{name}/{STATE_FILE}") or "null")
        if saved is None:
            raise UserError(f"no sweep named {name!r} under {root}", where="--resume",
                            fix="pass the same --name and --storage as the interrupted sweep")
        sets, seed = saved["sets"], saved["seed"]
        if data is None and saved["data"] not in ("<in-memory>", "synthetic default"):
            data = saved["data"]
        num_samples, smoke_test = saved["num_samples"], saved["smoke_test"]
        # What the sweep was started with, so that `--resume --name X` alone continues it
        # (a DDP sweep must not come back as single-worker trials).
        if space is None:
            space = saved["space"] if saved["space"] in spaces.builtin_spaces() \
                else saved.get("space_source") or saved["space"]
        if workers_per_trial is None:
            workers_per_trial = saved.get("workers_per_trial")
    if space is None:
        raise UserError("no search space given", where="--space",
                        fix=f"pass --space with one of: {', '.join(spaces.builtin_spaces())}, "
                            "or a .py file (only --resume can leave it out)")
    sp = spaces.load_space(space)
    if saved and saved["space"] != sp.name:
        raise UserError(f"sweep {name!r} searched space {saved['space']!r}, not {sp.name!r}",
                        where="--resume", fix=f"pass --space {saved['space']}")
    names = spaces.check_space(sp, {}).names
    overrides = spaces.parse_sets(sets, extra_names=names)
    if smoke_test:
        overrides.setdefault("epochs", SMOKE["epochs"])
    space_fixed = dict(sp.FIXED)
    if sp.MAX_EPOCHS and "epochs" not in space_fixed:
        space_fixed["epochs"] = sp.MAX_EPOCHS
    sp.settings["FIXED"] = space_fixed
    checked = spaces.check_space(sp, overrides)
    max_epochs = max(s["epochs"] for s in checked.samples)
    num_samples = num_samples or (SMOKE["num_samples"] if smoke_test else sp.NUM_SAMPLES)
    workers = workers_per_trial or sp.WORKERS_PER_TRIAL
    cpus = cpus_per_worker or sp.CPUS_PER_TRIAL
    gpus = gpus_per_trial if gpus_per_trial is not None else sp.GPUS_PER_TRIAL
    grace = grace_period or sp.GRACE_PERIOD
    rf = reduction_factor or sp.REDUCTION_FACTOR
    metric, mode = sp.METRIC, sp.MODE
    name = name or f"{sp.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = f"{root}/{name}"
    if not resume and results.read_text(f"{path}/{STATE_FILE}") is not None:
        raise UserError(f"a sweep named {name!r} already exists under {root}",
                        fix="pass --resume to continue it, or choose another --name")

    if data is None and smoke_test:
        data = smoke_dataset()
    from raysweep.tracking.store import Tracker

    # A resumed sweep logs into the store it started in, wherever it is resumed from.
    uri = saved.get("tracking_uri") if saved and not os.environ.get("MLFLOW_TRACKING_URI") else None
    tracker = Tracker(sp.name, name, uri=uri)
    # -- Ray: the cluster decides the storage check and the plan, before MLflow hears of it --
    started = resources.connect(dashboard=workers > 1, log_to_driver=verbose > 0)
    asked = False
    try:
        check_storage(root)  # a refused sweep costs no data work and leaves no FAILED run
        pl = resources.plan(num_samples, workers, cpus, gpus, max_concurrent)
        log.info("%s", pl.describe())
        asked = resources.request_first_wave(pl)
        return _run(sp, name, tracker, data, checked, overrides, pl, loop=loop, root=root,
                    path=path, num_samples=num_samples, seed=seed, sets=sets,
                    smoke_test=smoke_test, max_epochs=max_epochs, grace=grace, rf=rf,
                    metric=metric, mode=mode, workers=workers, saved=saved, resume=resume,
                    max_failures=max_failures, verbose=verbose, searcher=searcher,
                    early_stopping=early_stopping)
    finally:
        if asked:
            resources.release_request()
        if started:
            import ray

            ray.shutdown()


def _run(sp, name, tracker, data, checked, overrides, pl, *, loop, root, path, num_samples,
         seed, sets, smoke_test, max_epochs, grace, rf, metric, mode, workers, saved, resume,
         max_failures, verbose, searcher, early_stopping) -> SweepResult:
    """Open the MLflow parent run, prepare the data, run Tune, write the leaderboard."""
    import ray

    from raysweep.tracking.store import code_version

    settings = {"space": sp.name, "space_source": sp.source, "sets": list(sets), "seed": seed,
                "num_samples": num_samples, "smoke_test": smoke_test, "max_epochs": max_epochs,
                "grace_period": grace, "reduction_factor": rf, "metric": metric, "mode": mode,
                "workers_per_trial": workers, "data": describe_data(data)}
    parent = tracker.start_parent(tags={"raysweep.space": sp.name, "raysweep.sweep_name": name,
                                        "raysweep.code_version": code_version(),
                                        "raysweep.question": sp.question},
                                  params=settings, run_id=saved and saved.get("parent_run_id"))
    status = "FAILED"
    try:
        prepared = load_data(data, checked.variants, checked.base)
        info = next(iter(prepared.values())).info
        tracker.log(parent, tags={
            "raysweep.dataset_hash": str(info.get("content_hash", "")),
            "raysweep.split_file": str(info.get("split_file", "")),
            "raysweep.split_id": str(info.get("split_id", "")),
            "raysweep.cluster_cpus": f"{pl.cluster_cpus:g}",
            "raysweep.cluster_gpus": f"{pl.cluster_gpus:g}"})
        if not resume:
            results.write_text(f"{path}/{STATE_FILE}", json.dumps(
                {**settings, "parent_run_id": parent, "tracking_uri": tracker.uri}, indent=2))
        refs = {k: ray.put(v) for k, v in prepared.items()}
        del prepared
        tuner = build_tuner(
            sp=sp, overrides=overrides, refs=refs, pl=pl, loop=loop, root=root, name=name,
            path=path, num_samples=num_samples, seed=seed, metric=metric, mode=mode,
            max_epochs=max_epochs, grace=grace, rf=rf, max_failures=max_failures,
            tracker=tracker, verbose=verbose, resume=resume, searcher=searcher,
            early_stopping=early_stopping)
        grid = tuner.fit()
        interrupted = grid.num_terminated + grid.num_errors < num_samples
        if workers > 1:
            resources.free_orphaned_placement_groups(wait_s=10)
        table = results.table(grid, metric, mode, max_epochs, sorted(checked.names), {})
        if len(table):
            try:
                if resume:  # runs of trials that a killed driver started but Tune never recorded
                    tracker.retire_orphans(set(table["trial_id"]))
                runs = tracker.children()
            except Exception as e:  # noqa: BLE001 - the leaderboard must not be lost to MLflow
                log.warning("could not list the sweep's MLflow runs: %s", e)
                runs = {}
            table["mlflow_run_id"] = table["trial_id"].map(runs).fillna("")
        results.write_text(f"{path}/results.csv", results.to_csv(table))
        tracker.log_text(parent, results.to_csv(table), "results.csv")
        best = table.iloc[0] if len(table) else None
        if best is not None and pd.notna(best.get(metric)):
            tracker.log(parent, metrics={f"best_{metric}": float(best[metric])},
                        tags={"raysweep.best_trial_id": str(best["trial_id"]),
                              "raysweep.best_run_id": str(best["mlflow_run_id"])}, strict=False)
        if tracker.failures:
            log.warning("MLflow was unreachable during the sweep, so its runs miss some "
                        "metrics; the complete record is %s/results.csv and every trial's "
                        "result.json under %s", path, path)
        # An interrupted sweep (Ctrl-C, a lost driver) stays open for --resume.
        status = "KILLED" if interrupted else "FINISHED"
        return SweepResult(name, path, parent, table, tracker.uri, metric, sorted(checked.names),
                           complete=not interrupted, tracking_s=tracker.seconds)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(parent, status)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raysweep.search", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help="a study in search_spaces/ (e.g. quickstart, fusion) or a "
                                   ".py file; with --resume, default: the sweep's own")
    p.add_argument("--data", help="dataset card or folder (default: the synthetic dataset)")
    p.add_argument("--num-samples", type=int, help="trials to run (default: the space's)")
    p.add_argument("--max-concurrent", type=int,
                   help="trials at once (default: what fits; on an autoscaling cluster, what "
                        "its node groups hold at their maximum size)")
    p.add_argument("--workers-per-trial", type=int, help="DDP workers per trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs for the whole trial, split evenly across its workers: 0.25 "
                        "packs 4 one-worker trials on a GPU; with --workers-per-trial 4, "
                        "pass 4 for one GPU per worker (default: 0.25 for one worker, 1 per "
                        "worker for DDP, when the cluster or its node groups have GPUs; "
                        "else 0)")
    p.add_argument("--cpus-per-worker", type=float,
                   help="CPUs for each worker of a trial (default 1; one-worker trials: the "
                        "trial's CPUs)")
    p.add_argument("--storage", help="checkpoint storage: a folder, or a URI such as "
                   f"s3://BUCKET/raysweep (default {DEFAULT_STORAGE}; a cluster with more "
                   "than one node needs shared storage, see infra/README.md)")
    p.add_argument("--name", help="sweep name (default: SPACE-DATE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the sweep --name")
    p.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a parameter for every trial (repeatable), e.g. --set lr=1e-3")
    p.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial can be stopped")
    p.add_argument("--reduction-factor", type=int, help="ASHA: keep 1/N at each rung")
    p.add_argument("--searcher", choices=SEARCHERS, default="tpe",
                   help="Optuna TPE (default) or random sampling, as a baseline")
    p.add_argument("--no-early-stopping", action="store_true",
                   help="run every trial to its last epoch (no ASHA), as a baseline")
    p.add_argument("--max-failures", type=int, default=1,
                   help="retries of a trial whose process died (default 1)")
    p.add_argument("--smoke-test", action="store_true", help="2 trials of 2 epochs")
    p.add_argument("--eval-winners", action="store_true",
                   help="re-evaluate the leaders on the test split afterwards")
    p.add_argument("--debug", action="store_true", help="tracebacks and Tune's own output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    for noisy in ("ray", "ray.tune", "ray.train", "mlflow", "alembic", "optuna"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.debug else logging.WARNING)
    out = run_search(
        args.space, data=args.data, num_samples=args.num_samples,
        max_concurrent=args.max_concurrent, workers_per_trial=args.workers_per_trial,
        gpus_per_trial=args.gpus_per_trial, cpus_per_worker=args.cpus_per_worker,
        storage=args.storage, name=args.name, resume=args.resume, seed=args.seed,
        sets=args.sets, smoke_test=args.smoke_test, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, max_failures=args.max_failures,
        searcher=args.searcher, early_stopping=not args.no_early_stopping,
        verbose=2 if args.debug else 0)
    print(results.leaderboard(out.table, out.metric, out.searched))
    n_failed = int((out.table["status"] == "FAILED").sum()) if len(out.table) else 0
    n_stopped = int(out.table["stopped_early"].sum()) if len(out.table) else 0
    print(f"\n{len(out.table)} trials ({n_stopped} stopped early by ASHA, {n_failed} failed); "
          f"all in {out.path}/results.csv")
    print(f"MLflow parent run: {out.parent_run_id}  (tracking: {out.tracking_uri}; "
          f"`mlflow ui --backend-store-uri {out.tracking_uri}`)")
    if not out.complete:
        print(f"The sweep was interrupted; continue it with: python -m raysweep.search "
              f"--resume --name {out.name}"
              + (f" --storage {args.storage}" if args.storage else ""))
        return 130
    if args.eval_winners:
        return _eval_winners(out)
    return 0


def _eval_winners(out: SweepResult) -> int:
    try:
        from raysweep.evaluate import winners as eval_winners
    except ImportError:
        raise UserError("--eval-winners needs raysweep.eval_winners, which this install lacks",
                        fix=f"run it later on the sweep folder {out.path}") from None
    return int(eval_winners.main(["--parent-run", out.parent_run_id,
                                  "--tracking-uri", out.tracking_uri]) or 0)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
