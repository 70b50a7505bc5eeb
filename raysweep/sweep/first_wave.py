"""The sweep's first-wave request to the autoscaler, and every way it ends.

`ray.autoscaler.sdk.request_resources` is a standing request: the autoscaler keeps nodes for it
until someone asks for something else, also after the driver that made it is gone, and it is
global to the cluster. A sweep asks for its first wave (so GPU nodes boot while the data is
prepared) and holds the request no longer than that:

- withdrawn as soon as the first wave runs (`FirstWave.callback()` counts the trials Tune
  started), so the sweep's tail keeps only the nodes its trials use;
- withdrawn first when the sweep ends, however it ends: the `with` block closes before MLflow
  is, an exception passes through it, and SIGTERM (`ray job stop`) withdraws before the signal's
  previous disposition runs;
- cleared when the driver is killed (SIGKILL, OOM killer): a detached watchdog actor on the head
  polls the GCS job table and withdraws the request once the driver's job is dead, then exits.
  Without it the request outlived a killed driver (all 200 bundles stayed).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence

import ray
from ray import tune
from ray.autoscaler.sdk import request_resources as _request_resources
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raysweep import _compat

log = logging.getLogger(__name__)

Request = Callable[[list], None]
WATCH_INTERVAL_S = 2.0
NAMESPACE = "raysweep"


def request_resources(bundles: list) -> None:
    _request_resources(bundles=bundles)


class FirstWave:
    """`with FirstWave(bundles, trials):` holds the request for `trials` trials' `bundles`.

    `request` and `watchdog` exist for tests: the request function, and whether to start the
    watchdog actor (it needs a live cluster)."""

    def __init__(self, bundles: Sequence[dict], trials: int, *, request: Request | None = None,
                 watchdog: bool = True):
        self.bundles, self.trials = list(bundles), trials
        self.request = request or request_resources
        self.use_watchdog = watchdog and bool(self.bundles)
        self.standing = False
        self.watchdog = None
        self.previous_sigterm = None
        self.lock = threading.RLock()  # re-entered by a SIGTERM arriving during a withdrawal

    def __enter__(self) -> FirstWave:
        if not self.bundles:
            return self
        if self.use_watchdog:
            try:
                self.watchdog = start_watchdog(ray.get_runtime_context().get_job_id())
            except Exception as e:  # noqa: BLE001 - no watchdog: a request could outlive us
                log.warning("no first-wave request to the autoscaler: its watchdog did not "
                            "start (%s); the trials' own demand scales the cluster", e)
                return self
        try:
            self.request(self.bundles)
        except BaseException:
            self._stop_watchdog()
            raise
        self.standing = True
        self._install_sigterm()
        log.info("asked the autoscaler for the first wave: %d bundle(s) of %s", len(self.bundles),
                 self.bundles[0])
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.withdraw("the sweep ended" if kind is None else
                      f"the sweep stopped ({kind.__name__})")

    def withdraw(self, why: str) -> None:
        """Withdraw the request (once it succeeds), then stop the watchdog; never raises."""
        with self.lock:
            if not self.standing:
                return
            try:
                self.request([])
            except Exception as e:  # noqa: BLE001 - a later call retries; the watchdog covers
                log.warning("could not withdraw the autoscaler request (%s): %s", why, e)
                return  # a dead driver: keep it, it clears the request when this job is gone
            self.standing = False
        log.info("withdrew the first-wave request to the autoscaler: %s", why)
        self._restore_sigterm()
        self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        if self.watchdog is not None:
            try:
                ray.kill(self.watchdog)
            except Exception as e:  # noqa: BLE001 - it exits by itself when the job ends
                log.debug("could not stop the request watchdog: %s", e)
            self.watchdog = None

    def callback(self) -> tune.Callback:
        return _WithdrawWhenRunning(self)

    # -- SIGTERM: withdraw before anything else, then what the signal did before -----------

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers; the watchdog covers this case
        self.previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _restore_sigterm(self) -> None:
        if self.previous_sigterm is not None and \
                threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.previous_sigterm)
            self.previous_sigterm = None

    def _on_sigterm(self, signum, frame) -> None:
        previous = self.previous_sigterm
        self.withdraw("SIGTERM")
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            os.kill(os.getpid(), signal.SIGTERM)  # the default: terminate, as without us


def for_plan(pl, resume: bool = False) -> FirstWave:
    """The first wave of a `resources.Plan`: its bundles on a cluster that grows, else none.
    A resumed sweep asks for none: its Tuner is restored with the callbacks it was saved with,
    so nothing would withdraw the request when the wave runs; its waiting trials' own demand
    scales the cluster."""
    return FirstWave(pl.first_wave() if pl.grows and not resume else [], pl.max_concurrent)


class _WithdrawWhenRunning(tune.Callback):
    """Withdraws the request once as many trials have started as the first wave holds."""

    def __init__(self, wave: FirstWave | None):
        self.wave, self.started = wave, set()

    def __reduce__(self):
        # Tune pickles its callbacks with the Tuner (tuner.pkl). The request, its lock and its
        # watchdog belong to this driver: a restored copy does nothing.
        return _WithdrawWhenRunning, (None,)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.add(trial.trial_id)
        if self.wave and len(self.started) >= self.wave.trials:
            self.wave.withdraw(f"the first wave runs ({len(self.started)} trials started)")

    def on_experiment_end(self, trials, **info):
        if self.wave:
            self.wave.withdraw("the sweep ended")


# -- the watchdog: outlives a killed driver, clears its request, exits ----------------------

@ray.remote(num_cpus=0, max_restarts=0)
class _RequestWatchdog:
    """Polls the GCS until the driver's job is dead, then withdraws the autoscaler request."""

    def __init__(self, job_id: str, interval_s: float):
        self.job_id, self.interval_s = job_id, interval_s
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval_s)
            try:
                dead = _compat.job_is_dead(self.job_id)
            except Exception as e:  # noqa: BLE001 - a GCS hiccup: ask again
                log.warning("request watchdog: job table unreadable: %s", e)
                continue
            if dead:
                break
        try:
            request_resources([])
            log.warning("the driver of job %s is gone: withdrew its autoscaler request",
                        self.job_id)
        finally:
            os._exit(0)  # nothing else lives in this process; a detached actor must end itself

    def ping(self) -> str:
        return self.job_id


def start_watchdog(job_id: str, interval_s: float = WATCH_INTERVAL_S):
    """A detached watchdog actor on the head node (it never takes a worker node's CPU, and the
    head lives as long as the cluster); returns its handle once it runs."""
    head = next((n["NodeID"] for n in ray.nodes()
                 if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})), None)
    options = {"name": f"raysweep-first-wave-{job_id}", "namespace": NAMESPACE,
               "lifetime": "detached"}
    if head:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=True)
    actor = _RequestWatchdog.options(**options).remote(job_id, interval_s)
    ray.get(actor.ping.remote(), timeout=120)
    return actor
