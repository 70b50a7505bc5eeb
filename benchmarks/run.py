"""`python -m benchmarks.run`: every benchmark and the study, into one benchmarks/RESULTS.md.

    python -m benchmarks.run --quick                      # small sizes: ~30 minutes on 2 cores
    python -m benchmarks.run                              # full sizes (the study wants a GPU)
    python -m benchmarks.run --quick --only study         # refresh one section, keep the rest
    python -m benchmarks.run --gpu                        # the study and search on one GPU

Each benchmark module's `run(quick)` runs in its own child process (a fresh interpreter: Ray,
MLflow settings and environment variables of one benchmark cannot leak into the next, and a crash
costs one section, not the file) and returns a `benchmarks.Section`: its numbers, kept in
results/<name>[_quick].json, and their Markdown. RESULTS.md gets the machine (read from it),
date, versions, git commit, the command behind every section, and the sections themselves; it is
written to a temporary name and renamed into place. With --only/--skip the sections not run are
carried over from the existing file. A quick run never replaces full-size results: when the
output file holds a full run, a quick run writes RESULTS_quick.md beside it instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import describe_machine, load_note, machine, write_section
from raysweep.errors import UserError, run_cli, setup_logging, unknown_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
# new_sessions first: the headline regime (a photo from a session no model trained on)
# new_sessions_bounds recalibrates the run new_sessions saves, so it comes right after it.
BENCHMARKS = ("new_sessions", "new_sessions_bounds", "demo", "synth_speed", "synth_gap",
              "synth_screen", "prepare_speed", "crop_quality", "train_throughput", "search_efficiency", "scale",
              "throughput", "predict_latency", "trust", "study")
PACKAGES = {"python": None, "torch": "torch", "ray": "ray", "optuna": "optuna",
            "mlflow": "mlflow", "timm": "timm", "colour": "colour-science", "numpy": "numpy"}
BEGIN, END = "<!-- section: {} -->", "<!-- /section: {} -->"
# Only with --gpu, never in a CPU run: the study, and the search benchmark at GPU size.
GPU_BENCHMARKS = ("gpu_study", "gpu_search")


def versions() -> dict[str, str]:
    out = {}
    for name, dist in PACKAGES.items():
        if dist is None:
            out[name] = platform.python_version()
            continue
        try:
            out[name] = md.version(dist)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               text=True, capture_output=True, timeout=10).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def parse_names(text: str | None, flag: str) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    for n in names:
        if n not in BENCHMARKS:
            raise unknown_name("benchmark", n, BENCHMARKS, where=flag)
    return names


def run_child(name: str, quick: bool, log_dir: Path) -> tuple[str, float, str]:
    """Run `benchmarks.<name>.run(quick)` in a fresh interpreter: (markdown, seconds, error)."""
    out = log_dir / f"{name}.md"
    log = log_dir / f"{name}.log"
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", name, "--child-out", str(out)]
    t = time.time()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd + (["--quick"] if quick else []), cwd=ROOT, stdout=fh,
                            stderr=subprocess.STDOUT).returncode
    seconds = time.time() - t
    if rc == 0 and out.exists():
        return out.read_text(), seconds, ""
    tail = log.read_text(errors="replace").strip().splitlines()[-15:]
    return "", seconds, f"exit code {rc}; last lines of its output:\n" + "\n".join(tail)


def child(name: str, quick: bool, out: str) -> int:
    import importlib

    section = importlib.import_module(f"benchmarks.{name}").run(quick=quick)
    write_section(name, quick, section)  # results/<name>[_quick].md and .json (its numbers)
    Path(out).write_text(str(section))
    return 0


def is_full_run(path: Path) -> bool:
    """True when `path` holds the results of a full-size run (which a quick run must keep)."""
    return path.exists() and "(full mode)" in path.read_text().split("\n## ", 1)[0]


def link_figures(text: str) -> str:
    """Section figures are written relative to results/; RESULTS.md sits one folder up."""
    def fix(m: re.Match) -> str:
        target = m.group(2)
        if "/" not in target and (RESULTS / target).exists():
            target = f"results/{target}"
        return f"![{m.group(1)}]({target})"

    return re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", fix, text)


def old_sections(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    text = path.read_text()
    found = {}
    for name in (*BENCHMARKS, *GPU_BENCHMARKS):
        m = re.search(re.escape(BEGIN.format(name)) + r"\n(.*?)\n" + re.escape(END.format(name)),
                      text, re.S)
        if m:
            found[name] = m.group(1)
    return found


def _study_shape() -> str:
    """The full study's size, read from its space (the space is the one place that says it)."""
    from search_spaces import study as space

    f = space.FIXED
    return (f"{space.NUM_SAMPLES} trials ({len(space.CELLS)} cells x "
            f"{space.NUM_SAMPLES // len(space.CELLS)} nuisance draws, {f['backbone']} width "
            f"{f['width']} at {f['image_size']} px, {space.MAX_EPOCHS} epochs, ASHA grace "
            f"{space.GRACE_PERIOD})")


