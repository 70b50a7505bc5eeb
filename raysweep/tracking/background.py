"""Tracking off Tune's driver loop: writer threads, bounded queues, writes merged per run.

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

Lanes: against a tracking server the writer runs LANES threads, each with its own queue (the
requests overlap on the client's connection pool), and a step goes to the lane of its key (a
trial id), so one trial's steps stay in order while different trials' requests overlap: one thread, one request at a time, to a
server on a loaded 2-core machine fell 66 s behind 600 short trials (the scale benchmark,
session 24: 4-5 requests per trial at ~70 ms each). A step without a key (the end of the sweep)
waits until every lane has run and sent what was queued before it, and the other lanes wait
until it is done. A local store (SQLite, files) gets one lane: it is one file behind one lock,
and more writers would only wait on it.

Hold: a lane sends a run's writes once they are HOLD_S old, or before a step that needs them
out (the run's end, a flush, the end of the sweep), so a short trial's params, epochs and
closing tags make one request: a writer that keeps up would otherwise send one per step, and
on a 2-core machine the server's work per request is what the trials pay for. A metric is in
MLflow about HOLD_S after Tune took it; a killed driver's held writes are reconciled from
result.json on --resume, as its queued ones.

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
QUEUE_SIZE = 20_000  # steps, all lanes together; a result step holds a few floats: a few MiB
DRAIN = 2_000  # steps run before their merged writes are sent
LANES = 4  # writer threads against a tracking server: `mlflow server`'s default --workers
HOLD_S = 2.0  # a run's writes wait this long for more of the same run (see Writer._loop)
FLUSH, BARRIER = "flush", "barrier"  # a lane's control steps: its writes are sent first


def lanes_for(uri: str) -> int:
    """LANES for a tracking server, one for a local store (one file, one lock)."""
    return LANES if uri.startswith(("http://", "https://", "databricks")) else 1


@dataclass
class Pending:
    """What the steps queued for one run since its last write."""

    metrics: list = field(default_factory=list)  # mlflow.entities.Metric
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    since: float = field(default_factory=time.monotonic)  # when the first of them was queued

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


@dataclass
class Lane:
    """One writer thread: its queue, and the writes its steps queued per run."""

    queue: queue.Queue
    pending: dict[str, Pending] = field(default_factory=dict)
    thread: threading.Thread | None = None
    written: int = 0  # log_batch requests sent
    busy_s: float = 0.0  # time spent on steps and writes


class Writer:
    """Runs tracking steps in order per key, off the caller's thread, merging writes per run."""

    def __init__(self, tracker, background: bool = True, size: int = QUEUE_SIZE,
                 lanes: int | None = None):
        self.tracker = tracker
        self.background = background
        n = 1 if not background else lanes or lanes_for(str(tracker.uri))
        self.lanes = [Lane(queue.Queue(maxsize=max(1, size // n))) for _ in range(n)]
        self.lost: set[str] = set()  # runs with a write that failed or was refused
        self.refused = 0  # steps refused by a full queue
        self._here = threading.local()  # the lane the current thread runs
        self._lock = threading.Lock()

    @property
    def written(self) -> int:
        return sum(lane.written for lane in self.lanes)

    @property
    def busy_s(self) -> float:
        return sum(lane.busy_s for lane in self.lanes)

    @property
    def pending(self) -> dict[str, Pending]:
        """The queued writes of the lane this thread runs (lane 0 outside the writer)."""
        return getattr(self._here, "lane", self.lanes[0]).pending

    def lane_of(self, key: str) -> Lane:
        return self.lanes[hash(key) % len(self.lanes)]

    # -- the caller's side (Tune's driver thread) --------------------------------------------

    def submit(self, what: str, step: Callable[[], None], on_refused: Callable[[], None]
               | None = None, key: str | None = None) -> bool:
        """Run `step` after the steps of `key` submitted before it (no key: after every step
        submitted before it, and before any after it). With `on_refused` the step may be
        refused when its queue is full (False; `on_refused` is called), otherwise the caller
        waits."""
        if not self.background:
            self._run(self.lanes[0], [(what, step)])
            return True
        if key is None and len(self.lanes) > 1:
            self._barrier(what, step)
            return True
        lane = self.lane_of(key) if key is not None else self.lanes[0]
        self._start(lane)
        try:
            lane.queue.put((what, step), block=on_refused is None)
            return True
        except queue.Full:
            self.refused += 1
            on_refused()
            return False

    def _barrier(self, what: str, step: Callable[[], None]) -> None:
        """`step` on lane 0 once every lane got to it; the others go on when it is done."""
        arrived, done = (threading.Barrier(len(self.lanes)) for _ in range(2))

        def lead():
            arrived.wait()
            try:
                with self.tracker.best_effort(what):
                    step()
                self.send()
            finally:
                done.wait()

        def follow():
            arrived.wait()
            done.wait()

        for i, lane in enumerate(self.lanes):
            self._start(lane)
            lane.queue.put((BARRIER, lead if i == 0 else follow))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every step submitted so far ran and its writes were sent (or failed).
        False when `timeout` ran out first."""
        if not self.background:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        waits = []
        for lane in self.lanes:
            if lane.thread is not None:
                done = threading.Event()
                lane.queue.put((FLUSH, done.set))
                waits.append(done)
        return all(done.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
                   for done in waits)

    def backlog(self) -> int:
        return sum(lane.queue.qsize() for lane in self.lanes)

    # -- the steps' side (the writer threads) ---------------------------------------------------

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
        pending = self.pending
        lane = getattr(self._here, "lane", self.lanes[0])
        for rid in [run_id] if run_id else list(pending):
            p = pending.pop(rid, None)
            if p is None:
                continue
            with self.tracker.best_effort(f"logging to run {rid}"):
                try:
                    for m, pa, t in p.chunks():
                        if not (m or pa or t):
                            continue
                        self.tracker.call(self.tracker.client.log_batch, rid, metrics=m,
                                          params=pa, tags=t)
                        lane.written += 1
                except Exception:
                    self.lost.add(rid)
                    raise

    def _start(self, lane: Lane) -> None:
        with self._lock:
            if lane.thread is None or not lane.thread.is_alive():
                # A daemon: a killed or interrupted driver must not hang on its tracking; what
                # it had queued is reconciled from Tune's records on --resume.
                lane.thread = threading.Thread(target=self._loop, args=(lane,), daemon=True,
                                               name=f"raysweep-mlflow-{self.lanes.index(lane)}")
                lane.thread.start()

    def _loop(self, lane: Lane) -> None:
        """Run what is queued, waking up when a held write is due (see Hold above)."""
        self._here.lane = lane
        while True:
            due = min((p.since for p in lane.pending.values()), default=None)
            try:
                steps = [lane.queue.get(timeout=None if due is None else
                                        max(0.0, due + HOLD_S - time.monotonic()))]
            except queue.Empty:
                steps = []
            while len(steps) < DRAIN:
                try:
                    steps.append(lane.queue.get_nowait())
                except queue.Empty:
                    break
            self._run(lane, steps)

    def _run(self, lane: Lane, steps: list) -> None:
        t0 = time.perf_counter()
        for what, step in steps:
            if what in (FLUSH, BARRIER):  # what was queued before it is sent first
                self.send()
                lane.busy_s += time.perf_counter() - t0
                step()
                t0 = time.perf_counter()
                continue
            with self.tracker.best_effort(what):
                step()
        if self.background:
            old = time.monotonic() - HOLD_S
            for rid in [rid for rid, p in lane.pending.items() if p.since <= old]:
                self.send(rid)
        else:
            self.send()
        lane.busy_s += time.perf_counter() - t0
