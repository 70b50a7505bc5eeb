"""`python -m raysweep.search`: a hyper-parameter sweep with Ray Tune, Optuna TPE, ASHA and MLflow.

    python -m raysweep.search --space quickstart            # laptop: starts a local Ray
    ray job submit --working-dir . -- python -m raysweep.search --space fusion   # a cluster

Everything a user can get wrong (space, parameter names, values, storage, tracking server) is
checked before Ray starts. Trials run the one training loop in the Tune trial process (reused
across trials), or in a TorchTrainer when a trial asks for several workers. MLflow gets one
parent run per invocation and one child per trial; `--resume` continues an interrupted sweep
into the same runs.

`run_search` is resolve (flags + space, or the saved `SweepSpec` on --resume -> a concrete spec)
-> prepare (parent run, data, the spec on disk) -> run (Tune) -> finalize (the leaderboard).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from raysweep.data.prepared import Prepared
from raysweep.errors import UserError, run_cli, setup_logging, unknown_name
from raysweep.sweep import resources, results, spaces
from raysweep.sweep.data import describe_data, load_data, smoke_dataset
from raysweep.sweep.spec import BUILTIN_DATA, SPEC_FILE, EarlyStopping, Request, SweepSpec, Tracking
from raysweep.sweep.spec import Resources as SpecResources
from raysweep.sweep.trainable import LOOP
from raysweep.sweep.tuner import build_tuner

log = logging.getLogger("raysweep.search")
DEFAULT_STORAGE = "~/raysweep_results"
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
    early_stopping: bool = True  # whether ASHA could stop trials (the summary line's wording)


@dataclass(frozen=True)
class Sweep:
    """The runtime objects a spec resolves to (the spec itself holds only plain values)."""

    space: spaces.Space  # a copy with the epochs budget in FIXED; the loaded one is not touched
    checked: spaces.Checked
    overrides: dict
    data: Any  # what load_data reads: a path, a URI, an in-memory Prepared, or None


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
    request = Request(space=space, data=data, num_samples=num_samples,
                      max_concurrent=max_concurrent, workers_per_trial=workers_per_trial,
                      gpus_per_trial=gpus_per_trial, cpus_per_worker=cpus_per_worker,
                      storage=storage, name=name, resume=resume, seed=seed, sets=tuple(sets),
                      smoke_test=smoke_test, grace_period=grace_period,
                      reduction_factor=reduction_factor, max_failures=max_failures,
                      searcher=searcher, early_stopping=early_stopping)
    spec, sweep = resolve(request)
    from raysweep.tracking.store import Tracker

    tracker = Tracker(spec.tracking.experiment, spec.name, uri=spec.tracking.uri)
    # -- Ray: the cluster decides the storage check and the plan, before MLflow hears of it --
    workers = spec.resources.workers_per_trial
    started = resources.connect(dashboard=workers > 1, log_to_driver=verbose > 0)
    asked = False
    try:
        from raysweep.sweep.storage import check_storage

        check_storage(spec.storage)  # a refused sweep costs no data work and leaves no FAILED run
        r = spec.resources
        pl = resources.plan(spec.num_samples, workers, r.cpus_per_worker, r.gpus_per_trial,
                            r.max_concurrent)
        log.info("%s", pl.describe())
        asked = resources.request_first_wave(pl)
        parent = prepare_parent(spec, sweep, tracker)
        status = "FAILED"
        try:
            spec, refs = prepare(spec, sweep, tracker, pl, parent, resume=request.resume)
            grid = run(spec, sweep, refs, pl, tracker, loop=loop, verbose=verbose,
                       resume=request.resume)
            out = finalize(spec, sweep, grid, tracker, resume=request.resume)
            # An interrupted sweep (Ctrl-C, a lost driver) stays open for --resume.
            status = "FINISHED" if out.complete else "KILLED"
            return out
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            tracker.end(parent, status)
    finally:
        if asked:
            resources.release_request()
        if started:
            import ray

            ray.shutdown()


# -- resolve: everything the user can get wrong, before Ray starts -------------------------------

def resolve(request: Request) -> tuple[SweepSpec, Sweep]:
    """The request (plus, with --resume, the sweep's own spec) and the space -> a concrete spec."""
    _check_flags(request)
    data = request.data
    if isinstance(data, str | Path) and "://" not in str(data):
        from raysweep.data.card import card_path

        card_path(data)  # a missing dataset fails here, before a run is opened in MLflow
    root = storage_root(request.storage)
    from raysweep.sweep.storage import check_writable

    check_writable(root)
    saved = read_spec(root, request.name) if request.resume else None
    space_arg = request.space
    if space_arg is None and saved is not None:
        space_arg = saved.space if saved.space in spaces.builtin_spaces() else saved.space_source
    if space_arg is None:
        raise UserError("no search space given", where="--space",
                        fix=f"pass --space with one of: {', '.join(spaces.builtin_spaces())}, "
                            "or a .py file (only --resume can leave it out)")
    loaded = spaces.load_space(space_arg)
    if saved and saved.space != loaded.name:
        raise UserError(f"sweep {request.name!r} searched space {saved.space!r}, not "
                        f"{loaded.name!r}", where="--resume", fix=f"pass --space {saved.space}")
    # What the sweep was started with, so that `--resume --name X` alone continues it.
    sets, smoke = (saved.sets, saved.smoke_test) if saved else (request.sets, request.smoke_test)
    names = spaces.check_space(loaded, {}).names
    overrides = spaces.parse_sets(sets, extra_names=names)
    if smoke:
        overrides.setdefault("epochs", SMOKE["epochs"])
    fixed = dict(loaded.FIXED)
    if loaded.MAX_EPOCHS and "epochs" not in fixed:
        fixed["epochs"] = loaded.MAX_EPOCHS
    sp = replace(loaded, settings={**loaded.settings, "FIXED": fixed})
    checked = spaces.check_space(sp, overrides)
    if data is None and saved and saved.data not in BUILTIN_DATA:
        data = saved.data
    if data is None and smoke:
        data = smoke_dataset()
    spec = (_resumed(saved, request, root, data) if saved else
            _new_spec(request, sp, root, data, max(s["epochs"] for s in checked.samples)))
    if not request.resume and results.read_text(f"{spec.path}/{SPEC_FILE}") is not None:
        raise UserError(f"a sweep named {spec.name!r} already exists under {root}",
                        fix="pass --resume to continue it, or choose another --name")
    return spec, Sweep(sp, checked, overrides, data)


def _check_flags(request: Request) -> None:
    if request.searcher not in SEARCHERS:
        raise unknown_name("searcher", request.searcher, SEARCHERS, where="--searcher")
    # 0 must not quietly mean "the space's default": say it is invalid.
    for flag, value, least in (("--num-samples", request.num_samples, 1),
                               ("--max-concurrent", request.max_concurrent, 1),
                               ("--workers-per-trial", request.workers_per_trial, 1),
                               ("--grace-period", request.grace_period, 1),
                               ("--reduction-factor", request.reduction_factor, 2),
                               ("--max-failures", request.max_failures, 0)):
        if value is not None and value < least:
            raise UserError(f"{flag} must be at least {least}, got {value}", where=flag,
                            fix=f"pass {flag} {least} or more, or leave it out for the default")


def read_spec(root: str, name: str | None) -> SweepSpec:
    """The spec that the sweep `name` under `root` was started with (for --resume)."""
    if not name:
        raise UserError("--resume needs the --name of the sweep to continue",
                        fix=f"look up the name under {root} and pass --name NAME")
    where = f"{root}/{name}/{SPEC_FILE}"
    text = results.read_text(where)
    if text is None:
        raise UserError(f"no sweep named {name!r} under {root}", where="--resume",
                        fix="pass the same --name and --storage as the interrupted sweep")
    return SweepSpec.from_json(text, where=where)


def _new_spec(request: Request, sp: spaces.Space, root: str, data: Any, epochs: int) -> SweepSpec:
    smoke = request.smoke_test
    return SweepSpec(
        name=request.name or f"{sp.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage=root,
        space=sp.name, space_source=sp.source, data=describe_data(data),
        sets=tuple(request.sets), seed=request.seed,
        num_samples=request.num_samples or (SMOKE["num_samples"] if smoke else sp.NUM_SAMPLES),
        epochs=epochs, metric=sp.METRIC, mode=sp.MODE, searcher=request.searcher,
        smoke_test=smoke, max_failures=request.max_failures,
        resources=SpecResources(
            workers_per_trial=request.workers_per_trial or sp.WORKERS_PER_TRIAL,
            cpus_per_worker=request.cpus_per_worker or sp.CPUS_PER_TRIAL,
            gpus_per_trial=request.gpus_per_trial if request.gpus_per_trial is not None
            else sp.GPUS_PER_TRIAL, max_concurrent=request.max_concurrent),
        early_stopping=EarlyStopping(request.early_stopping,
                                     request.grace_period or sp.GRACE_PERIOD,
                                     request.reduction_factor or sp.REDUCTION_FACTOR),
        tracking=Tracking(uri=None, experiment=sp.name))


def _resumed(saved: SweepSpec, request: Request, root: str, data: Any) -> SweepSpec:
    """The saved spec, with what may differ where it resumes: the storage path it was found
    at, resource flags given again (another cluster), the retry budget, a dataset moved."""
    r, given = saved.resources, request
    return replace(
        saved, name=request.name, storage=root,
        data=describe_data(data) if request.data is not None else saved.data,
        max_failures=request.max_failures,
        resources=SpecResources(
            workers_per_trial=given.workers_per_trial or r.workers_per_trial,
            cpus_per_worker=given.cpus_per_worker or r.cpus_per_worker,
            gpus_per_trial=r.gpus_per_trial if given.gpus_per_trial is None
            else given.gpus_per_trial,
            max_concurrent=given.max_concurrent or r.max_concurrent),
        # A resumed sweep logs into the store it started in, wherever it is resumed from.
        tracking=replace(saved.tracking, uri=None if os.environ.get("MLFLOW_TRACKING_URI")
                         else saved.tracking.uri))


# -- prepare: the parent run, the data, the spec on disk -------------------------------------------

def prepare_parent(spec: SweepSpec, sweep: Sweep, tracker) -> str:
    """Open (or with --resume reopen) the sweep's MLflow parent run."""
    from raysweep.tracking.store import code_version

    return tracker.start_parent(tags={"raysweep.space": spec.space,
                                      "raysweep.sweep_name": spec.name,
                                      "raysweep.code_version": code_version(),
                                      "raysweep.question": sweep.space.question},
                                params=spec.params(), run_id=spec.tracking.parent_run_id)


def prepare(spec: SweepSpec, sweep: Sweep, tracker, pl: resources.Plan, parent: str, *,
            resume: bool) -> tuple[SweepSpec, dict]:
    """Prepare the data into the object store and write the spec (with its parent run)."""
    import ray

    prepared = load_data(sweep.data, sweep.checked.variants, sweep.checked.base)
    info = next(iter(prepared.values())).info
    tracker.log(parent, tags={
        "raysweep.dataset_hash": str(info.get("content_hash", "")),
        "raysweep.split_file": str(info.get("split_file", "")),
        "raysweep.split_id": str(info.get("split_id", "")),
        "raysweep.cluster_cpus": f"{pl.cluster_cpus:g}",
        "raysweep.cluster_gpus": f"{pl.cluster_gpus:g}"})
    spec = replace(spec, tracking=replace(spec.tracking, uri=tracker.uri, parent_run_id=parent))
    if not resume:
        results.write_text(f"{spec.path}/{SPEC_FILE}", spec.to_json())
    return spec, {k: ray.put(v) for k, v in prepared.items()}


# -- run and finalize ------------------------------------------------------------------------------

def run(spec: SweepSpec, sweep: Sweep, refs: dict, pl: resources.Plan, tracker, *, loop: str,
        verbose: int, resume: bool):
    """Tune's run of the sweep: its ResultGrid (interrupted or complete)."""
    tuner = build_tuner(spec, sweep.space, sweep.overrides, refs=refs, pl=pl, tracker=tracker,
                        loop=loop, verbose=verbose, resume=resume)
    grid = tuner.fit()
    if pl.workers > 1:
        resources.free_orphaned_placement_groups(wait_s=10)
    return grid


def finalize(spec: SweepSpec, sweep: Sweep, grid, tracker, *, resume: bool) -> SweepResult:
    """The leaderboard: results.csv under the sweep and in MLflow, the best trial on the parent."""
    parent, metric, searched = tracker.parent_run_id, spec.metric, sorted(sweep.checked.names)
    table = results.table(grid, metric, spec.mode, spec.epochs, searched, {},
                          early_stopping=spec.early_stopping.enabled)
    if len(table):
        try:
            if resume:  # runs of trials that a killed driver started but Tune never recorded
                tracker.retire_orphans(set(table["trial_id"]))
            runs = tracker.children()
        except Exception as e:  # noqa: BLE001 - the leaderboard must not be lost to MLflow
            log.warning("could not list the sweep's MLflow runs: %s", e)
            runs = {}
        table["mlflow_run_id"] = table["trial_id"].map(runs).fillna("")
    results.write_text(f"{spec.path}/results.csv", results.to_csv(table))
    tracker.log_text(parent, results.to_csv(table), "results.csv")
    best = table.iloc[0] if len(table) else None
    if best is not None and pd.notna(best.get(metric)):
        tracker.log(parent, metrics={f"best_{metric}": float(best[metric])},
                    tags={"raysweep.best_trial_id": str(best["trial_id"]),
                          "raysweep.best_run_id": str(best["mlflow_run_id"])}, strict=False)
    if tracker.failures:
        log.warning("MLflow was unreachable during the sweep, so its runs miss some "
                    "metrics; the complete record is %s/results.csv and every trial's "
                    "result.json under %s", spec.path, spec.path)
    interrupted = grid.num_terminated + grid.num_errors < spec.num_samples
    return SweepResult(spec.name, spec.path, parent, table, tracker.uri, metric, searched,
                       complete=not interrupted, tracking_s=tracker.seconds,
                       early_stopping=spec.early_stopping.enabled)


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
    stopping = f"{n_stopped} stopped early by ASHA" if out.early_stopping else "early stopping off"
    print(f"\n{len(out.table)} trials ({stopping}, {n_failed} failed); "
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
    # The same command a user would run next, so --eval-winners prints and exits the same way.
    # Imported here: it loads the evaluation stack, which a plain sweep never needs.
    from raysweep import eval_winners

    return int(eval_winners.main(["--parent-run", out.parent_run_id,
                                  "--tracking-uri", out.tracking_uri]) or 0)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