def headline(quick: bool) -> list[str]:
    """The study's answers in a few lines, from the JSON it wrote beside its section."""
    path = RESULTS / f"study{'_quick' if quick else ''}.json"
    if not path.exists():
        return []
    h = json.loads(path.read_text())
    w, r = h["winner_test"], h["naive_ratio"]
    lines = [f"- Study winner (by validation): {h['winner']}: test mean dE00 {w['mean']:.2f} "
             f"[{w['mean_lo']:.2f}, {w['mean_hi']:.2f}], median {w['median']:.2f}, p95 "
             f"{w['p95']:.2f} (published, real photos: 0.81).",
             f"- Naive {h['naive_mean']:.2f}: the winner is {r[0]:.1f}x lower [{r[1]:.1f}, "
             f"{r[2]:.1f}] (target >= 5x); oracle floor {h['oracle_mean'][0]:.2f}; best "
             f"classical baseline {h['best_baseline'][0]} {h['best_baseline'][1]:.2f} (winner - "
             "it: {:+.2f} [{:+.2f}, {:+.2f}]).".format(*h["winner_minus_best_baseline"])]
    for e in h["effects"]:
        if e["question"].startswith(("metadata, ", "interaction", "background: ")):
            lines.append(f"- {e['question']}: {e['diff']:+.2f} [{e['lo']:+.2f}, {e['hi']:+.2f}]")
    return lines


