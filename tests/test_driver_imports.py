"""The sweep's driver (`python -m raysweep.search`, the process running Tune's loop) trains
nothing, so it never imports torch, which took about 2 s of its start-up: not with its modules,
not for the trainable it hands Tune (a trial imports THE loop itself), not in the checks it runs
before Ray starts. Each case runs in a fresh interpreter: this one has torch loaded already."""

from __future__ import annotations

import subprocess
import sys

DRIVER_MODULES = ("raysweep.search", "raysweep.sweep.run", "raysweep.sweep.tuner",
                  "raysweep.tracking.callback", "raysweep.tracking.checkpoints")


def assert_torch_free(code: str, cwd) -> None:
    check = ("\nimport sys\nassert 'torch' not in sys.modules, 'the driver imported torch'\n"
             "print('torch-free')")
    r = subprocess.run([sys.executable, "-c", code + check], cwd=cwd, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0 and r.stdout.strip().endswith("torch-free"), r.stderr[-3000:]


def test_the_driver_modules_and_its_trainables_do_not_import_torch(tmp_path):
    code = (f"import {', '.join(DRIVER_MODULES)}\n"
            "from types import SimpleNamespace as NS\n"
            "from raysweep.sweep.tuner import _trainable\n"
            "for workers in (1, 2):  # in-process trials, then DDP ones\n"
            "    _trainable(NS(plan=NS(workers=workers, cpus_per_worker=1.0), loop=None, refs={},\n"
            "                  spec=NS(storage='results', max_failures=1)))\n")
    assert_torch_free(code, tmp_path)


def test_the_submit_time_checks_of_a_quickstart_sweep_do_not_import_torch(tmp_path):
    code = ("import os\nos.environ['MLFLOW_TRACKING_URI'] = 'sqlite:///unused.db'\n"
            "from raysweep.sweep.resolve import resolve\n"
            "from raysweep.sweep.spec import Request\n"
            "spec, sweep = resolve(Request(space='quickstart', storage='results'))\n"
            "assert spec.space == 'quickstart' and sweep.checked.samples\n")
    assert_torch_free(code, tmp_path)
