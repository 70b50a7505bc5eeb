"""Tracking off Tune's driver loop: one writer thread, a bounded queue, writes merged per run.

Trials wait in `tune.report` until the driver has taken their result, so every millisecond a
Tune hook spends on MLflow is a millisecond every running trial idles. The hooks of the Tune
callback therefore only hand a step to `Writer.submit` (a queue put); the writer thread runs
the steps in order, one at a time, each inside `Tracker.best_effort` (the one failure policy),
and sends what the steps `add` as one `log_batch` per run for all the steps it found waiting:
at 64 trials reporting twice a second, a slow store gets fewer, larger requests instead of a
growing backlog.

Memory is bounded: a full queue refuses a droppable step (a result) instead of blocking Tune,
and says which run missed it; the caller reconciles that run later from Tune's own record of
the trial (result.json), so a refusal loses nothing (see raysweep.tracking.reconcile).
A run whose batched write failed is remembered the same way (`lost`).

`Writer(tracker, background=False)` runs every step at once in the caller's thread, through
the same code: what the unit tests of the callback use, and the fallback if a thread cannot
start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# MLflow's log_batch limits per request (mlflow.utils.validation): larger batches are refused.
MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_ENTITIES = 1000, 100, 100, 1000
QUEUE_SIZE = 20_000  # steps; a result step holds a few floats, so this is a few MiB at most
DRAIN = 2_000  # steps run before their merged writes are sent


@dataclass
class Pending:
    """What the steps queued for one run since its last write."""

    metrics: list = field(default_factory=list)  # mlflow.entities.Metric
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def chunks(self):
        """(metrics, params, tags) per request, each within MLflow's limits. Params and tags go
        in the last request: a tag that says "all written" is never stored before the rest."""
        from mlflow.entities import Param, RunTag

        m_full, m_last = _split(list(self.metrics), MAX_METRICS)
        p_full, p_last = _split([Param(k, v[:6000]) for k, v in self.params.items()], MAX_PARAMS)
        t_full, t_last = _split([RunTag(k, v[:5000]) for k, v in self.tags.items()], MAX_TAGS)
        yield from ((m, [], []) for m in m_full)
        yield from (([], p, []) for p in p_full)
        yield from (([], [], t) for t in t_full)
        if len(m_last) + len(p_last) + len(t_last) > MAX_ENTITIES:
            yield m_last, [], []
            m_last = []
        yield m_last, p_last, t_last


def _split(items: list, size: int) -> tuple[list[list], list]:
    """(full chunks but the last, the last chunk) of `items` in chunks of `size`."""
    chunks = [items[i:i + size] for i in range(0, len(items), size)] or [[]]
    return chunks[:-1], chunks[-1]


class Writer:
    """Runs tracking steps in order, off the caller's thread, merging writes per run."""

    def __init__(self, tracker, background: bool = True, size: int = QUEUE_SIZE):
        self.tracker = tracker
        self.background = background
        self.pending: dict[str, Pending] = {}
        self.lost: set[str] = set()  # runs with a write that failed or was refused
        self.refused = 0  # steps refused by a full queue
        self.written = 0  # log_batch requests sent
        self.busy_s = 0.0  # time the writer spent on steps and writes
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the caller's side (Tune's driver thread) --------------------------------------------

    def submit(self, what: str, step: Callable[[], None], on_refused: Callable[[], None]
               | None = None) -> bool:
        """Run `step` in order with the others. With `on_refused` the step may be refused when
        the queue is full (False; `on_refused` is called), otherwise the caller waits."""
        if not self.background:
            self._run([(what, step)])
            return True
        self._start()
        try:
            self._queue.put((what, step), block=on_refused is None)
            return True
        except queue.Full:
            self.refused += 1
            on_refused()
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every step submitted so far ran and its writes were sent (or failed).
        False when `timeout` ran out first."""
        if not self.background or self._thread is None:
            return True
        done = threading.Event()
        self._queue.put(("flush", done.set))
        return done.wait(timeout)

    def backlog(self) -> int:
        return self._queue.qsize()

    # -- the steps' side (the writer thread) ----------------------------------------------------

    def add(self, run_id: str, metrics: Mapping[str, float] | None = None, step: int = 0,
            params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
            timestamp_ms: int | None = None) -> None:
        """Queue a write to `run_id`; it is sent with the others after the current steps."""
        from mlflow.entities import Metric

        p = self.pending.setdefault(run_id, Pending())
        ts = timestamp_ms or int(time.time() * 1000)
        p.metrics.extend(Metric(k, float(v), ts, int(step)) for k, v in (metrics or {}).items())
        p.params.update(params or {})
        p.tags.update(tags or {})

    def send(self, run_id: str | None = None) -> None:
        """Send the queued writes of `run_id` (all runs: None) now: before a call that must
        come after them (ending a run, an artifact)."""
        for rid in [run_id] if run_id else list(self.pending):
            p = self.pending.pop(rid, None)
            if p is None:
                continue
            with self.tracker.best_effort(f"logging to run {rid}"):
                try:
                    for m, pa, t in p.chunks():
                        if not (m or pa or t):
                            continue
                        self.tracker.call(self.tracker.client.log_batch, rid, metrics=m,
                                          params=pa, tags=t)
                        self.written += 1
                except Exception:
                    self.lost.add(rid)
                    raise

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                # A daemon: a killed or interrupted driver must not hang on its tracking; what
                # it had queued is reconciled from Tune's records on --resume.
                self._thread = threading.Thread(target=self._loop, name="raysweep-mlflow",
                                                daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            steps = [self._queue.get()]
            while len(steps) < DRAIN:
                try:
                    steps.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._run(steps)

    def _run(self, steps: list) -> None:
        t0 = time.perf_counter()
        flushes = []
        for what, step in steps:
            if what == "flush":
                flushes.append(step)
                continue
            with self.tracker.best_effort(what):
                step()
        self.send()
        self.busy_s += time.perf_counter() - t0
        for done in flushes:
            done()
