"""Does raysweep's default search (TPE + ASHA) find what random search finds, in less time?

Five methods, equal trial budgets and trials in flight, several seeds, on two spaces: `tabular`
(the synthetic default set as a spreadsheet: the colour measured in each photo, its ring and
EXIF, no images) and `quickstart` (its small CNN on the photos):

- random: random search, every trial to its last epoch (the yardstick);
- random + ASHA, TPE (no early stopping), TPE + ASHA: the space's default rungs and sampler
  (raysweep's TPE is multivariate with a constant liar, `raysweep/sweep/strategy.py`);
- TPE + async Hyperband: the same sampler and rungs in 3 brackets (`--brackets 3`; a trial in
  bracket k is first compared k rungs later), a BOHB-style hedge against rungs that cut late
  bloomers.

Runs go seed-major (each seed runs every method before the next seed starts, the method order
rotated per seed), so that load from other jobs on the machine falls on the methods alike. One
Ray serves every sweep. Each sweep is the library call `run_sweep`, MLflow included.

    python -m benchmarks.search_efficiency            # full
    python -m benchmarks.search_efficiency --quick    # 2 seeds, fewer trials and epochs
    python -m benchmarks.search_efficiency --from-log # the section again from the kept runs
    BENCH_SPACES=tabular BENCH_SEEDS=3 BENCH_FIRST_SEED=0 python -m benchmarks.search_efficiency
                                                      # a part: seeds 0-2 of one space
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import Section, machine, result_path
from benchmarks import main as bench_main
from benchmarks.search_curves import BASELINE, DEFAULT
from benchmarks.search_report import section
from raysweep.sweep import strategy

BRACKETED = "TPE + async Hyperband (3 brackets)"
CANDIDATE = "TPE + ASHA (candidate)"
# method -> (sampler, early stopping: "space" = the space's rungs, "brackets" = the same rungs
# in BRACKETS asynchronous-Hyperband brackets, the later ones starting a rung later,
# "candidate" = the space's rungs and sampler changed as CANDIDATES says)
METHODS = {BASELINE: ("random", None), "random + ASHA": ("random", "space"),
           "TPE": ("tpe", None), DEFAULT: ("tpe", "space"), BRACKETED: ("tpe", "brackets"),
           CANDIDATE: ("tpe", "candidate")}
BRACKETS = 3
# What the candidate changes against each space's defaults, measured beside them before it may
# become one: grace_fraction / reduction_factor (the rungs), startup_share (TPE's start-up as a
# share of the trial budget, strategy.STARTUP_SHARE).
CANDIDATES = {"tabular": {"startup_share": 1 / 6},
              "quickstart": {"grace_fraction": 1 / 8, "reduction_factor": 3}}


@dataclasses.dataclass(frozen=True)
class Size:
    """How big each space's sweeps are in this run (the machine decides what fits)."""

    trials: int
    epochs: int
    concurrent: int
    sets: tuple[str, ...] = ()


def sizes(quick: bool) -> dict[str, Size]:
    """Each space's own trial budget (NUM_SAMPLES: tabular 24, quickstart 16), 2 at a time, at
    the epochs the earlier runs' recorded curves have (16 and 8: the spaces' own 200 and 40 would
    take hours per seed on 2 shared CPU cores). With the 8-12 trials measured before, a search
    had little to learn from and ASHA little to cut, and each sweep's fixed set-up (its first
    trial's process, ~10 s) was a fifth to two fifths of random's span. A space's 25 sweeps run
    in parts of under 25 minutes (BENCH_FIRST_SEED). A GPU machine runs the tabular budget at
    half size and more trials at once."""
    if quick:
        out = {"tabular": Size(6, 12, 2), "quickstart": Size(4, 4, 2, ("width=8",))}
    elif machine()["gpus"]:
        out = {"tabular": Size(24, 100, 4), "quickstart": Size(16, 20, 4, ("width=8",))}
    else:
        out = {"tabular": Size(24, 16, 2), "quickstart": Size(16, 8, 2, ("width=8",))}
    # BENCH_<SPACE>_EPOCHS: another epoch budget (e.g. the space's own, on an idle machine,
    # where 16 cheap epochs leave each trial's fixed start-up most of its time);
    # BENCH_<SPACE>_TRIALS: another trial budget (every method gets the same)
    return {space: dataclasses.replace(
        sz, epochs=int(os.environ.get(f"BENCH_{space.upper()}_EPOCHS", sz.epochs)),
        trials=int(os.environ.get(f"BENCH_{space.upper()}_TRIALS", sz.trials)))
        for space, sz in out.items()}


def image_share() -> int:
    """Every n-th photo for the image space: all of them on a GPU, a quarter on CPU cores."""
    return 1 if machine()["gpus"] else 4


