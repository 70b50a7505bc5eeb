"""`python -m benchmarks.run --gpu` on a machine without a GPU: one line, non-zero, nothing run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import run as bench_run

REPO = Path(__file__).resolve().parents[1]


def test_gpu_run_without_a_gpu_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    called = []
    monkeypatch.setattr(bench_run, "run_child", lambda *a, **k: called.append(a))
    out = tmp_path / "RESULTS.md"
    rc = bench_run.main(["--gpu", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and "no CUDA GPU" in err
    assert not called and not out.exists()


def test_gpu_run_cli_exits_non_zero_without_a_gpu():
    # The GPUs hidden, so that a GPU machine checks the same thing (it used to return early).
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--gpu", "--out", "/dev/null"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no CUDA GPU")
