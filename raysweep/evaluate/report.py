"""The winners report: Markdown next to its PNGs, and one self-contained HTML file.

The HTML embeds every PNG as base64, so the single file can be mailed, attached to an MLflow run
or opened from a laptop without the folder. Figures are drawn on `matplotlib.figure.Figure` with
the Agg canvas (no pyplot global state, no display needed on a cluster node).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raysweep.evaluate.breakdowns import DIMENSIONS


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


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_histogram(inp: ReportInput, path: Path, max_models: int = 4) -> Path:
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    names = _plot_models(inp, max_models)
    hi = max(float(np.percentile(inp.errors[n], 99)) for n in names)
    bins = np.linspace(0, max(hi, 1e-3), 40)
    for name in names:
        ax.hist(inp.errors[name], bins=bins, histtype="step", linewidth=1.6, label=name)
    ax.set_xlabel("dE00 per photo")
    ax.set_ylabel("photos")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_models(inp: ReportInput, max_models: int) -> list[str]:
    """The champion, then the others by mean dE00, with the best baseline always included
    (floors are in the tables and the bar chart, not in the per-photo plots)."""
    ranked = inp.summary[inp.summary["kind"] != "floor"].sort_values("mean")["model"].tolist()
    names = [inp.champion] + [m for m in ranked if m != inp.champion]
    baselines = inp.summary.loc[inp.summary["kind"] == "baseline"].sort_values("mean")["model"]
    chosen = names[: max_models - 1]
    if len(baselines) and baselines.iloc[0] not in chosen:
        chosen.append(baselines.iloc[0])
    else:
        chosen = names[:max_models]
    return chosen


def plot_model_bars(inp: ReportInput, path: Path) -> Path:
    """Overall mean dE00 per model with its 95% interval."""
    s = inp.summary.sort_values("mean")
    fig = Figure(figsize=(6.4, 0.35 * len(s) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(s))
    err = np.vstack([s["mean"] - s["mean_lo"], s["mean_hi"] - s["mean"]])
    palette = {"baseline": "tab:orange", "floor": "tab:green"}
    colors = [palette.get(k, "tab:blue") for k in s["kind"]]
    ax.barh(y, s["mean"], xerr=err, color=colors, capsize=3)
    ax.set_yticks(y, s["model"], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean dE00 (95% bootstrap CI); orange = baseline, green = floor")
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


def plot_heatmap(inp: ReportInput, path: Path) -> Path:
    b = inp.breakdown.copy()
    b["column"] = b["dimension"] + ": " + b["group"]
    table = b.pivot_table(index="model", columns="column", values="mean", sort=False)
    order = inp.summary.sort_values("mean")["model"]
    table = table.reindex([m for m in order if m in table.index])
    fig = Figure(figsize=(max(6.4, 0.35 * table.shape[1] + 2), 0.4 * table.shape[0] + 2.2))
    ax = fig.add_subplot()
    im = ax.imshow(table.to_numpy(), aspect="auto", cmap="magma_r")
    ax.set_xticks(np.arange(table.shape[1]), table.columns, rotation=70, ha="right", fontsize=6)
    ax.set_yticks(np.arange(table.shape[0]), table.index, fontsize=7)
    fig.colorbar(im, ax=ax, label="mean dE00")
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
    from matplotlib.collections import LineCollection

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
    """Each floor's mean error next to the champion's, with its one line of what it knows."""
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


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    return "\n".join(lines) + "\n"


def _sections(inp: ReportInput) -> list[tuple[str, object]]:
    """(heading, content) pairs shared by both renderings; content is str, DataFrame or png."""
    sections: list[tuple[str, object]] = [
        ("Context", "\n".join(f"- **{k}**: {v}" for k, v in inp.context.items())),
        ("Models, baselines and floors (test photos, 95% bootstrap intervals)",
         summary_table(inp)),
    ]
    if inp.floors:
        sections.append(("Floors: how low the error could go, and what each floor knows",
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
        from raysweep.evaluate import coverage

        sections += coverage.report_sections(inp.trust)
    if inp.notes:
        sections.append(("Notes", "\n".join(f"- {n}" for n in inp.notes)))
    return sections


def render(inp: ReportInput, out_dir: str | Path) -> dict[str, Path]:
    """Draw the plots and write report.md and report.html into `out_dir` (which must exist)."""
    out = Path(out_dir)
    written = {name: fn(inp, out / name) for name, (_, fn) in PLOTS.items()}
    if inp.trust is not None:
        from raysweep.evaluate import coverage

        written.update(coverage.draw(inp.trust, out))
    md = [f"# {inp.title}\n"]
    body = [f"<h1>{html.escape(inp.title)}</h1>"]
    for heading, content in _sections(inp):
        md.append(f"## {heading}\n")
        body.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, pd.DataFrame):
            md.append(md_table(content))
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
