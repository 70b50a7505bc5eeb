"""The search benchmark on one GPU, run by `python -m benchmarks.run --gpu`.

`search_efficiency` at the size a GPU machine affords (more trials, longer budgets, four trials
at once sharing the GPU, every photo), in its own section and result files (`gpu_search*`), so
that it never replaces the CPU measurement.
"""

from __future__ import annotations

from benchmarks import Section
from benchmarks import main as bench_main
from benchmarks.gpu_study import require_gpu
from benchmarks.search_efficiency import run as search_run

NAME = "gpu_search"


def run(quick: bool = False) -> Section:
    require_gpu()
    return search_run(quick, name=NAME)


if __name__ == "__main__":
    bench_main(NAME, run)
