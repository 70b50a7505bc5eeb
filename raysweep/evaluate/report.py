"""The winners report: Markdown next to its PNGs, and one self-contained HTML file.

The HTML embeds every PNG as base64, so the single file can be mailed, attached to an MLflow run
or opened from a laptop without the folder. Figures are drawn on `matplotlib.figure.Figure` with
the Agg canvas (no pyplot global state, no display needed on a cluster node).
"""

from __future__ import annotations

import base64
import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from raysweep.evaluate import coverage
from raysweep.evaluate.breakdowns import DIMENSIONS
from raysweep.evaluate.markdown import frame_markdown
from raysweep.tracking import importance, importance_plots

YARDSTICKS = ("floor", "reference")  # raysweep.evaluate.floors kinds: not learned models


@dataclass
class ReportInput:
    title: str
    champion: str  # model name whose plots are drawn
    summary: pd.DataFrame  # one row per model: model, kind, mean, mean_lo, ..., de76_mean, ...
    breakdown: pd.DataFrame  # raysweep.evaluate.breakdowns.breakdown() output
    comparisons: pd.DataFrame  # question, a, b, diff, lo, hi, p_value
    target: np.ndarray  # (N, 3) true Lab of the evaluated photos
    preds: dict[str, np.ndarray]  # model -> (N, 3) Lab
    errors: dict[str, np.ndarray]  # model -> (N,) dE00
    context: dict[str, str] = field(default_factory=dict)  # dataset, split, runs, ...
    notes: list[str] = field(default_factory=list)
    trust: object = None  # raysweep.evaluate.coverage.Assessment of the champion's error bound
    floors: dict[str, str] = field(default_factory=dict)  # floor name -> what it knows (one line)
    selection: object = None  # raysweep.evaluate.selection.Selection when leaders were re-scored
    importance: Path | None = None  # the sweep's importance/ folder (raysweep.tracking.importance)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_histogram(inp: ReportInput, path: Path, max_models: int = 4) -> Path:
    """Per-photo dE00 of the champion and its closest rivals, each model's mean with its 95%
    interval marked (a line and a band) on the same axis."""
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    names = _plot_models(inp, max_models)
    hi = max(float(np.percentile(inp.errors[n], 99)) for n in names)
    bins = np.linspace(0, max(hi, 1e-3), 40)
    s = inp.summary.set_index("model")
    for i, name in enumerate(names):
        color = f"C{i}"
        r = s.loc[name]
        ax.hist(inp.errors[name], bins=bins, histtype="step", linewidth=1.6, color=color,
                label=f"{name}: mean {_fmt_ci(r, 'mean')}")
        ax.axvspan(r["mean_lo"], r["mean_hi"], color=color, alpha=0.18, linewidth=0)
        ax.axvline(r["mean"], color=color, linewidth=1.0, linestyle="--")
    ax.set_xlabel("dE00 per photo (dashed: mean; band: its 95% bootstrap CI)")
    ax.set_ylabel("photos")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.18))
    return _save(fig, path)


def _plot_models(inp: ReportInput, max_models: int) -> list[str]:
    """The champion, then the others by mean dE00, with the best baseline always included
    (floors are in the tables and the bar chart, not in the per-photo plots)."""
    ranked = inp.summary[~inp.summary["kind"].isin(YARDSTICKS)].sort_values("mean")
    ranked = ranked["model"].tolist()
    names = [inp.champion] + [m for m in ranked if m != inp.champion]
    baselines = inp.summary.loc[inp.summary["kind"] == "baseline"].sort_values("mean")["model"]
    chosen = names[: max_models - 1]
    if len(baselines) and baselines.iloc[0] not in chosen:
        chosen.append(baselines.iloc[0])
    else:
        chosen = names[:max_models]
    return chosen


def grouped_models(inp: ReportInput) -> list[tuple[str, list[str]]]:
    """The models in their groups: learned (the champion first, then by mean), baselines and
    floors (each by mean); empty groups left out."""
    s = inp.summary.sort_values("mean", kind="stable")
    learned = s.loc[~s["kind"].isin(["baseline", *YARDSTICKS]), "model"].tolist()
    if inp.champion in learned:
        learned = [inp.champion] + [m for m in learned if m != inp.champion]
    groups = [("learned", learned), ("baselines", s.loc[s["kind"] == "baseline", "model"].tolist()),
              ("references", s.loc[s["kind"] == "reference", "model"].tolist()),
              ("floor", s.loc[s["kind"] == "floor", "model"].tolist())]
    return [(label, names) for label, names in groups if names]