def datasets(image_size: int, image_share: int):
    """(tabular, images): the synthetic default set prepared once, the tabular copy without
    its photos (what a spreadsheet of measured colours holds), and every `image_share`-th photo
    at `image_size` px for the image space (its epochs cost the most)."""
    from raysweep.data.pipeline import load_prepared
    from raysweep.data.prepared import SplitSettings
    from raysweep.synth import ensure_default_dataset

    card = ensure_default_dataset(progress=False)
    images = load_prepared(card, crop="adaptive_bg", size=image_size,
                           split=SplitSettings("tone_id"),
                           progress=False)
    tabular = dataclasses.replace(images, images=None,
                                  info={**images.info, "crop": None, "size": None})
    return tabular, images.subset(np.arange(0, len(images), image_share))


def request_for(space: str, method: str, seed: int, size: Size, data, root: str):
    from raysweep.sweep import spaces
    from raysweep.sweep.spec import Request

    sampler, stopping = METHODS[method]
    # BENCH_<SPACE>_FILE: that space from a file (e.g. its committed version, kept while the
    # working tree's is being edited, so that every seed searches the same space)
    where = os.environ.get(f"BENCH_{space.upper()}_FILE", space)
    # the space's rungs as it resolves them for this budget, as for a user; the candidate's
    # rungs are given as a user would give them (--grace-period, --reduction-factor)
    grace = factor = None
    if stopping == "candidate":
        change, sp = CANDIDATES.get(space, {}), spaces.load_space(where)
        grace = strategy.grace_epochs(size.epochs, change.get("grace_fraction",
                                                              sp.GRACE_FRACTION))
        factor = change.get("reduction_factor", sp.REDUCTION_FACTOR)
    return Request(space=where, data=data, num_samples=size.trials,
                   max_concurrent=size.concurrent, storage=root, seed=seed,
                   name=f"{space}-{seed}-{sampler}-{stopping}",
                   sets=(f"epochs={size.epochs}", *size.sets), searcher=sampler,
                   early_stopping=stopping is not None, grace_period=grace,
                   reduction_factor=factor,
                   brackets=BRACKETS if stopping == "brackets" else None)


@contextlib.contextmanager
def startup_share(space: str, method: str):
    """The candidate's TPE start-up share while its sweep runs: the sampler is built in this
    process (`run_sweep`), from strategy.STARTUP_SHARE, as a changed default would build it."""
    share = CANDIDATES.get(space, {}).get("startup_share") if method == CANDIDATE else None
    before = strategy.STARTUP_SHARE
    strategy.STARTUP_SHARE = share or before
    try:
        yield
    finally:
        strategy.STARTUP_SHARE = before


def history_of(path: str) -> pd.DataFrame:
    """Every epoch result of the sweep at `path`: t (s since its first trial started), val,
    and which trial (numbered by start) at which epoch: random's own curves, to replay ASHA on."""
    frames = [pd.read_csv(p, usecols=["timestamp", "time_total_s", "training_iteration",
                                      "val_de00_mean"]).assign(trial=p.parent.name)
              for p in Path(path).glob("trial_*/progress.csv")]
    h = pd.concat(frames, ignore_index=True)
    began = h["timestamp"] - h["time_total_s"]
    order = began.groupby(h["trial"]).min().rank(method="first").astype(int) - 1
    return pd.DataFrame({"t": h["timestamp"] - began.min(), "val": h["val_de00_mean"],
                         "trial": h["trial"].map(order), "epoch": h["training_iteration"]})


def test_error(checkpoint: str, data) -> float:
    """Mean test dE00 of the champion's best checkpoint (the test split selects nothing)."""
    from raysweep.evaluate.stats import errors_of
    from raysweep.train.predictor import load

    test = data.subset(data.indices("test"))
    return float(errors_of(load(checkpoint, device="cpu").predict(test), test.target)[0].mean())


def one_run(space: str, method: str, seed: int, size: Size, data, root: str) -> dict:
    from raysweep.sweep.run import run_sweep

    t0 = time.time()
    with startup_share(space, method):
        out = run_sweep(request_for(space, method, seed, size, data, root))
    wall = time.time() - t0
    hist = history_of(out.path)
    best = out.table.iloc[0]
    return {"space": space, "method": method, "seed": seed, "wall_s": wall,
            "span_s": float(hist["t"].max()), "epochs_run": int(out.table["epochs_run"].sum()),
            # the first trials' set-up (data, model, threads): the same work for every method
            "first_result_s": float(hist["t"].min()),
            "final_best": float(best[out.metric]),
            "test_de00": test_error(best["checkpoint"], data), "history": hist}


