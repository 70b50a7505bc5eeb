"""The first-wave autoscaler request is withdrawn as soon as the first wave runs and first
thing at shutdown (normal end, exception, SIGTERM), and a watchdog clears it when the driver is
gone (#23). A killed driver on a real autoscaling cluster: tests/test_autoscaling_cost.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from raysweep.sweep.first_wave import FirstWave

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = [{"CPU": 1.0, "GPU": 0.25, "raysweep_group_gpu": 0.001}] * 3


class Recorder:
    def __init__(self):
        self.calls: list[list] = []

    def __call__(self, bundles):
        self.calls.append(list(bundles))


def test_withdrawn_at_the_normal_end():
    rec = Recorder()
    with FirstWave(BUNDLES, 3, request=rec, watchdog=False):
        assert rec.calls == [BUNDLES]
    assert rec.calls == [BUNDLES, []]


def test_withdrawn_when_the_sweep_raises_and_before_the_callers_cleanup():
    rec, order = Recorder(), []
    with pytest.raises(RuntimeError):
        try:
            with FirstWave(BUNDLES, 3, request=rec, watchdog=False):
                raise RuntimeError("trial setup failed")
        finally:
            order.append(("mlflow closed", len(rec.calls)))
    assert rec.calls[-1] == [] and order == [("mlflow closed", 2)]


def test_withdrawn_once_the_first_wave_has_started_and_only_once():
    rec = Recorder()
    with FirstWave(BUNDLES, 3, request=rec, watchdog=False) as wave:
        cb = wave.callback()
        for i in range(2):
            cb.on_trial_start(i, [], SimpleNamespace(trial_id=f"t{i}"))
        cb.on_trial_start(2, [], SimpleNamespace(trial_id="t0"))  # a restart is no new trial
        assert rec.calls == [BUNDLES]
        cb.on_trial_start(3, [], SimpleNamespace(trial_id="t2"))
        assert rec.calls == [BUNDLES, []], "the tail of the sweep must keep no standing request"
    assert rec.calls == [BUNDLES, []]


def test_a_failed_withdrawal_is_tried_again_at_the_end():
    calls = []

    def flaky(bundles):
        calls.append(len(bundles))
        if not bundles and calls.count(0) == 1:
            raise ConnectionError("GCS busy")

    with FirstWave(BUNDLES, 1, request=flaky, watchdog=False) as wave:
        wave.callback().on_trial_start(0, [], SimpleNamespace(trial_id="t0"))  # fails once
    assert calls == [3, 0, 0]


def test_the_callback_pickles_as_tune_saves_it_and_a_restored_copy_does_nothing():
    import pickle

    rec = Recorder()
    with FirstWave(BUNDLES, 1, request=rec, watchdog=False) as wave:
        restored = pickle.loads(pickle.dumps(wave.callback()))
        restored.on_trial_start(0, [], SimpleNamespace(trial_id="t0"))
        restored.on_experiment_end([])
        assert rec.calls == [BUNDLES]
    assert rec.calls == [BUNDLES, []]


def test_a_resumed_sweep_asks_for_no_first_wave():
    from raysweep.sweep import first_wave
    from raysweep.sweep.resources import Plan

    pl = Plan(1, 1.0, 0.5, 4, 0, 0, local=False, grows=True)
    assert len(first_wave.for_plan(pl).bundles) == 4
    assert first_wave.for_plan(pl, resume=True).bundles == []


def test_no_request_without_a_watchdog(monkeypatch):
    """A request that could outlive a killed driver is not made at all."""
    from raysweep.sweep import first_wave

    def fails(job_id):
        raise TimeoutError("actor did not start")

    monkeypatch.setattr(first_wave, "start_watchdog", fails)
    monkeypatch.setattr(first_wave.ray, "get_runtime_context",
                        lambda: SimpleNamespace(get_job_id=lambda: "01000000"))
    rec = Recorder()
    with FirstWave(BUNDLES, 3, request=rec):
        pass
    assert rec.calls == []


def test_nothing_asked_for_an_empty_wave():
    rec = Recorder()
    with FirstWave([], 0, request=rec, watchdog=False):
        pass
    assert rec.calls == []


def test_sigterm_withdraws_before_the_previous_handler_runs(tmp_path):
    """`ray job stop` sends SIGTERM; Ray's own driver handler then exits through the finally
    blocks (MLflow's close can take 30 s, more than the stop's grace): the request goes first."""
    log = tmp_path / "log"
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        from raysweep.sweep.first_wave import FirstWave
        log = open({str(log)!r}, "a", buffering=1)
        signal.signal(signal.SIGTERM, lambda s, f: (log.write("ray handler\\n"), sys.exit(s)))
        request = lambda b: log.write(f"request {{len(b)}}\\n")
        try:
            with FirstWave([{{"CPU": 1}}] * 2, 2, request=request, watchdog=False):
                threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
                time.sleep(60)
        finally:
            log.write("mlflow closed\\n")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 15, out.stderr[-2000:]
    assert log.read_text().splitlines() == ["request 2", "request 0", "ray handler",
                                            "mlflow closed"]


def test_sigterm_with_the_default_disposition_still_terminates(tmp_path):
    log = tmp_path / "log"
    script = textwrap.dedent(f"""
        import os, signal, time
        from raysweep.sweep.first_wave import FirstWave
        log = open({str(log)!r}, "a", buffering=1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with FirstWave([{{"CPU": 1}}], 1, request=lambda b: log.write(f"request {{len(b)}}\\n"),
                       watchdog=False):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == -15, out.stderr[-2000:]
    assert log.read_text().splitlines() == ["request 1", "request 0"]


# -- on a live Ray: the request as the autoscaler sees it, and the watchdog -------------------

def wait_for(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()


@pytest.mark.slow
def test_real_request_is_gone_after_the_sweep_and_after_an_error(ray_local):
    from raysweep import _compat

    with FirstWave(BUNDLES, 3, watchdog=False):
        assert len(_compat.standing_request()) == 3
    assert _compat.standing_request() == []
    with pytest.raises(ValueError), FirstWave(BUNDLES, 3, watchdog=False):
        raise ValueError("boom")
    assert _compat.standing_request() == []


@pytest.mark.slow
def test_watchdog_clears_the_request_when_its_job_is_dead_and_not_before(ray_local):
    import ray
    from ray.autoscaler.sdk import request_resources

    from raysweep import _compat
    from raysweep.sweep.first_wave import start_watchdog

    alive = start_watchdog(ray.get_runtime_context().get_job_id(), interval_s=0.5)
    try:
        request_resources(bundles=BUNDLES)
        # the request reaches the GCS some time later on a loaded machine, and the watchdog's
        # actor starts some time later: wait for both, then let the watchdog poll six times:
        # this driver's job is alive, so the request stays
        assert wait_for(lambda: len(_compat.standing_request()) == 3, 60)
        assert ray.get(alive.ping.remote(), timeout=60)
        time.sleep(3)
        assert len(_compat.standing_request()) == 3
    finally:
        ray.kill(alive)
    # A job the GCS knows as dead (here: one that never existed): cleared, and the actor ends.
    gone = start_watchdog("ffffffff", interval_s=0.5)
    assert wait_for(lambda: _compat.standing_request() == [], 60)

    def ended() -> bool:
        try:
            ray.get(gone.ping.remote(), timeout=30)
            return False
        except ray.exceptions.RayActorError:
            return True

    assert wait_for(ended, 60), "the watchdog must not outlive its job"
