"""How fast the synthetic dataset generates: photos per second, against the 60 s target for the
default 2,070 photos at 256 px.

Measures, in one process run: the one-off spectral precompute (tones, lights, camera responses),
then the full default shape with --workers 2 (the target), and a one-worker run on a fifth of it
(per-core speed; the ratio is the parallel efficiency). The machine is shared, so wall times are
noisy; the CPU-seconds column is the steadier number.

    python -m benchmarks.synth_speed [--quick]
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from benchmarks import Section, describe_machine, load_note, machine
from benchmarks import main as bench_main


def _cpu_s() -> float:
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _timed(fn):
    w0, c0 = time.perf_counter(), _cpu_s()
    out = fn()
    return out, time.perf_counter() - w0, _cpu_s() - c0


def run(quick: bool = False) -> Section:
    from raysweep.synth.context import GeneratorConfig, build_context
    from raysweep.synth.generate import generate

    full = GeneratorConfig(sets=3 if quick else 15)
    part = GeneratorConfig(sets=1 if quick else 3)
    rows = []
    _, wall, cpu = _timed(lambda: build_context(full))
    rows.append(("spectral precompute (context)", "-", 1, wall, cpu, "-"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg, workers in (("default shape" if not quick else "3 sets", full, 2),
                                   ("1/5 of it" if not quick else "1 set", part, 1)):
            n = cfg.sets * cfg.tones
            out = Path(tmp) / f"run-{workers}"
            _, wall, cpu = _timed(lambda cfg=cfg, workers=workers, out=out: generate(
                out, cfg, workers=workers, progress=False))
            rows.append((name, n, workers, wall, cpu, f"{n / wall:.1f}"))
    lines = [
        "## Synthetic dataset generation speed",
        "",
        "Target: the default 2,070 photos (15 sets x 138 tones, 3 cameras, 256 px) in <= 60 s "
        "on 2 cores. Every photo: scene fields, noise, camera pipeline, JPEG + EXIF.",
        "",
        "| run | photos | workers | wall s | CPU s | photos/s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]} |" for r in rows]
    gen_rows = [r for r in rows if r[1] != "-"]
    per_photo_cpu = [r[4] / r[1] * 1000 for r in gen_rows]
    lines += [
        "",
        f"CPU per photo: {per_photo_cpu[0]:.1f} ms (parallel run, incl. worker start-up), "
        f"{per_photo_cpu[1]:.1f} ms (one worker).",
        f"Machine: {describe_machine()}; {load_note()}.",
        "",
        f"Command: `python -m benchmarks.synth_speed{' --quick' if quick else ''}`",
        "",
    ]
    cols = ("run", "photos", "workers", "wall_s", "cpu_s", "photos_per_s")
    return Section("\n".join(lines), {"rows": [dict(zip(cols, r, strict=True)) for r in rows],
                                       "machine": machine()})


if __name__ == "__main__":
    bench_main("synth_speed", run)