def measure(quick: bool, log: Path) -> pd.DataFrame:
    """Every (space, seed, method) run, seed-major; each run appended to `log` as it ends."""
    import ray

    size = sizes(quick)
    tabular, images = datasets(image_size=16, image_share=image_share())
    data = {"tabular": tabular, "quickstart": images}
    seeds, spaces, names = seeds_asked(quick), spaces_asked(), methods_asked()
    root = tempfile.mkdtemp(prefix="raysweep-bench-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # scratch sweeps and MLflow store
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root}/bench.db")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    runs = []
    try:
        for space in spaces:
            sz = dataclasses.replace(size[space], sets=(*size[space].sets, "image_size=16")) \
                if space == "quickstart" else size[space]
            for seed in seeds:
                for k in range(len(names)):  # rotated, so no method always runs first
                    method = names[(k + seed) % len(names)]
                    r = one_run(space, method, seed, sz, data[space], root)
                    runs.append(r)
                    with open(log, "a") as fh:
                        fh.write(json.dumps({**r, "history": r["history"].to_dict("list")}) + "\n")
    finally:
        ray.shutdown()
    return pd.DataFrame(runs)


def seeds_asked(quick: bool) -> range:
    """BENCH_SEEDS seeds (default 5, quick 2) from BENCH_FIRST_SEED (default 0): a run in parts
    (seeds 0-2, then 3-4) keeps each locked run short."""
    first = int(os.environ.get("BENCH_FIRST_SEED", 0))
    return range(first, first + int(os.environ.get("BENCH_SEEDS", 2 if quick else 5)))


def spaces_asked() -> list[str]:
    return os.environ.get("BENCH_SPACES", "tabular,quickstart").split(",")


def methods_asked() -> list[str]:
    """BENCH_METHODS (comma-separated names of METHODS; default all of them, BASELINE first)."""
    asked = [m.strip() for m in os.environ.get("BENCH_METHODS", ",".join(METHODS)).split(",")]
    unknown = [m for m in asked if m not in METHODS]
    if unknown or BASELINE not in asked:
        raise SystemExit(f"BENCH_METHODS={os.environ.get('BENCH_METHODS')!r}: unknown "
                         f"{unknown} or no {BASELINE!r} (the yardstick); the methods are "
                         f"{', '.join(METHODS)}")
    return asked


def load_log(path: Path) -> pd.DataFrame:
    """The runs a measurement appended to `path` (all of them, or those it finished)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        r["history"] = pd.DataFrame(r["history"])
    return pd.DataFrame(rows)


def from_log(quick: bool, name: str = "search_efficiency") -> Section:
    """The section again from the kept runs, without measuring (`--from-log`)."""
    runs = load_log(result_path(name, quick, ".runs.jsonl"))
    return section(runs, quick, sizes(quick), float("nan"), logged_methods(runs), name=name,
                   candidates=CANDIDATES)


def logged_methods(runs: pd.DataFrame) -> list[str]:
    """The methods the runs hold, in METHODS' order (a run may measure some of them)."""
    return [m for m in METHODS if m in set(runs["method"])]


def forget(log: Path, spaces: list[str], seeds: range, methods: list[str] | None = None) -> None:
    """Drop the runs of `spaces` x `seeds` (x `methods`, None: all) from `log` before they are
    measured again; other spaces' and seeds' runs stay (`BENCH_SPACES=quickstart` then
    `BENCH_SPACES=tabular`, or seeds 0-2 then 3-4, build one section from all of them)."""
    if not log.exists():
        return
    def again(row: dict) -> bool:
        return row["space"] in spaces and row["seed"] in seeds and (
            methods is None or row["method"] in methods)
    kept = [line for line in log.read_text().splitlines()
            if line.strip() and not again(json.loads(line))]
    log.write_text("".join(f"{line}\n" for line in kept))


def run(quick: bool = False, name: str = "search_efficiency") -> Section:
    """Measure, keeping every run in results/<name>[_quick].runs.jsonl as it ends; the section
    covers every space in that file."""
    log = result_path(name, quick, ".runs.jsonl")
    forget(log, spaces_asked(), seeds_asked(quick), methods_asked())
    t = time.time()
    measure(quick, log)
    runs = load_log(log)
    return section(runs, quick, sizes(quick), time.time() - t, logged_methods(runs), name=name,
                   candidates=CANDIDATES)


def run_name() -> str:
    """search_efficiency, or e.g. search_efficiency_tabular100 when BENCH_TABULAR_EPOCHS=100
    changes a budget (search_efficiency_quickstartx48 when BENCH_QUICKSTART_TRIALS=48): a run
    at another size keeps its own result files."""
    changed = []
    for space in ("tabular", "quickstart"):
        for var, mark in (("EPOCHS", ""), ("TRIALS", "x")):
            if f"BENCH_{space.upper()}_{var}" in os.environ:
                changed.append(f"{space}{mark}{os.environ[f'BENCH_{space.upper()}_{var}']}")
    return "_".join(["search_efficiency", *changed])


if __name__ == "__main__":
    bench_main(run_name(), functools.partial(run, name=run_name()), {"--from-log": (
        functools.partial(from_log, name=run_name()),
        "rebuild the section from the recorded runs, training nothing")})
