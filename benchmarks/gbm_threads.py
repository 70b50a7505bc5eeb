"""Gradient-boosting fit time with sklearn's default OpenMP threads against one thread
(`raysweep.models.gbm.one_openmp_thread`), on an idle machine and on one whose cores
are all kept busy (as Ray's trials or a second evaluation keep them).

One fit is one Lab channel of `gbm_context` as eval_winners fits it (raysweep's parameters; a
matrix shaped like the default dataset's training split: 1,600 rows, 21 columns, the last a
camera category). Each fit runs in a child process with a time limit, alternating the two
settings; the busy cores are pure-Python spin loops, one per core.

    python -m benchmarks.gbm_threads [--quick]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time

import pandas as pd

from benchmarks import Section, describe_machine, load_note, machine, md_table
from benchmarks import main as bench_main

ROWS, COLS = 1600, 21
LIMIT_S = {True: 60, False: 300}

CHILD = """
import sys, time
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from raysweep.models.gbm import GradientBoosted, one_openmp_thread
rng = np.random.default_rng(0)
x = rng.normal(size=({rows}, {cols}))
x[:, -1] = rng.integers(0, 3, {rows})
y = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(size={rows})
cat = np.zeros({cols}, bool); cat[-1] = True
model = HistGradientBoostingRegressor(categorical_features=cat, **GradientBoosted().params)
t = time.perf_counter()
if sys.argv[1] == "one":
    with one_openmp_thread():
        model.fit(x, y)
else:
    model.fit(x, y)
print(time.perf_counter() - t)
"""


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def _fit_s(threads: str, limit: float) -> float:
    code = CHILD.format(rows=ROWS, cols=COLS)
    # "default" is sklearn's own choice (one thread per core): no inherited OMP_NUM_THREADS
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    try:
        out = subprocess.run([sys.executable, "-c", code, threads], capture_output=True,
                             text=True, timeout=limit, check=True, env=env)
    except subprocess.TimeoutExpired:
        return float("inf")
    return float(out.stdout.strip().splitlines()[-1])


def _measure(repeats: int, limit: float) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {"default": [], "one": []}
    for _ in range(repeats):
        for threads in got:
            got[threads].append(_fit_s(threads, limit))
    return got


def run(quick: bool = False) -> Section:
    repeats, limit = (2, LIMIT_S[True]) if quick else (3, LIMIT_S[False])
    rows = []
    for load in ("idle", "every core busy"):
        stop = mp.Event()
        burners = [mp.Process(target=_spin, args=(stop,), daemon=True)
                   for _ in range(os.cpu_count() or 1)] if load != "idle" else []
        for p in burners:
            p.start()
        time.sleep(0.5 if burners else 0)
        try:
            got = _measure(repeats, limit)
        finally:
            stop.set()
            for p in burners:
                p.join(timeout=10)
        med = {k: statistics.median(v) for k, v in got.items()}
        rows.append({"machine": load, "default threads s (median)": med["default"],
                     "one thread s (median)": med["one"],
                     "default / one": med["default"] / med["one"],
                     "default runs s": ", ".join(f"{v:.2f}" for v in got["default"]),
                     "one-thread runs s": ", ".join(f"{v:.2f}" for v in got["one"])})
    cmd = "python -m benchmarks.gbm_threads" + (" --quick" if quick else "")
    return Section(data={"rows": rows, "repeats": repeats, "limit_s": limit,
                         "machine": machine()}, markdown="\n".join([
        "## Gradient boosting: sklearn's OpenMP threads against one thread\n",
        f"One `HistGradientBoostingRegressor` fit with raysweep's `gbm` parameters on {ROWS} x "
        f"{COLS} (last column categorical), in a child process; {repeats} alternating repeats "
        f"per setting, median; a fit over {limit} s is stopped and shows as inf. \"every core "
        "busy\": one pure-Python spin loop per core while the fits run. raysweep fits its "
        "gradient-boosting families on one thread (`models.gbm.one_openmp_thread`).\n",
        md_table(pd.DataFrame(rows)), "",
        f"Machine: {describe_machine()}; {load_note()}.\n", f"Command: `{cmd}`\n"]))


if __name__ == "__main__":
    bench_main("gbm_threads", run)
