"""The study on one GPU in at most 10 minutes: `python -m benchmarks.run --gpu`.

The same study as `benchmarks.study` (search_spaces/study.py: fusion x features x crop on held-out
tones, winners scored on the test split next to the baselines and the oracle), at the space's own
64 px and 40 epochs, with the trials packed onto the one GPU: each trial takes 1/GPU_PACK of it
(a 64 px smallcnn fills a small share of a data-centre GPU; bf16 autocast and channels_last are on
in the loop) and ASHA stops the weak nuisance draws. Two nuisance draws per cell instead of four
keep it inside 10 minutes; the time is measured and printed with the GPU's name.

Without a CUDA GPU it says so in one line and exits non-zero (`require_gpu`).
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks import Section
from raysweep.errors import UserError

GPU_PACK = 8  # trials sharing the GPU at once
DRAWS_PER_CELL = 2
BUDGET_S = 600


def require_gpu() -> str:
    """The GPU's name, or a UserError saying there is none."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("no CUDA GPU is visible: `python -m benchmarks.run --gpu` runs the full "
                        "study on one GPU", fix="run it on a machine with a GPU, or use --quick")
    return torch.cuda.get_device_name(0)


def gpu_sweep(card: Path, quick: bool):
    from raysweep.sweep.run import run_sweep
    from raysweep.sweep.spec import Request
    from search_spaces.study import CELLS

    return run_sweep(Request(space="study", data=str(card),
                             num_samples=DRAWS_PER_CELL * len(CELLS),
                             gpus_per_trial=1.0 / GPU_PACK, max_concurrent=GPU_PACK, seed=0,
                             storage=str(Path.cwd() / "ray"), name="study-gpu",
                             early_stopping=True))


def run(quick: bool = False) -> Section:
    from benchmarks import study

    gpu = require_gpu()
    t = time.time()
    # benchmarks.study owns the whole pipeline (sweep, winners, baselines, floors, analysis);
    # only its sweep differs here.
    section = study.run(quick=False, sweep_fn=gpu_sweep)
    text = section.markdown
    wall = time.time() - t
    verdict = "met" if wall <= BUDGET_S else f"MISSED ({wall / 60:.1f} min)"
    head = (f"## The study on one GPU ({gpu})\n\n"
            f"{DRAWS_PER_CELL} nuisance draws per cell, {GPU_PACK} trials packed on the GPU, "
            f"wall time {wall / 60:.1f} min (target <= {BUDGET_S // 60} min: {verdict}). "
            f"Command: `python -m benchmarks.run --gpu`.\n\n")
    body = text.split("\n", 1)[1] if text.startswith("## ") else text
    return Section(head + body.replace("\n## ", "\n### "),
                   {**section.data, "gpu": gpu, "wall_s": wall, "budget_s": BUDGET_S})
