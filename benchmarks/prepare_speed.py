"""Time `prepare` on the default synthetic set: 2,070 photos at 256 px, all four crop variants.

Target: at most 60 s on 2 cores, and a second load from the cache near-instant. The
same folder is prepared with 2 worker processes and with 1 (fresh cache folders), so the
parallel speed-up is a ratio measured side by side.

    python -m benchmarks.prepare_speed [--quick]
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

from benchmarks import Section, describe_machine, load_note, machine
from benchmarks import main as bench_main
from raysweep.data.pipeline import load_prepared

SETS, TONES, QUICK_TONES, SIZE = 15, 138, 14, 128


def _cpu() -> float:
    """CPU seconds of this process; pool workers report theirs in info["worker_cpu_s"]."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    return a.ru_utime + a.ru_stime


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run(quick: bool = False) -> Section:
    from raysweep.synth.context import GeneratorConfig
    from raysweep.synth.generate import generate

    tones = QUICK_TONES if quick else TONES
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        card, gen_s = _timed(lambda: generate(root / "synth", GeneratorConfig(
            sets=SETS, tones=tones, size=256), workers=2, progress=False))
        rows = []
        for workers in (2, 1):
            cache = root / f"cache_w{workers}"
            load0, cpu0 = os.getloadavg()[0], _cpu()
            data, cold = _timed(lambda w=workers, c=cache: load_prepared(
                card, crop="adaptive_bg", size=SIZE, cache_dir=c, workers=w, progress=False))
            cpu = _cpu() - cpu0 + (data.info["worker_cpu_s"] if workers > 1 else 0.0)
            again, warm = _timed(lambda c=cache: load_prepared(
                card, crop="adaptive_bg", size=SIZE, cache_dir=c, progress=False))
            assert again.info["cached"] and not data.info["cached"]
            size_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2 ** 20
            rows.append((workers, len(data), cold, cpu, warm, size_mb, load0))
    n = rows[0][1]
    speedup = rows[1][2] / rows[0][2]
    cpu2 = rows[0][3]
    lines = [
        "## prepare speed (decode + EXIF + adaptive analysis + 4 crop variants + cache)",
        "",
        f"{n} synthetic photos at 256 px ({SETS} sets x {tones} tones, generated in "
        f"{gen_s:.0f} s, not counted), crops at {SIZE} px, all four variants written. "
        "Cold = first `load_prepared` into an empty cache folder; warm = the same call again.",
        "",
        "| workers | photos | cold wall (s) | photos/s | cold CPU (s) | warm load (s) | "
        "cache (MB) | load avg before |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {w} | {k} | {c:.1f} | {k / c:.0f} | {cpu:.1f} | {wm:.2f} | {mb:.0f} | {la:.1f} |"
          for w, k, c, cpu, wm, mb, la in rows],
        "",
        f"Parallel speed-up with 2 workers: {speedup:.2f}x (same run, same data). Target: "
        f"2,070 photos in at most 60 s on 2 cores"
        + ("" if quick else f": {'met' if rows[0][2] <= 60 else 'MISSED'} ({rows[0][2]:.1f} s)")
        + f". CPU time of the 2-worker run (all processes): {cpu2:.1f} s, i.e. about "
        f"{cpu2 / 2:.0f} s of wall time on 2 otherwise idle cores.",
        "",
        f"Machine: {describe_machine()}; {load_note()}. Command: "
        f"`python -m benchmarks.prepare_speed{' --quick' if quick else ''}`.",
    ]
    cols = ("workers", "photos", "cold_s", "cold_cpu_s", "warm_s", "cache_mb", "load_before")
    return Section("\n".join(lines) + "\n", {
        "rows": [dict(zip(cols, r, strict=True)) for r in rows], "speedup_2_workers": speedup,
        "generate_s": gen_s, "machine": machine()})


if __name__ == "__main__":
    bench_main("prepare_speed", run)
