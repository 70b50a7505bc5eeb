"""raysweep's benchmarks: each module's `run(quick)` returns a Markdown section."""

import os


def load_note() -> str:
    """The machine's load, measured when a section is written: the reader judges sharing by it."""
    one, five, _ = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    return (f"load average {one:.1f} / {five:.1f} (1 / 5 min) on {cores} cores when this section "
            f"was written (the benchmark's own work included; well above {cores} means other jobs "
            "shared the cores and wall times are upper bounds)")


def main(name: str, run) -> None:
    """A benchmark module's `__main__`: print its section and keep it in results/ (atomically).

    Quick runs go to `<name>_quick.md`, so they never overwrite the full-size measurement.
    """
    import sys
    from pathlib import Path

    quick = "--quick" in sys.argv[1:]
    text = run(quick=quick)
    print(text)
    out = Path(__file__).resolve().parent / "results" / f"{name}{'_quick' if quick else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(out)
