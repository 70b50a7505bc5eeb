"""A trial that Ray gave a GPU but whose torch sees no CUDA fails with a UserError naming the
node and the fix (#23), instead of training on the CPU while the GPU stays reserved and billed.
This machine's torch has no CUDA, so a Ray with a (logical) GPU reproduces exactly that."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from raysweep.errors import UserError
from raysweep.train.device import pick_device

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_a_given_gpu_without_cuda_is_an_error_naming_node_and_fix():
    with pytest.raises(UserError) as err:
        pick_device("auto", [0], "gpu-node-7 (10.0.0.7, abc123)")
    text = err.value.message()
    assert "GPU 0 on node gpu-node-7 (10.0.0.7, abc123)" in text
    assert "--gpus-per-trial 0" in text and "infra/docker/Dockerfile" in text
    with pytest.raises(UserError, match="GPU 1"):
        pick_device("cuda", ["1"], "n")


def test_no_gpu_given_or_cpu_asked_for_trains_on_the_cpu():
    assert pick_device("auto", [], "n").type == "cpu"
    assert pick_device("cpu", [0], "n").type == "cpu"  # device=cpu: on purpose


@pytest.mark.slow
def test_a_tune_trial_given_a_gpu_fails_with_the_error(tmp_path):
    """The real path: a Tune trial with half a (logical) GPU asks the Tune reporter for its
    device, as the training loop does."""
    script = textwrap.dedent(f"""
        import ray
        from ray import tune
        from raysweep.config import TrainConfig
        from raysweep.train.reporters import TuneReporter

        def trial(config):
            device = TuneReporter().device(TrainConfig())
            tune.report({{"device": str(device)}})

        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
                 configure_logging=False)
        grid = tune.Tuner(tune.with_resources(trial, {{"cpu": 1, "gpu": 0.5}}),
                          run_config=tune.RunConfig(storage_path={str(tmp_path)!r},
                                                    name="gpu", verbose=0)).fit()
        print("ERROR:", " ".join(str(grid[0].error).split()))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("ERROR:")), "")
    assert "Ray gave this trial GPU 0 on node" in line, out.stdout[-3000:] + out.stderr[-3000:]
    assert ("built without CUDA" in line or "finds no usable device" in line) \
        and "--gpus-per-trial 0" in line, line
