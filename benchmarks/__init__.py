"""raysweep's benchmarks: each module's `run(quick)` returns a Markdown section."""

import os


def load_note() -> str:
    """The machine's load, measured when a section is written: the reader judges sharing by it."""
    one, five, _ = os.getloadavg()
    cores = len(os.sched_getaffinity(0))
    return (f"load average {one:.1f} / {five:.1f} (1 / 5 min) on {cores} cores when this section "
            f"was written (the benchmark's own work included; well above {cores} means other jobs "
            "shared the cores and wall times are upper bounds)")