def render(args, sections: dict[str, str], timings: dict[str, tuple[float, str]]) -> str:
    mode = "--quick" if args.quick else "full"
    v = versions()
    here = machine()
    gpu_note = (f"GPU numbers come from {', '.join(here['gpus'])}." if here["gpus"] else
                "This machine has no GPU, so no GPU numbers are claimed here.")
    rows = ["| section | command | wall s (this run) | status |", "| --- | --- | --- | --- |"]
    for name in BENCHMARKS:
        if name in timings:
            secs, status = timings[name]
            rows.append(f"| {name} | `python -m benchmarks.{name}{' --quick' if args.quick else ''}`"
                        f" | {secs:.0f} | {status} |")
        elif name in sections:
            rows.append(f"| {name} | see its section | - | carried over from the previous file |")
    head = [
        "# raysweep benchmarks and study results",
        "",
        f"Generated by `{args.command}` on {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} "
        f"({mode} mode). Machine: {describe_machine(here)}. Git commit: {git_commit()}.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        f"Each section states the machine's load when it was written; ratios measured side by "
        f"side within one section are the numbers to compare. {gpu_note} "
        f"At the end of this run: {load_note()}.",
        "",
    ]
    lines = headline(args.quick) if "study" in timings else []
    if lines:
        head += ["## Headline", "", *lines, "", "Details in the study section below.", ""]
    head += ["## Sections", "", *rows, "",
             "Each section was produced by `run(quick)` of its module, in a child process of "
             "`python -m benchmarks.run`; the command in the table reproduces it alone.", "",
             "## Running the full study on a GPU machine", "",
             "`python -m benchmarks.run --gpu` runs the study on this machine's one GPU with "
             "trials packed on it (2 nuisance draws per cell, target <= 10 minutes) and writes its "
             "own section naming the GPU; `python -m benchmarks.run` (without --quick) runs it at "
             f"full size: {_study_shape()}. That is hours on a CPU. A GPU machine "
             "may have no package index: carry Ray and Optuna with the recipe in "
             "`shared/gpu/README.md` (`bash ../shared/gpu/make-ray-bundle.sh .devcarry`, then "
             "there: unpack into /tmp/site, `export PYTHONPATH=/tmp/site:$PWD`), plus wheels of "
             "what the study also imports (colour-science, mlflow with its SQL store: sqlalchemy "
             "and alembic, scikit-learn for the gbm baseline); check with `python3 -c \"import "
             "ray, optuna, mlflow, colour, sklearn\"`, then run `python3 -m benchmarks.run --only "
             "study` and keep the RESULTS.md it writes (its header names the GPU).", ""]
    body = []
    for name in (*BENCHMARKS, *GPU_BENCHMARKS):
        if name in sections:
            body += [BEGIN.format(name), sections[name].strip(), END.format(name), ""]
    return "\n".join(head + body).rstrip() + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for a 2-core machine")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="default benchmarks/RESULTS.md")
    ap.add_argument("--only", help=f"comma list of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--skip", help="comma list of benchmarks to leave out")
    ap.add_argument("--gpu", action="store_true",
                    help="only the full study and the search benchmark on this machine's GPU, "
                         "each in its own section")
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    raw = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(raw)
    if args.child:
        return child(args.child, args.quick, args.child_out)
    setup_logging(args.debug)
    only, skip = parse_names(args.only, "--only"), parse_names(args.skip, "--skip")
    chosen = [n for n in (only or BENCHMARKS) if n not in skip]
    if args.gpu:
        from benchmarks.gpu_study import require_gpu

        try:
            require_gpu()
        except UserError as e:
            print(f"error: {e.message()}", file=sys.stderr)  # one line: nothing to run here
            return 1
        chosen = only = list(GPU_BENCHMARKS)  # the other sections are carried over
    if not chosen:
        raise UserError("--only and --skip leave no benchmark to run",
                        fix=f"choose among: {', '.join(BENCHMARKS)}")
    args.command = "python -m benchmarks.run " + " ".join(raw)
    out = Path(args.out).resolve()
    if args.quick and is_full_run(out):
        out = out.with_name(f"{out.stem}_quick{out.suffix}")
        print(f"{args.out} holds a full-size run; this quick run goes to {out}", file=sys.stderr)
    sections = old_sections(out)
    if not (only or skip):  # a full run rewrites every section but the GPU run's own
        sections = {k: v for k, v in sections.items() if k in GPU_BENCHMARKS}
    timings: dict[str, tuple[float, str]] = {}
    failed = []
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="raysweep-bench-") as tmp:
        bar = tqdm(chosen, desc="benchmarks", unit="section", file=sys.stderr)
        for name in bar:
            bar.set_postfix_str(name)
            text, secs, err = run_child(name, args.quick, Path(tmp))
            if err:
                failed.append(name)
                text = (f"## {name}: FAILED\n\n`python -m benchmarks.{name}"
                        f"{' --quick' if args.quick else ''}` failed after {secs:.0f} s, "
                        f"{err.splitlines()[0]}:\n\n```\n" + "\n".join(err.splitlines()[1:])
                        + "\n```")
            sections[name] = link_figures(text)
            timings[name] = (secs, "FAILED" if err else "ok")
            print(f"{name}: {'FAILED' if err else 'ok'} in {secs:.0f} s", file=sys.stderr)
    write_atomic(out, render(args, sections, timings))
    print(f"wrote {out}" + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
