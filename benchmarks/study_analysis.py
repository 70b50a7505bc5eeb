"""The study's analysis: picking by validation, paired effects, verdicts, tables and the figure.

Everything here works on the summary and per-photo errors that `raysweep.eval_winners` returns,
so it is tested on canned numbers (tests/test_benchmarks_run.py) without training anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

N_BOOT = 2000


def ratio_ci(num: np.ndarray, den: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """mean(num) / mean(den) with a paired percentile-bootstrap interval (same photo draws)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(N_BOOT, len(num)))
    reps = num[idx].mean(1) / den[idx].mean(1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return float(num.mean() / den.mean()), float(lo), float(hi)


def best(models: pd.DataFrame, **where) -> pd.Series | None:
    """The model with the best VALIDATION dE00 among those matching `where` (callables or values)."""
    m = models
    for key, want in where.items():
        m = m[m[key].map(want)] if callable(want) else m[m[key] == want]
    return None if m.empty else m.sort_values("val_de00_mean").iloc[0]


def has_meta(features: str) -> bool:
    return "meta" in features.split("+")


def effects(models: pd.DataFrame, errs: dict) -> pd.DataFrame:
    """Paired bootstrap of mean dE00, A - B on the same test photos (negative: A is better)."""
    from raysweep.evaluate.stats import paired_bootstrap

    pairs = []
    for crop in ("adaptive_bg", "adaptive_nobg"):
        c = {"crop": crop}
        pairs += [
            (f"metadata, {crop}: best image+meta vs image", best(models, features="image+meta", **c),
             best(models, features="image", **c)),
            (f"metadata on top of the patch mean, {crop}: best image+mean+meta vs best image+mean",
             best(models, features="image+mean+meta", **c), best(models, features="image+mean", **c)),
            (f"any metadata, {crop}: best with meta vs best without",
             best(models, features=has_meta, **c),
             best(models, features=lambda f: not has_meta(f), **c))]
    pairs += [("background: best adaptive_bg vs best adaptive_nobg",
               best(models, crop="adaptive_bg"), best(models, crop="adaptive_nobg")),
              ("background, image only", best(models, crop="adaptive_bg", features="image"),
               best(models, crop="adaptive_nobg", features="image"))]
    for other in ("concat", "film", "none"):
        pairs.append((f"fusion: best xattn vs best {other}", best(models, fusion="xattn"),
                      best(models, fusion=other)))
    rows = [{"question": q, "a": a["model"], "b": b["model"],
             **paired_bootstrap(errs[a["model"]], errs[b["model"]], "mean", N_BOOT, 0)}
            for q, a, b in pairs if a is not None and b is not None]
    # Interaction: (meta - image) without background minus (meta - image) with background.
    d = {}
    for crop in ("adaptive_bg", "adaptive_nobg"):
        a, b = best(models, features="image+meta", crop=crop), best(models, features="image", crop=crop)
        if a is not None and b is not None:
            d[crop] = errs[a["model"]] - errs[b["model"]]
    if len(d) == 2:
        rows.append({"question": "interaction: metadata effect without background minus with",
                     "a": "(image+meta - image) nobg", "b": "(image+meta - image) bg",
                     **paired_bootstrap(d["adaptive_nobg"], d["adaptive_bg"], "mean", N_BOOT, 0)})
    return pd.DataFrame(rows)


def verdict(lo: float, hi: float, expect_negative: bool = True) -> str:
    if hi < 0 or lo > 0:
        agrees = (hi < 0) == expect_negative
        return "agrees" if agrees else "disagrees"
    return "inconclusive (interval includes 0)"


def fusion_verdict(eff: pd.DataFrame) -> tuple[str, str]:
    """Is xattn the best fusion? Only if its best beats the best of EVERY other fusion."""
    rows = eff[eff["question"].str.startswith("fusion: best xattn vs best ")]
    if rows.empty:
        return "not measured", "-"
    other = rows["question"].str.removeprefix("fusion: best xattn vs best ")
    text = "; ".join(f"xattn - {o} {r['diff']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]"
                     for o, (_, r) in zip(other, rows.iterrows()))
    beaten = [o for o, lo in zip(other, rows["lo"]) if lo > 0]
    ties = [o for o, lo, hi in zip(other, rows["lo"], rows["hi"]) if lo <= 0 <= hi]
    if beaten:
        return text, f"disagrees ({', '.join(beaten)} beat xattn)"
    if ties:
        return text, f"inconclusive (xattn ties {', '.join(ties)})"
    return text, "agrees"


def ci(row, key: str = "mean") -> str:
    return f"{row[key]:.2f} [{row[key + '_lo']:.2f}, {row[key + '_hi']:.2f}]"


def floor_table(floors: pd.DataFrame, knows: dict[str, str], winner_mean: float) -> pd.DataFrame:
    """One row per floor: its test mean with interval, winner / floor, what it knows."""
    return pd.DataFrame([{"floor": r["model"], "test mean [95% CI]": ci(r),
                          "winner / floor": f"{winner_mean / r['mean']:.1f}x",
                          "what it knows": knows.get(r["model"], "")}
                         for _, r in floors.iterrows()],
                        columns=["floor", "test mean [95% CI]", "winner / floor", "what it knows"])


def yardstick_table(table: pd.DataFrame) -> pd.DataFrame:
    """raysweep.evaluate.yardsticks output as shown: baselines by mean, then floors."""
    t = table.sort_values(["kind", "mean"])
    return pd.DataFrame({"yardstick": t["model"], "kind": t["kind"],
                         "test mean [95% CI]": t.apply(ci, axis=1),
                         "median [95% CI]": t.apply(lambda r: ci(r, "median"), axis=1),
                         "what it knows": t["knows"].fillna("")})


def group_table(models: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for dim in ("fusion", "features", "crop"):
        for value, g in models.groupby(dim, sort=True):
            b = g.sort_values("val_de00_mean").iloc[0]
            rows.append({"group": f"{dim}={value}", "cells": len(g),
                         "best by val": f"{b['fusion']}/{b['features']}/{b['crop']}",
                         "val mean": f"{b['val_de00_mean']:.2f}", "test mean [95% CI]": ci(b),
                         "test median": ci(b, "median"), "test p95": ci(b, "p95"),
                         "median of cells' test means": f"{g['mean'].median():.2f}"})
    return pd.DataFrame(rows)


def plot(models: pd.DataFrame, lines: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, crop in zip(axes, ("adaptive_bg", "adaptive_nobg")):
        m = models[models["crop"] == crop].sort_values(["features", "fusion"])
        x = np.arange(len(m))
        err = np.vstack([m["mean"] - m["mean_lo"], m["mean_hi"] - m["mean"]])
        colors = {"none": "grey", "concat": "C0", "film": "C1", "xattn": "C2"}
        ax.bar(x, m["mean"], yerr=err, color=[colors[f] for f in m["fusion"]], capsize=2)
        ax.set_xticks(x, [f"{f}\n{fu}" for f, fu in zip(m["features"], m["fusion"])],
                      rotation=90, fontsize=7)
        for (name, y), ls in zip(lines.items(), ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)))):
            ax.axhline(y, color="k", lw=0.8, ls=ls, label=f"{name} {y:.2f}")
        ax.set_title(crop)
    axes[0].set_ylabel("test mean dE00 (95% CI)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(df: pd.DataFrame) -> str:
    def cell(v) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v).replace("|", "/")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + " --- |" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |"
                              for r in df.itertuples(index=False)])
