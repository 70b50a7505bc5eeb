"""Predictions a user can trust: coverage and sharpness of the dE00 bound, and the OOD flags.

A small champion (tinycnn, image+mean+meta, concat) is trained with `raysweep.train.fit` on the
default synthetic dataset; its bound is calibrated on the validation split (split-conformal,
scaled by a difficulty model fitted on half of it) and checked on the test split, which nothing
tuned: coverage overall and per camera, ITA group and session, the bound's median against the
champion's median error, and how often the OOD flags fire on in-distribution test photos. Each
camera is then held out of the training ranges in turn, and its test photos should be flagged.

    python -m benchmarks.trust [--quick]
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import Section, load_note, machine, md_table
from benchmarks import main as bench_main

LEVEL = 0.9
CROP, SIZE = "adaptive_bg", 64
TARGETS = "coverage 87-93% overall, >= 85% per camera and ITA group with >= 30 photos; " \
          "median bound <= 2.5x median error; OOD flags on >= 95% of a held-out camera's " \
          "photos and < 5% of in-distribution test photos"


def synth_state() -> str:
    from raysweep.synth import GENERATOR_VERSION

    root = Path(__file__).resolve().parent.parent
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "raysweep/synth"], cwd=root,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty, commit = "", "?"
    where = f"at commit {commit}" if commit else "outside a git checkout"
    # a run from a copy of the tree (e.g. the committed generator while someone edits it) says so
    note = os.environ.get("RAYSWEEP_SYNTH_NOTE", "")
    return f"generator version {GENERATOR_VERSION} {where}" + \
        (" with uncommitted changes in raysweep/synth" if dirty else "") + (f" ({note})" if note else "")


def _fit_and_assess(card, seed: int, epochs: int, tmp: str):
    """Train the small champion on split `seed`, calibrate on validation, assess on test."""
    from raysweep.data.pipeline import load_prepared
    from raysweep.data.prepared import SplitSettings
    from raysweep.evaluate import coverage
    from raysweep.serve import bounds
    from raysweep.train import predictor
    from raysweep.train.loop import fit

    data = load_prepared(card, crop=CROP, size=SIZE, split=SplitSettings(seed=seed),
                         progress=False)
    cfg = dict(backbone="tinycnn", image_size=SIZE, epochs=epochs, batch_size=64,
               features="image+mean+meta", fusion="concat", device="cpu", seed=seed)
    res = fit(cfg, data, checkpoint_dir=str(Path(tmp) / f"ckpt{seed}"))
    model = predictor.load(res.checkpoint_dir, device="cpu")
    val, test = data.subset(data.indices("val")), data.subset(data.indices("test"))
    train = data.subset(data.indices("train"))
    cal = bounds.calibrate(val, model.predict(val), train, level=LEVEL,
                           cameras=list(model.stats.cameras), seed=seed)
    a = coverage.assess(cal, test, model.predict(test), n_boot=1000, seed=seed)
    return data, model, res, cal, a


def _tones(data, split: str) -> str:
    from raysweep.evaluate.breakdowns import skin_tone

    t = pd.Series(skin_tone(data.target[data.split == split])).value_counts()
    return ", ".join(f"{k} {v}" for k, v in t.items())


def _seed_row(seed: int, data, res, a) -> dict:
    t = a.table
    big = t[t["dimension"].isin(["camera", "skin_tone"]) & t["enough"]]
    # a small (quick) test split may hold no group of 30 photos: then there is no lowest group
    lowest = ("none of 30 photos" if big.empty else
              (lambda w: f"{w['group']} {w['coverage']:.1%}")(big.sort_values("coverage").iloc[0]))
    return {"split seed": seed, "val dE00": f"{res.best.get('val_de00_mean', float('nan')):.2f}",
            "coverage": f"{t.iloc[0]['coverage']:.1%}",
            "lowest group (n >= 30)": lowest,
            "bound / error medians": f"{t.iloc[0]['median_bound'] / t.iloc[0]['median_error']:.2f}x",
            "val ITA groups (photos)": _tones(data, "val"),
            "test ITA groups (photos)": _tones(data, "test")}


def measure(quick: bool = False, seed: int = 0, more_seeds: tuple[int, ...] = ()) -> dict:
    from raysweep.serve import bounds, ood
    from raysweep.synth import ensure_default_dataset

    t0 = time.time()
    shape = dict(sets=6, tones=60) if quick else {}
    card = ensure_default_dataset(progress=False, **shape)
    epochs = 6 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        data, predictor, res, cal, a = _fit_and_assess(card, seed, epochs, tmp)
        train_s = time.time() - t0
        val, test = data.subset(data.indices("val")), data.subset(data.indices("test"))
        train = data.subset(data.indices("train"))
        seeds = [_seed_row(seed, data, res, a)]
        for s in more_seeds:  # other splits: how much coverage moves with the tones drawn
            seeds.append(_seed_row(s, *(lambda r: (r[0], r[2], r[4]))(
                _fit_and_assess(card, s, epochs, tmp))))
        constant = bounds.calibrate(val, predictor.predict(val), train, level=LEVEL,
                                    scaled=False, seed=seed)
        const_cov = float(np.mean(a.error <= constant.quantile()))
        # a camera held out of training: the training ranges (camera vocabulary, metadata,
        # backgrounds) as a champion trained without that camera's photos would store them
        held = []
        for cam in sorted(set(data.camera)):
            ranges = ood.fit_ranges(train.subset(np.flatnonzero(train.camera != cam)))
            hf = ood.flag(test.subset(np.flatnonzero(test.camera == cam)), ranges)
            rest = ood.flag(test.subset(np.flatnonzero(test.camera != cam)), ranges)
            others = [f for f in ood.FLAGS if f != "unseen_camera"]
            held.append({"held-out camera": cam, "its test photos": len(hf),
                         "flagged": f"{hf[list(ood.FLAGS)].any(axis=1).mean():.1%}",
                         "flagged other than by camera id":
                             f"{hf[others].any(axis=1).mean():.1%}",
                         "other cameras' test photos flagged":
                             f"{rest[list(ood.FLAGS)].any(axis=1).mean():.1%}",
                         "_any": float(hf[list(ood.FLAGS)].any(axis=1).mean())})
    return {"a": a, "cal": cal, "val_best": res.best, "epochs": epochs, "n": len(data),
            "n_test": len(test), "train_s": train_s, "const_cov": const_cov,
            "const_bound": constant.quantile(), "held": pd.DataFrame(held),
            "seeds": pd.DataFrame(seeds),
            "wall_s": time.time() - t0,
            "synth": synth_state(), "shape": shape or "default (15 sets x 138 tones, 3 cameras)"}


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "MISSED")


def run(quick: bool = False) -> Section:
    from raysweep.evaluate import coverage
    from raysweep.serve import ood

    m = measure(quick, more_seeds=() if quick else (1, 2))
    a, cal = m["a"], m["cal"]
    t = a.table
    overall = t.iloc[0]
    big = t[(t["dimension"].isin(["camera", "skin_tone"])) & t["enough"]]
    ratio = overall["median_bound"] / overall["median_error"]
    anyflag = float(a.flags[list(ood.FLAGS)].any(axis=1).mean())
    held = m["held"]
    held_any = float(held["_any"].min())
    checks = [
        (f"coverage overall {overall['coverage']:.1%} (target 87-93%)",
         0.87 <= overall["coverage"] <= 0.93),
        ("lowest camera / ITA group coverage (n >= 30): no group of 30 test photos"
         if big.empty else f"lowest camera / ITA group coverage (n >= 30) "
         f"{big['coverage'].min():.1%} (target >= 85%)",
         None if big.empty else bool((big["coverage"] >= 0.85).all())),
        (f"median bound / median error {ratio:.2f}x (target <= 2.5x)", ratio <= 2.5),
        (f"held-out camera photos flagged, lowest over cameras {held_any:.1%} (target >= 95%)",
         held_any >= 0.95),
        (f"in-distribution test photos flagged {anyflag:.1%} (target < 5%)", anyflag < 0.05),
    ]
    cmd = "python -m benchmarks.trust" + (" --quick" if quick else "")
    lines = [
        "## Trust in seen sessions: the dE00 bound's coverage and the OOD flags\n",
        "The regime here is SEEN sessions: the split holds out skin tones, so every test photo "
        "comes from a session the model trained on (a fixed lab setup). A photo from a new "
        "session is the `new_sessions` section's case, with the new-session bound.\n",
        f"Dataset: synthetic, {m['shape']}, {m['n']} photos, {m['synth']}. Champion: tinycnn, "
        f"features image+mean+meta, fusion concat, crop {CROP} at {SIZE} px, {m['epochs']} "
        f"epochs with `raysweep.train.fit` on CPU (best validation dE00 "
        f"{m['val_best'].get('val_de00_mean', float('nan')):.2f}). Bound: "
        f"{cal.info['method']} at {cal.level:.0%}, difficulty model fitted on "
        f"{cal.info['n_fit']} validation photos, scores from the other {cal.info['n_cal']}; "
        f"coverage measured on the {m['n_test']} test photos (never used to calibrate).\n",
        f"Targets: {TARGETS}.\n",
        *[f"- {what}: **{_verdict(ok)}**" for what, ok in checks],
        f"- for comparison, a constant bound ({m['const_bound']:.2f} dE00 for every photo) covers "
        f"{m['const_cov']:.1%} at {m['const_bound'] / overall['median_error']:.2f}x the median "
        "error",
        "",
        "### Coverage (test split, 95% bootstrap intervals)\n",
        md_table(coverage.table_for_report(t)) + "\n",
        "### Other splits of the same dataset\n",
        "The conformal guarantee is an average over random splits; with about 20 tones in each "
        "of validation and test, which tones land where moves coverage. Each row is a fresh "
        "champion (same recipe) on another split seed; the ITA groups show what validation "
        "calibrated on and what test asked for.\n",
        md_table(m["seeds"]) + "\n",
        "### Reliability (observed vs nominal level)\n",
        md_table(a.curve.round(3)) + "\n",
        "### OOD flags on in-distribution test photos\n",
        md_table(a.rates.assign(share=a.rates["share"].map(lambda v: f"{v:.1%}"))) + "\n",
        "### A camera held out of training\n",
        "Each camera in turn: the training ranges are fitted on the training photos of the "
        "other cameras (what a champion trained without it would store), then its test photos "
        "are checked. The unseen camera id is what catches them; the column 'other than by "
        "camera id' is what would still catch a photo whose EXIF names no camera.\n",
        md_table(held.drop(columns="_any")) + "\n",
        f"Wall time {m['wall_s']:.0f} s (training and dataset preparation "
        f"{m['train_s']:.0f} s). {load_note()}.\n",
        f"Command: `{cmd}`",
    ]
    return Section("\n".join(lines) + "\n", {
        "checks": [{"check": what, "met": ok} for what, ok in checks], "coverage": t,
        "reliability": a.curve, "other_splits": m["seeds"], "ood_rates": a.rates, "held_out_camera": held.drop(columns="_any"),
        "wall_s": m["wall_s"], "machine": machine()})


if __name__ == "__main__":
    bench_main("trust", run)
