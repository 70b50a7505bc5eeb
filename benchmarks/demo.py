"""The README's main job, measured: `python -m raysweep.search --space quickstart --eval-winners`
run exactly as `make demo` runs it, in a fresh working folder (its own `mlruns.db`, checkpoint
storage and `winners/` report), on the default synthetic dataset.

The figures the README quotes for the demo come from here: the champion's test dE00 with its
interval, the baselines and references beside it, and the coverage of the champion's error
bound, all read back from the report folder the job wrote.

    python -m benchmarks.demo
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks import Section, describe_machine, load_note, md_table
from benchmarks import main as bench_main

COMMAND = ["-m", "raysweep.search", "--space", "quickstart", "--eval-winners"]
ROOT = Path(__file__).resolve().parent.parent


def run_job(work: Path) -> tuple[float, str]:
    """The main job in `work`: (wall seconds, its console output). Fails loudly on a non-zero exit."""
    cmd = [sys.executable, *COMMAND, "--storage", str(work / "storage")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=3 * 3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the main job exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def read_report(winners: Path) -> dict:
    """The numbers the README quotes, from the report folder the job wrote."""
    summary = pd.read_csv(winners / "summary.csv")
    coverage = pd.read_csv(winners / "coverage.csv") if (winners / "coverage.csv").exists() else None
    report = (winners / "report.md").read_text() if (winners / "report.md").exists() else ""
    return {"summary": summary, "coverage": coverage, "report": report}


def _rows(summary: pd.DataFrame) -> list[tuple]:
    cols = ["model", "kind", "mean", "mean_lo", "mean_hi", "median", "p95"]
    return [tuple(r) for r in summary[[c for c in cols if c in summary]].itertuples(index=False)]


def run(quick: bool = False) -> Section:
    """`quick` changes nothing: the demo has one size, the one `make demo` runs."""
    with tempfile.TemporaryDirectory(prefix="raysweep-demo-") as tmp:
        work = Path(tmp)
        wall, console = run_job(work)
        got = read_report(work / "winners")
    summary, coverage = got["summary"], got["coverage"]
    lines = [
        "## The README's main job (`make demo`)",
        "",
        f"`python {' '.join(COMMAND)}` in a fresh working folder (own `mlruns.db`, storage and "
        f"`winners/`), default synthetic dataset (cached beforehand if it was). Wall time "
        f"{wall:.0f} s on {describe_machine()}; {load_note()}.",
        "",
        "### The report's summary (test split)",
        "",
        md_table(_rows(summary), ["model", "kind", "mean dE00", "CI lo", "CI hi", "median", "p95"]),
    ]
    if coverage is not None:
        lines += ["", "### Coverage of the champion's error bound", "", md_table(coverage.head(12))]
    # the report's own path named a temporary folder that is gone by now
    tail = [ln for ln in console.splitlines() if ln.strip() and tmp not in ln][-8:]
    lines += ["", "Last lines of the job's console:", "", "```", *tail, "```", "",
              "Command: `python -m benchmarks.demo`"]
    data = {"wall_s": wall, "summary": summary, "coverage": coverage, "console_tail": tail}
    return Section("\n".join(lines), data)


if __name__ == "__main__":
    bench_main("demo", run)
