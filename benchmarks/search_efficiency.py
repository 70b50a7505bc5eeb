"""How much of a sweep's wall time is training, and does TPE + ASHA beat random search?

Three sweeps of the `quickstart` space on a synthetic dataset, on the CPUs of the machine it runs on:

1. TPE + ASHA, one trial at a time: the per-trial fixed cost, (wall - training) / trials,
   where training = the sum over every epoch the sweep ran of that model's solo epoch time.
2. TPE + ASHA, trials at once as the resources allow (the default): the useful-work ratio
   (the same sum / sweep wall time; above 1 means packing beats running the epochs back to back).
3. Random search without early stopping, same trial budget and concurrency as 2: best
   validation dE00 over wall time against 2 (a plot), and the time each takes to reach a target.

Solo epoch times are measured in the same run, alone, with `raysweep.train.fit` in this process
(1 thread, like one trial), second epoch (warm).

    python -m benchmarks.search_efficiency            # full
    python -m benchmarks.search_efficiency --quick    # fewer trials
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import RESULTS, Section, describe_machine, load_note, machine, md_table, result_path
from benchmarks import main as bench_main

SPACE = "quickstart"
MAX_EPOCHS, GRACE_PERIOD = 6, 1


def bench_dataset() -> Path:
    """A mid-sized synthetic set (6 sets x 60 tones = 360 photos), cached between runs."""
    from raysweep.synth.context import GeneratorConfig
    from raysweep.synth.generate import CARD, generate

    out = Path(os.environ.get("RAYSWEEP_CACHE", "~/.cache/raysweep")).expanduser() / "bench-synth"
    if not (out / CARD).exists():
        generate(out, GeneratorConfig(sets=6, tones=60, size=64), progress=False)
    return out / CARD


def solo_epoch_s(configs: list[dict], card: Path) -> dict[str, float]:
    """Warm epoch time of each distinct model config, trained alone in this process."""
    import torch

    from raysweep.config import TrainConfig
    from raysweep.data.pipeline import load_prepared
    from raysweep.train.loop import fit

    torch.set_num_threads(1)
    out = {}
    for cfg in configs:
        key = model_key(cfg)
        if key in out:
            continue
        tc = TrainConfig.from_dict({**{k: v for k, v in cfg.items()
                                       if k in TrainConfig.field_names()}, "epochs": 2})
        data = load_prepared(card, crop=tc.crop, size=tc.image_size, progress=False)
        history = fit(tc, data).history
        out[key] = float(history[-1]["epoch_s"])
    return out


def model_key(cfg: dict) -> str:
    return f"{cfg['backbone']}/{cfg['features']}/{cfg.get('width')}/{cfg.get('batch_size')}"


def sweep(card: Path, root: str, name: str, n: int, concurrent: int | None, searcher: str,
          early: bool) -> tuple[float, pd.DataFrame, pd.DataFrame]:
    from raysweep.sweep.run import run_sweep
    from raysweep.sweep.spec import Request

    t0 = time.time()
    # Pinned, so the numbers do not move when the quickstart demo's epoch budget does.
    out = run_sweep(Request(space=SPACE, data=str(card), num_samples=n, max_concurrent=concurrent,
                            storage=root, name=name, seed=0, searcher=searcher,
                            early_stopping=early, sets=(f"epochs={MAX_EPOCHS}",),
                            grace_period=GRACE_PERIOD))
    wall = time.time() - t0
    sweep.tracking_s[name] = out.tracking_s
    frames = []
    for progress in Path(out.path).glob("trial_*/progress.csv"):
        df = pd.read_csv(progress)
        frames.append(df[["timestamp", "time_total_s", "val_de00_mean", "trial_id"]])
    history = pd.concat(frames, ignore_index=True)
    return wall, out.table, history


sweep.tracking_s = {}


def span(history: pd.DataFrame) -> float:
    """From the first trial's start to the last result: the sweep without its setup."""
    return float(history["timestamp"].max() - (history["timestamp"] - history["time_total_s"]).min())


def useful_seconds(table: pd.DataFrame, solo: dict[str, float]) -> float:
    import json

    return float(sum(solo[model_key(json.loads(row.config))] * row.epochs_run
                     for row in table.itertuples()))