def _mark_groups(ax, groups: list[tuple[str, list[str]]]) -> None:
    """Lines between the row groups of a model-per-row plot, and each group's name on the right."""
    where = blended_transform_factory(ax.transAxes, ax.transData)
    start = 0
    for label, names in groups:
        end = start + len(names)
        if start:
            ax.axhline(start - 0.5, color="k", linewidth=1.2)
        ax.text(1.01, (start + end - 1) / 2, label, transform=where, rotation=-90,
                va="center", ha="left", fontsize=7, style="italic")
        start = end


def _bold_champion(ax, champion: str) -> None:
    for label in ax.get_yticklabels():
        if label.get_text() == champion:
            label.set_fontweight("bold")


def plot_model_bars(inp: ReportInput, path: Path) -> Path:
    """Overall mean dE00 per model with its 95% interval, learned models, baselines and floors
    grouped."""
    groups = grouped_models(inp)
    s = inp.summary.set_index("model").loc[[m for _, names in groups for m in names]]
    fig = Figure(figsize=(6.4, 0.35 * len(s) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(s))
    palette = {"baseline": "tab:orange", "floor": "tab:green", "reference": "tab:olive"}
    for kind, rows in s.assign(y=y).groupby("kind", sort=False):
        err = np.vstack([rows["mean"] - rows["mean_lo"], rows["mean_hi"] - rows["mean"]])
        ax.errorbar(rows["mean"], rows["y"], xerr=err, fmt="o", capsize=3, markersize=5,
                    color=palette.get(kind, "tab:blue"))
    if inp.champion in s.index:  # the line to beat
        ax.axvline(s.loc[inp.champion, "mean"], color="tab:blue", linestyle=":", linewidth=1)
    # a log axis: the weakest baselines (~27 dE00) no longer squash the models (~1.3) together
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="x", which="major", linewidth=0.4, alpha=0.6)
    ax.set_yticks(y, s.index, fontsize=7)
    ax.set_ylim(len(s) - 0.5, -0.5)
    _mark_groups(ax, groups)
    _bold_champion(ax, inp.champion)
    ax.set_xlabel("mean dE00, log scale (95% bootstrap CI); champion in bold, dotted")
    return _save(fig, path)


def plot_group_bars(inp: ReportInput, path: Path, max_models: int = 3) -> Path:
    """Per-group mean dE00 with intervals, one panel per dimension."""
    names = _plot_models(inp, max_models)
    b = inp.breakdown[inp.breakdown["model"].isin(names)]
    dims = [d for d in DIMENSIONS if d in set(b["dimension"])]
    fig = Figure(figsize=(6.4, 2.4 * max(len(dims), 1)))
    width = 0.8 / len(names)
    for i, dim in enumerate(dims):
        ax = fig.add_subplot(len(dims), 1, i + 1)
        d = b[b["dimension"] == dim]
        groups = list(dict.fromkeys(d["group"]))
        x = np.arange(len(groups))
        for j, name in enumerate(names):
            m = d[d["model"] == name].set_index("group").reindex(groups)
            err = np.vstack([m["mean"] - m["mean_lo"], m["mean_hi"] - m["mean"]])
            ax.bar(x + j * width, m["mean"], width, yerr=err, capsize=2, label=name)
        ax.set_xticks(x + width * (len(names) - 1) / 2, groups, fontsize=7, rotation=20)
        ax.set_ylabel(f"{dim}\nmean dE00", fontsize=8)
        if i == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


HEATMAP_CAP = 1.5  # the colour saturates at 1.5x (or 1/1.5x) the champion's error


