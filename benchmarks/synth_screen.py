"""What decides the order of gradient boosting and the per-session regression on the synthetic
tabular export (issue 27): candidate changes to the default set, screened against that order.

On real phone photos gradient boosting wins (3.26 / 3.97 = 0.82); on the default synthetic set
the per-session regression does (`python -m benchmarks.synth_gap`: its edge is L* alone, and
gradient boosting given the photo's own light reaches parity). Each row here changes one thing
and measures the order again (held-out tones, every session seen, as `--calibrate` does):

- light layouts (the default set re-rendered with every session's illuminance replaced;
  nothing else drawn differs): one illuminance for every session, or the sessions' log
  illuminance pulled toward 400 lux, which keeps their order but narrows their spread;
- per-frame effects a phone records nowhere, applied to the default set's numbers without
  re-rendering: the written exposure (time x ISO) below the one the image shows by |N(0, s)| EV
  (a multi-frame merge that writes one frame's settings), or the patch's light scaled by an
  unrecorded gain of N(0, s) EV (per-frame tone mapping / digital gain).

`light spread` is, per camera, the standard deviation across its sessions of the session's
median log2(exposure time x ISO): the statistic the real reference does not give, and the one the
order turns on. `rows passed` counts the other calibration rows (of 18) in their bands.

    python -m benchmarks.synth_screen [--quick]   # --quick: split seed 0 only (else 0, 1, 2)
"""

from __future__ import annotations

import copy
import multiprocessing as mp

import colour
import numpy as np
import pandas as pd

from benchmarks import Section, describe_machine, load_note, md_table
from benchmarks import main as bench_main
from raysweep.data.splits import assign
from raysweep.evaluate.baselines import run_baselines
from raysweep.evaluate.stats import errors_of
from raysweep.synth.__main__ import SPLIT_SEEDS, tabular_export
from raysweep.synth.calibration import calibrate
from raysweep.synth.context import GeneratorConfig, build_context
from raysweep.synth.measure import decode_rgb, naive_lab
from raysweep.synth.render import render

LAYOUTS = {  # session illuminance (lux, per session) -> the replacement
    "default set": None,
    "one illuminance (500 lux) for every session": lambda lux: np.full_like(lux, 500.0),
    "log illuminance spread x0.5 (about 400 lux)": lambda lux: 400.0 * (lux / 400.0) ** 0.5,
    "log illuminance spread x0.25 (about 400 lux)": lambda lux: 400.0 * (lux / 400.0) ** 0.25,
}
SIGMA_EV = 0.3
_CTX = None


def _init(ctx) -> None:
    global _CTX
    _CTX = ctx


def _rows(items: list[tuple[int, int]]) -> list[tuple[dict, np.ndarray]]:
    out = []
    for s, t in items:
        data, row = render(_CTX, s, t)
        out.append((row, naive_lab(decode_rgb(data), row)))
    return out


def render_layout(relight, workers: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    """The default set's manifest and naive Lab, its sessions' illuminance replaced by relight."""
    ctx = build_context(GeneratorConfig())
    if relight is not None:
        ctx = copy.copy(ctx)
        ctx.sets = [copy.copy(s) for s in ctx.sets]
        new = relight(np.array([s.lux for s in ctx.sets]))
        for s, lux in zip(ctx.sets, new):
            s.lux = float(lux)
    items = [(s, t) for s in range(ctx.cfg.sets) for t in range(ctx.cfg.tones)]
    chunks = [items[i : i + 23] for i in range(0, len(items), 23)]
    with mp.get_context("spawn").Pool(workers, _init, (ctx,)) as pool:
        rows = [r for part in pool.map(_rows, chunks) for r in part]
    return pd.DataFrame([r for r, _ in rows]), np.array([m for _, m in rows])


def exposure_written_low(frame, measured, rng):
    out = frame.copy()
    out["exposure_time_s"] = out["exposure_time_s"] * 2.0 ** -np.abs(rng.normal(0, SIGMA_EV, len(out)))
    return out, measured


def unrecorded_gain(frame, measured, rng):
    xyz = colour.Lab_to_XYZ(measured) * (2.0 ** rng.normal(0, SIGMA_EV, len(frame)))[:, None]
    return frame, colour.XYZ_to_Lab(xyz)


EMULATIONS = {f"written exposure low by |N(0, {SIGMA_EV})| EV": exposure_written_low,
              f"unrecorded per-frame gain N(0, {SIGMA_EV}) EV": unrecorded_gain}


def light_spread(frame: pd.DataFrame) -> str:
    med = (np.log2(frame["exposure_time_s"] * frame["iso"])
           .groupby([frame["camera"], frame["set_id"]]).median())
    return ", ".join(f"{c} {v:.1f}" for c, v in med.groupby(level=0).std().items())


def score(frame: pd.DataFrame, measured: np.ndarray, seeds) -> dict:
    """Mean test dE00 and RMS L* of both baselines over the split seeds, and the other rows."""
    acc = {"gbm": [], "per_session": []}
    for seed in seeds:
        data = tabular_export(frame, measured, assign(frame, "tone_id", seed=seed))
        train, test = data.subset(data.indices("train")), data.subset(data.indices("test"))
        preds, _ = run_baselines(train, test, list(acc))
        for name, pred in preds.items():
            acc[name].append([float(np.mean(errors_of(pred, test.target)[0])),
                              float(np.sqrt(np.mean((pred[:, 0] - test.target[:, 0]) ** 2)))])
    gbm, ps = np.mean(acc["gbm"], 0), np.mean(acc["per_session"], 0)
    rows = calibrate(frame, measured)
    return {"gbm": gbm[0], "per_session": ps[0], "gbm / per_session": gbm[0] / ps[0],
            "RMS L* gbm": gbm[1], "RMS L* per_session": ps[1],
            "light spread (EV)": light_spread(frame),
            "rows passed": f"{sum(r.passed for r in rows)} of {len(rows)}"}


def run(quick: bool = False) -> Section:
    seeds = SPLIT_SEEDS[:1] if quick else SPLIT_SEEDS
    table, base = [], None
    for name, relight in LAYOUTS.items():
        frame, measured = render_layout(relight)
        base = base or (frame, measured)
        table.append({"change": name, **score(frame, measured, seeds)})
    for name, emulate in EMULATIONS.items():
        frame, measured = emulate(*base, np.random.default_rng(5))
        table.append({"change": name, **score(frame, measured, seeds)})
    frame = pd.DataFrame(table)
    lines = [
        "## Synthetic data: what decides the order of gradient boosting and the per-session "
        "regression",
        "",
        f"Default synthetic set (generator {GeneratorConfig().version}) and changes to it "
        "(definitions in the module's docstring); tabular export without ring columns, held-out "
        f"tones, split seeds {', '.join(map(str, seeds))}, mean test dE00. Real phone photos: "
        "3.26 / 3.97 = 0.82 (band 0.64 .. 1.00).",
        "",
        md_table(frame),
        "",
        f"Machine: {describe_machine()}; {load_note()}.",
        "",
        f"Command: `python -m benchmarks.synth_screen{' --quick' if quick else ''}`",
    ]
    return Section("\n".join(lines), {"table": frame, "seeds": list(seeds)})


if __name__ == "__main__":
    bench_main("synth_screen", run)