def best_curve(history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    start = (history["timestamp"] - history["time_total_s"]).min()
    h = history.sort_values("timestamp")
    return (h["timestamp"] - start).to_numpy(), np.minimum.accumulate(h["val_de00_mean"].to_numpy())


def time_to(curve: tuple[np.ndarray, np.ndarray], target: float) -> float:
    t, best = curve
    hit = np.flatnonzero(best <= target)
    return float(t[hit[0]]) if len(hit) else float("nan")


def run(quick: bool = False) -> Section:
    import ray

    n = 6 if quick else 16
    card = bench_dataset()
    root = tempfile.mkdtemp(prefix="raysweep-bench-")
    # The sweeps' storage and MLflow store are scratch: removed when the interpreter exits.
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root}/bench.db")
    t_init = time.time()
    ray.init(address="local", num_cpus=max(8, os.cpu_count() or 1), include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    t_init = time.time() - t_init
    try:
        wall1, table1, hist1 = sweep(card, root, "serial", n, 1, "tpe", True)
        wall2, table2, hist2 = sweep(card, root, "packed", n, None, "tpe", True)
        wall3, table3, hist3 = sweep(card, root, "random", n, None, "random", False)
    finally:
        ray.shutdown()
    configs = [__import__("json").loads(c) for t in (table1, table2, table3) for c in t["config"]]
    solo = solo_epoch_s(configs, card)
    u1, u2, u3 = (useful_seconds(t, solo) for t in (table1, table2, table3))
    conc = min(n, len(os.sched_getaffinity(0)))
    c2, c3 = best_curve(hist2), best_curve(hist3)
    target = max(c2[1][-1], c3[1][-1])  # a level both reached
    def row(label, table, hist, wall, useful, k, curve, key):
        tune_s = span(hist)
        return (label, n, int(table["epochs_run"].sum()), wall, wall - tune_s, tune_s, useful,
                (tune_s * k - useful) / n, sweep.tracking_s[key] / n,
                table["val_de00_mean"].min(),
                time_to(curve, target) if curve is not None else float("nan"))

    rows = [
        row("TPE + ASHA, 1 at a time", table1, hist1, wall1, u1, 1, None, "serial"),
        row(f"TPE + ASHA, {conc} at a time", table2, hist2, wall2, u2, conc, c2, "packed"),
        row(f"random, no early stopping, {conc} at a time", table3, hist3, wall3, u3, conc, c3,
            "random"),
    ]
    df = pd.DataFrame(rows, columns=["sweep", "trials", "epochs run", "wall s", "setup s",
                                     "trials span s", "solo training s",
                                     "fixed cost s/trial", "MLflow logging s/trial",
                                     "best val dE00", f"s to reach dE00 {target:.3f}"])
    df.insert(7, "useful-work ratio", df["solo training s"] / df["wall s"])
    png = result_path("search_efficiency", quick, ".png").name  # quick never replaces full
    plot(c2, c3, target, RESULTS / png)
    cmd = "python -m benchmarks.search_efficiency" + (" --quick" if quick else "")
    return Section(data={"rows": df, "solo_epoch_s": solo, "target": target,
                         "ray_init_s": t_init, "machine": machine()}, markdown="\n".join([
        "## Search efficiency: fixed cost per trial, useful work, TPE + ASHA vs random",
        "",
        f"Space `{SPACE}` (tinycnn/smallcnn at 32 px, at most {MAX_EPOCHS} epochs, ASHA grace "
        f"period {GRACE_PERIOD}) on a synthetic set of "
        "360 photos (6 sets x 60 tones, 64 px renders); trials run the loop in the Tune trial "
        "process with actor reuse. Wall time is the whole `run_search` call (validation, MLflow "
        f"parent run, cached data, Tune) with Ray already started (ray.init took {t_init:.1f} s). "
        "Setup = the call before the first trial starts and after the last ends (checks, MLflow "
        "parent run, data, ray.put, results); trials span = first trial start to last result. "
        "Fixed cost per trial = (trials span x trials at once - solo training) / trials. Useful-work "
        "ratio = solo training / wall (sum over every epoch run of that model's solo epoch time, "
        "measured alone in this run).",
        "",
        md_table(df),
        "",
        f"Solo warm epoch times: {', '.join(f'{k} {v:.2f} s' for k, v in solo.items())}.",
        "",
        f"![best validation dE00 over wall time]({png})",
        "",
        f"Machine: {describe_machine()}; {load_note()}.",
        "",
        f"Command: `{cmd}`",
    ]))


def plot(tpe, rnd, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step(*tpe, where="post", label="Optuna TPE + ASHA")
    ax.step(*rnd, where="post", label="random, no early stopping")
    ax.axhline(target, color="grey", lw=0.8, ls="--", label=f"target {target:.2f}")
    ax.set_xlabel("wall time since the first trial started (s)")
    ax.set_ylabel("best validation dE00 so far")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    bench_main("search_efficiency", run)