def heatmap_cells(inp: ReportInput) -> tuple[list, pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(row groups, mean and CI half-width per model x group, the colour's ratio): each cell's
    mean over the champion's in its column (over the column's best when no champion row)."""
    b = inp.breakdown.assign(column=inp.breakdown["dimension"] + ": " + inp.breakdown["group"],
                             half=(inp.breakdown["mean_hi"] - inp.breakdown["mean_lo"]) / 2)
    groups = [(label, [m for m in names if m in set(b["model"])])
              for label, names in grouped_models(inp)]
    groups = [(label, names) for label, names in groups if names]
    rows = [m for _, names in groups for m in names]
    mean = b.pivot_table(index="model", columns="column", values="mean", sort=False).reindex(rows)
    half = b.pivot_table(index="model", columns="column", values="half", sort=False
                         ).reindex(index=rows, columns=mean.columns)
    values = mean.to_numpy(dtype=float)
    ref = (mean.loc[inp.champion].to_numpy(dtype=float)[None, :] if inp.champion in rows
           else np.nanmin(values, axis=0, keepdims=True))
    return groups, mean, half, values / ref


def plot_heatmap(inp: ReportInput, path: Path) -> Path:
    """Mean dE00 per group (the numbers, with their 95% half-width) for every model, rows grouped
    as learned, baselines, floors. The colour is each cell's error relative to the champion's in
    the same column, on a log scale capped at HEATMAP_CAP: the champion's row is white, red is
    worse, blue better. One linear scale up to the weakest baseline's 27 dE00 painted every
    learned model (and the per-session baseline) the same pale colour."""
    groups, mean, half, ratio = heatmap_cells(inp)
    rows, values = mean.index.tolist(), mean.to_numpy(dtype=float)
    label = (f"mean dE00 / {'champion' if inp.champion in rows else 'column best'}'s "
             f"(log scale, capped at {HEATMAP_CAP:g}x)")
    norm = mpl.colors.LogNorm(1 / HEATMAP_CAP, HEATMAP_CAP, clip=True)
    cmap = mpl.colormaps["RdBu_r"]
    ncol, nrow = values.shape[1], values.shape[0]
    fig = Figure(figsize=(max(6.4, 0.62 * ncol + 3.2), 0.42 * nrow + 2.4))
    ax = fig.add_subplot()
    im = ax.imshow(np.clip(ratio, 1 / HEATMAP_CAP, HEATMAP_CAP), aspect="auto", cmap=cmap,
                   norm=norm)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            dark = abs(np.log(np.clip(ratio[i, j], 1e-9, None))) > 0.7 * np.log(HEATMAP_CAP)
            ax.text(j, i, f"{v:.2f}\n±{half.iat[i, j]:.2f}", ha="center", va="center",
                    fontsize=6, color="white" if dark else "black", linespacing=0.9)
    ax.set_xticks(np.arange(ncol), mean.columns, rotation=70, ha="right", fontsize=6)
    dims = [c.split(": ", 1)[0] for c in mean.columns]
    for j in range(1, ncol):
        if dims[j] != dims[j - 1]:
            ax.axvline(j - 0.5, color="k", linewidth=0.8)
    ax.set_yticks(np.arange(nrow), rows, fontsize=7)
    _mark_groups(ax, groups)
    _bold_champion(ax, inp.champion)
    bar = fig.colorbar(im, ax=ax, pad=0.06, label=label)
    ticks = [t for t in (1 / 1.5, 0.8, 1.0, 1.25, 1.5, 2.0) if 1 / HEATMAP_CAP <= t <= HEATMAP_CAP]
    bar.set_ticks(ticks, labels=[f"{t:.3g}x" for t in ticks])
    bar.minorticks_off()
    ax.set_title("mean dE00 per group ± 95% CI half-width; champion in bold", fontsize=8)
    return _save(fig, path)


def plot_pred_vs_true(inp: ReportInput, path: Path) -> Path:
    """L* predicted vs true, and the a*b* plane with a line from each truth to its prediction."""
    t, p = inp.target, inp.preds[inp.champion]
    fig = Figure(figsize=(9, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lo, hi = float(min(t[:, 0].min(), p[:, 0].min())), float(max(t[:, 0].max(), p[:, 0].max()))
    ax1.scatter(t[:, 0], p[:, 0], s=6, alpha=0.6)
    ax1.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
    ax1.set_xlabel("true L*")
    ax1.set_ylabel("predicted L*")
    ax1.set_title(inp.champion, fontsize=8)
    segments = np.stack([t[:, 1:], p[:, 1:]], axis=1)
    ax2.add_collection(LineCollection(segments, colors="0.6", linewidths=0.5))
    ax2.scatter(t[:, 1], t[:, 2], s=6, label="true", color="k")
    ax2.scatter(p[:, 1], p[:, 2], s=6, label="predicted", color="tab:red", alpha=0.7)
    ax2.set_xlabel("a*")
    ax2.set_ylabel("b*")
    ax2.legend(fontsize=7)
    ax2.autoscale()
    return _save(fig, path)


PLOTS = {
    "models.png": ("Mean dE00 per model", plot_model_bars),
    "hist_de00.png": ("dE00 distribution", plot_histogram),
    "groups.png": ("Mean dE00 by group", plot_group_bars),
    "heatmap.png": ("Breakdown heatmap (mean dE00)", plot_heatmap),
    "pred_vs_true.png": ("Predicted vs true (champion)", plot_pred_vs_true),
}


def _fmt_ci(row, key: str) -> str:
    return f"{row[key]:.2f} [{row[key + '_lo']:.2f}, {row[key + '_hi']:.2f}]"


def summary_table(inp: ReportInput) -> pd.DataFrame:
    s = inp.summary.sort_values("mean")
    out = pd.DataFrame({
        "model": s["model"], "kind": s["kind"], "n": s["n"].astype(int),
        "mean dE00": [_fmt_ci(r, "mean") for _, r in s.iterrows()],
        "median dE00": [_fmt_ci(r, "median") for _, r in s.iterrows()],
        "p95 dE00": [_fmt_ci(r, "p95") for _, r in s.iterrows()],
        "mean dE76": [_fmt_ci(r, "de76_mean") for _, r in s.iterrows()],
    })
    if "val_de00_mean" in s.columns:
        out["val dE00 (MLflow)"] = s["val_de00_mean"].map(
            lambda v: "" if pd.isna(v) else f"{v:.3f}")
    return out


def floor_table(inp: ReportInput) -> pd.DataFrame:
    """The floor and the one-photo physics references (raysweep.evaluate.floors): mean error
    next to the champion's, with the one line of what each knows."""
    s = inp.summary.set_index("model")
    champ = float(s.loc[inp.champion, "mean"]) if inp.champion in s.index else float("nan")
    rows = [{"floor": name, "mean dE00": _fmt_ci(s.loc[name], "mean"),
             "champion / floor": f"{champ / float(s.loc[name, 'mean']):.1f}x",
             "what it knows": knows}
            for name, knows in inp.floors.items() if name in s.index]
    return pd.DataFrame(rows, columns=["floor", "mean dE00", "champion / floor", "what it knows"])


def selection_table(sel) -> pd.DataFrame:
    t = sel.table
    folds = [c for c in t.columns if c.startswith("fold_")]
    out = pd.DataFrame({"leader": t["leader"], "val dE00 (MLflow)": t["val_de00_mean"].map(
        "{:.3f}".format), "epochs": t["epochs"]})
    for c in folds:
        out[c.replace("_", " ")] = t[c].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    out["folds mean (sd)"] = [f"{m:.3f} ({sd:.3f})" for m, sd in zip(t["cv_mean"], t["cv_sd"])]
    out["rank by val"], out["rank by folds"] = t["rank_val"], t["rank_cv"]
    return out


def comparison_table(inp: ReportInput) -> pd.DataFrame:
    c = inp.comparisons
    if c.empty:
        return c
    return pd.DataFrame({
        "question": c["question"], "A": c["a"], "B": c["b"],
        "mean dE00 A - B [95% CI]": [f"{r.diff:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}]"
                                     for r in c.itertuples()],
        "p (bootstrap)": c["p_value"].map(lambda p: f"{p:.3f}"),
        "verdict": [("A better" if r.hi < 0 else "B better" if r.lo > 0 else "no clear difference")
                    for r in c.itertuples()],
    })


def breakdown_table(inp: ReportInput, dimension: str) -> pd.DataFrame:
    b = inp.breakdown[inp.breakdown["dimension"] == dimension]
    wide = b.assign(cell=[_fmt_ci(r, "mean") for _, r in b.iterrows()]).pivot_table(
        index="group", columns="model", values="cell", aggfunc="first", sort=False)
    n = b.drop_duplicates("group").set_index("group")["n"]
    wide.insert(0, "n", n.reindex(wide.index).astype(int))
    return wide.reset_index()


def importance_sections(folder: Path) -> list[tuple[str, object]]:
    """Which hyper-parameters mattered in the sweep: its importances, how they were computed,
    and the two plots logged with them on the sweep's parent run."""
    t = pd.read_csv(folder / importance.CSV)
    if t.empty:
        return []
    shown = pd.DataFrame({"parameter": t["parameter"], "importance [interval]": [
        f"{r.importance:.2f} [{r.lo:.2f}, {r.hi:.2f}]" for r in t.itertuples()]})
    how = importance.note(int(t["trials"].iloc[0]), str(t["metric"].iloc[0]))
    plots = [("Parameter importance plot", importance_plots.IMPORTANCE_PNG),
             ("Parallel coordinates of the sweep's trials", importance_plots.PARALLEL_PNG)]
    return [("Parameter importance: which hyper-parameters mattered in the sweep",
             f"- **how**: {how}"),
            ("Parameter importance (share of the score's variance)", shown),
            *[(title, Path(name)) for title, name in plots if (folder / name).exists()]]


def _sections(inp: ReportInput) -> list[tuple[str, object]]:
    """(heading, content) pairs shared by both renderings; content is str, DataFrame or png."""
    sections: list[tuple[str, object]] = [
        ("Context", "\n".join(f"- **{k}**: {v}" for k, v in inp.context.items())),
        ("Models, baselines, references and the floor (test photos, 95% bootstrap intervals)",
         summary_table(inp)),
    ]
    if inp.floors:
        sections.append(("The floor (oracle:latents) and the one-photo physics references "
                         "(hand-built, no labels): what each knows",
                         floor_table(inp)))
    if inp.selection is not None:
        sel = inp.selection
        sections.append(("Selection across sessions (leaders re-scored by grouped k-fold)",
                         f"- **why**: {sel.reason}\n- **stability**: {sel.stability}"))
        sections.append(("Selection folds (validation dE00 per fold; test never used)",
                         selection_table(sel)))
    sections.append(("Paired comparisons (same photos; negative = A has the smaller error)",
                     comparison_table(inp)))
    for dim in DIMENSIONS:
        if dim in set(inp.breakdown["dimension"]):
            sections.append((f"Breakdown by {dim} (mean dE00 [95% CI])",
                             breakdown_table(inp, dim)))
    for name, (title, _) in PLOTS.items():
        sections.append((title, Path(name)))
    if inp.trust is not None:  # the champion's error bound, checked on these photos
        sections += coverage.report_sections(inp.trust)
    if inp.importance is not None:
        sections += importance_sections(inp.importance)
    if inp.notes:
        sections.append(("Notes", "\n".join(f"- {n}" for n in inp.notes)))
    return sections


def render(inp: ReportInput, out_dir: str | Path) -> dict[str, Path]:
    """Draw the plots and write report.md and report.html into `out_dir` (which must exist)."""
    out = Path(out_dir)
    written = {name: fn(inp, out / name) for name, (_, fn) in PLOTS.items()}
    if inp.trust is not None:
        written.update(coverage.draw(inp.trust, out))
    if inp.importance is not None:  # drawn at the sweep's end; copied so the report stands alone
        for name in (importance_plots.IMPORTANCE_PNG, importance_plots.PARALLEL_PNG):
            if (inp.importance / name).exists():
                written[name] = Path(shutil.copyfile(inp.importance / name, out / name))
    md = [f"# {inp.title}\n"]
    body = [f"<h1>{html.escape(inp.title)}</h1>"]
    for heading, content in _sections(inp):
        md.append(f"## {heading}\n")
        body.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, pd.DataFrame):
            md.append(frame_markdown(content))
            body.append(content.to_html(index=False, border=0, classes="t")
                        if not content.empty else "<p><em>none</em></p>")
        elif isinstance(content, Path):
            md.append(f"![{heading}]({content.name})\n")
            data = base64.b64encode((out / content).read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{data}">')
        else:
            md.append(str(content) + "\n")
            items = "".join(f"<li>{html.escape(line[2:])}</li>" for line in str(content).splitlines())
            body.append(f"<ul>{items.replace('**', '')}</ul>")
    (out / "report.md").write_text("\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table.t{border-collapse:collapse;font-size:12px}"
             "table.t td,table.t th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}")
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(inp.title)}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
    written["report.md"] = out / "report.md"
    written["report.html"] = out / "report.html"
    return written
