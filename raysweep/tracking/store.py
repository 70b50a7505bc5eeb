"""MLflow conventions in one place; every MLflow call of a sweep goes through here.

Experiment = study (search space) name. One parent run per sweep invocation, tagged with what is
needed to reproduce and compare it; one nested child run per Tune trial with the flattened
TrainConfig as params, per-epoch metrics (step = epoch), the tags people filter on (`backbone`,
`fusion`, `crop`, `features`) and the best checkpoint under artifact path `checkpoint/`.
Logged from the driver only (a Tune callback), so one store serves a whole cluster and trial
processes need no MLflow access. `MLFLOW_TRACKING_URI` wins; otherwise `sqlite:///<cwd>/mlruns.db`
with artifacts in `<cwd>/mlartifacts`.

One failure policy, in `Tracker.call` and `Tracker.best_effort` and nowhere else: a call is
retried with backoff (`retry`); a call that fails every retry opens a circuit breaker, so calls
in the next COOLDOWN_S are skipped without trying (a dead server must not cost every epoch of
every trial a round of retries in Tune's driver loop); the outage is said once, as one warning.
Methods raise; the caller that must not stop (a Tune hook, the end of a sweep) wraps its whole
step in one `best_effort`, so an exception is caught at one level only. Creating the parent run
is the one call that fails loudly (a UserError), before any trial starts.

No Ray here: the read-only commands (summarize, eval_winners) import this module, and the Tune
callback lives in callback.py. Nothing changes the environment at import; MLflow's HTTP
defaults are set when a store is opened (`open_client`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from raysweep import __version__
from raysweep.config import TrainConfig
from raysweep.errors import UserError
from raysweep.tracking.secrets import scrub_secrets, tracking_auth_from_env

log = logging.getLogger(__name__)

TRIAL_TAGS = ("backbone", "fusion", "crop", "features")
# Tune's own bookkeeping in every result; not metrics of the model.
TUNE_KEYS = frozenset({
    "timestamp", "done", "training_iteration", "time_this_iter_s", "time_total_s", "pid",
    "time_since_restore", "iterations_since_restore", "should_checkpoint", "trial_id",
    "experiment_tag", "hostname", "node_ip", "date", "checkpoint_dir_name", "config",
})
# MLflow errors that retrying cannot fix.
PERMANENT = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
                       "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "PERMISSION_DENIED",
                       "UNAUTHENTICATED", "BAD_REQUEST"})

# Set when a store is opened, unless the user set them. MLflow's own HTTP client retries for
# minutes by default; ours (retry) is shorter and visible. One progress bar per downloaded
# checkpoint buries the leaderboard; ours show the progress. On a tracking server MLflow 3
# prints two "View run" lines whenever a run ends, and fetches the run once more to do it: at
# 1,000 trials that is 2,000 console lines and 1,000 requests; the sweep's closing lines name
# the parent run instead.
MLFLOW_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                   "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def open_client(uri: str | None = None):
    """An MlflowClient for `uri` (default: tracking_uri()), with raysweep's HTTP defaults.

    MLflow reads these settings from the environment at request time only, so they are set
    here, on first use, and never override what the user exported."""
    from mlflow.tracking import MlflowClient

    for key, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri=uri or tracking_uri())


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlruns.db'}"


def code_version() -> str:
    """The git commit (with -dirty) of the code, or the package version outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                             capture_output=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, text=True, capture_output=True, timeout=5).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return f"raysweep-{__version__}"


def retry(fn: Callable, *args: Any, attempts: int = 4, delay: float = 0.5, **kwargs: Any) -> Any:
    """Call an MLflow function, retrying transient failures with exponential backoff."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except MlflowException as e:
            if e.error_code in PERMANENT or attempt == attempts - 1:
                raise
            err = e
        except Exception as e:  # noqa: BLE001 - connection refused, database locked, ...
            if attempt == attempts - 1:
                raise
            err = e
        log.info("MLflow call %s failed (%s); retrying in %.1fs",
                    getattr(fn, "__name__", fn), err, delay * 2 ** attempt)
        time.sleep(delay * 2 ** attempt)


def is_unreachable(e: BaseException) -> bool:
    """True when `e` says the tracking store could not be reached (not that it said no)."""
    from mlflow.exceptions import MlflowException

    for err in (e, e.__cause__, e.__context__):
        if isinstance(err, ConnectionError | TimeoutError):
            return True
        if type(err).__module__.startswith(("requests", "urllib3")):
            return True
        if isinstance(err, MlflowException) and "failed with exception" in str(err):
            return True  # MLflow's wording for a request that never got an answer
    return False


# A local SQLite store can fail in three ways of its own; sqlite's words for each, ours, and
# what to do. Matched on the exception text, which SQLAlchemy and MLflow pass on.
SQLITE_PROBLEMS = (
    (("file is not a database", "database disk image is malformed", "file is encrypted"),
     "is not an SQLite database or is damaged",
     "restore it from a backup, or point MLFLOW_TRACKING_URI (--tracking-uri) at another store"),
    (("database is locked", "database table is locked"), "is locked by another process",
     "let the other process that writes it (a sweep, eval_winners, `mlflow ui`) finish, or stop "
     "it, then run the command again"),
    (("readonly database", "read-only", "unable to open database file"),
     "is read-only (or its folder is) for this user",
     "make the file and its folder writable, or point MLFLOW_TRACKING_URI at a store you can "
     "write"),
)


def sqlite_problem(e: BaseException) -> tuple[str, str] | None:
    """(what is wrong, fix) when `e` is a local SQLite store failing, else None."""
    seen, err, texts = set(), e, []
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        texts.append(str(err))
        err = err.__cause__ or err.__context__
    text = " ".join(texts)
    return next(((what, fix) for needles, what, fix in SQLITE_PROBLEMS
                 if any(n in text for n in needles)), None)


def sqlite_error(uri: str, e: BaseException, where: str) -> UserError | None:
    """The one paragraph for a local SQLite store that failed (None: `e` is something else)."""
    problem = sqlite_problem(e)
    if problem is None:
        return None
    return UserError(f"the MLflow tracking store {uri!r} {problem[0]} (sqlite: "
                     f"{_sqlite_words(e)})", where=where, fix=problem[1])


def probe_sqlite(uri: str, write: bool = False) -> None:
    """Raise what sqlite says when a `sqlite:///` store cannot be read (or, with `write`,
    written), in at most a few seconds: before any work, not after it. Other URIs: nothing."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not path.is_file():
        return  # MLflow creates a new store; its folder's trouble is said by MLflow
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        con.execute("PRAGMA schema_version").fetchone()
        if write:
            # root ignores file modes, not the immutable flag; access() answers for both
            if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
                raise sqlite3.OperationalError("attempt to write a readonly database")
            con.execute("BEGIN IMMEDIATE")  # a writer holding the file answers "locked"
            con.rollback()
    finally:
        con.close()


@contextlib.contextmanager
def store_errors(uri: str, where: str = "--tracking-uri / MLFLOW_TRACKING_URI",
                 write: bool = False):
    """The one failure policy of the commands that read MLflow: a store that cannot be reached,
    or a local SQLite store that is damaged, locked or read-only, is a UserError (one
    paragraph, exit 2). The store is probed first (`write`: also for writing), so a command
    that logs at its end (eval_winners) fails before its work, not after."""
    try:
        probe_sqlite(uri, write)
        yield
    except UserError:
        raise
    except Exception as e:
        if (refused := sqlite_error(uri, e, where)) is not None:
            raise refused from e
        if not is_unreachable(e):
            raise
        text = str(e)
        reason = next((r for r in ("Connection refused", "timed out", "Name or service not known",
                                   "No route to host") if r in text), type(e).__name__)
        raise UserError(f"cannot reach the MLflow tracking store {uri!r} ({reason})", where=where,
                        fix="start the tracking server or fix the URI and its credentials "
                            "(MLFLOW_TRACKING_USERNAME/PASSWORD), then run the command again"
                        ) from e


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _sqlite_words(e: BaseException) -> str:
    """sqlite's own message, without SQLAlchemy's statement and background link."""
    err = e
    while err is not None and "sqlite3" not in type(err).__module__:
        err = err.__cause__ or err.__context__
    return str(err or e).splitlines()[0][:200]


def flat_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A trial's params: the full TrainConfig (defaults filled in) plus the space's own helper
    choices, secrets scrubbed, as strings."""
    train = {k: v for k, v in config.items() if k in TrainConfig.field_names()}
    full = {**config, **TrainConfig.from_dict(train).to_dict()}
    return {k: str(v) for k, v in scrub_secrets(full).items()}


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()
            if k not in TUNE_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(v)}


class TrackingUnavailable(RuntimeError):
    """The tracking store failed moments ago; the call was skipped without trying."""


class Tracker:
    """The sweep's experiment and parent run. Picklable: Tune saves its callbacks with the
    experiment, and the MLflow client (an open database) is re-created on first use."""

    # After a call fails all its retries, calls are skipped for this long: a dead server must
    # not cost every epoch of every trial a full round of retries in Tune's driver loop.
    COOLDOWN_S = 60.0
    NOTHING_LOST = ("Nothing is lost: every trial's metrics are also in its folder under the "
                    "sweep's storage (result.json, progress.csv).")

    def __init__(self, experiment: str, sweep_name: str, uri: str | None = None):
        self.experiment, self.sweep_name = experiment, sweep_name
        self.uri = uri or tracking_uri()
        self.parent_run_id: str | None = None
        self.seconds = 0.0  # spent in trial logging (see TrialLogger)
        self.failures = 0  # calls that failed every retry
        self._client = None
        self._experiment_id: str | None = None
        self.skipped = 0  # steps given up by best_effort
        self._down_until = 0.0
        self._outage_said = False  # the outage warning is said once per outage

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None, "_down_until": 0.0, "_outage_said": False}

    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """`retry(fn, ...)` behind the circuit breaker (see COOLDOWN_S). Raises what failed, or
        TrackingUnavailable without trying while the breaker is open."""
        from mlflow.exceptions import MlflowException

        if time.monotonic() < self._down_until:
            raise TrackingUnavailable(f"the MLflow tracking store {self.uri} failed less than "
                                      f"{self.COOLDOWN_S:.0f} s ago; call skipped")
        try:
            result = retry(fn, *args, **kwargs)
        except Exception as e:
            if isinstance(e, MlflowException) and e.error_code in PERMANENT:
                raise  # a refused request, not an unreachable store
            self.failures += 1
            self._down_until = time.monotonic() + self.COOLDOWN_S
            if not self._outage_said:
                self._outage_said = True
                log.warning("the MLflow tracking store %s is unreachable (%s); tracking calls "
                            "are skipped for %.0f s at a time until it answers. %s",
                            self.uri, e, self.COOLDOWN_S, self.NOTHING_LOST)
            raise TrackingUnavailable(f"the MLflow tracking store {self.uri} is unreachable: "
                                      f"{e}") from e
        if self._outage_said:
            self._outage_said = False
            log.warning("the MLflow tracking store %s answers again; %d tracking step(s) were "
                        "skipped meanwhile", self.uri, self.skipped)
        return result

    @contextlib.contextmanager
    def best_effort(self, what: str):
        """The last step of the policy: a failed step is skipped and said at most once.

        An outage was already announced by `call` (once); a refused request (a permanent MLflow
        error, a bug) is logged with what was being done."""
        try:
            yield
        except TrackingUnavailable as e:
            self.skipped += 1
            log.debug("%s skipped: %s", what, e)
        except Exception as e:  # noqa: BLE001 - the one place tracking errors are swallowed
            self.skipped += 1
            log.warning("MLflow: %s failed and was skipped: %s", what, e)

    @property
    def client(self):
        if self._client is None:
            self._client = open_client(self.uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.call(self.client.get_experiment_by_name, self.experiment)
            if exp is not None:
                self._experiment_id = exp.experiment_id
            else:
                local = None if os.environ.get("MLFLOW_TRACKING_URI") else \
                    (Path.cwd() / "mlartifacts").as_uri()
                self._experiment_id = self.call(self.client.create_experiment, self.experiment,
                                            artifact_location=local)
        return self._experiment_id

    def start_parent(self, tags: Mapping[str, Any], params: Mapping[str, Any],
                     run_id: str | None = None) -> str:
        """Create the sweep's parent run, or reopen `run_id` (a resumed sweep)."""
        tracking_auth_from_env()
        try:
            if run_id is None:
                run_id = self.find_parent()
            if run_id is None:
                run = self.call(self.client.create_run, self.experiment_id, run_name=self.sweep_name,
                            tags={"raysweep.role": "sweep", "raysweep.sweep_name": self.sweep_name})
                run_id = run.info.run_id
                self.log(run_id, params={k: str(v) for k, v in scrub_secrets(params).items()})
            else:
                self.call(self.client.update_run, run_id, status="RUNNING")
        except UserError:
            raise
        except Exception as e:
            where = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else \
                "the default SQLite store"
            if (refused := sqlite_error(self.uri, e, where)) is not None:
                raise refused from e
            cause = e.__cause__ if isinstance(e, TrackingUnavailable) and e.__cause__ else e
            if is_unreachable(cause):
                raise UserError(f"cannot reach the MLflow tracking store {self.uri!r}: {e}",
                                where=where,
                                fix="start the tracking server (or fix MLFLOW_TRACKING_URI and "
                                    "its credentials), or unset MLFLOW_TRACKING_URI to log "
                                    "locally") from e
            # it answered, or the local files failed: say what failed, not that it is down
            raise UserError(f"the MLflow tracking store {self.uri!r} could not open the "
                            f"sweep's run: {_first_line(cause)}", where=where,
                            fix="see the store's message; run with --debug for the traceback"
                            ) from e
        self.parent_run_id = run_id
        self.log(run_id, tags={k: str(v) for k, v in scrub_secrets(tags).items()})
        return run_id

    def find_parent(self) -> str | None:
        runs = self.call(self.client.search_runs, [self.experiment_id],
                     filter_string=f"tags.`raysweep.sweep_name` = '{self.sweep_name}' and "
                                   "tags.`raysweep.role` = 'sweep'", max_results=1)
        return runs[0].info.run_id if runs else None

    def children(self) -> dict[str, str]:
        """trial_id -> child run id, for the runs already under this parent (resume)."""
        runs = self.call(self.client.search_runs, [self.experiment_id],
                     filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
                     max_results=50000)
        return {r.data.tags["raysweep.trial_id"]: r.info.run_id for r in runs
                if "raysweep.trial_id" in r.data.tags}

    def last_logged_epoch(self, run_id: str) -> int:
        """The last epoch a run holds (0 if none): what a restored trial must not log again."""
        history = self.call(self.client.get_metric_history, run_id, "epoch")
        return max((int(m.step) for m in history), default=0)

    def retire_orphans(self, trial_ids: set[str]) -> list[str]:
        """Soft-delete the child runs of trials that Tune no longer knows; their run ids.

        A driver killed between a trial's start and Tune's next snapshot of the experiment
        leaves an MLflow run for a trial that the resumed Tune never heard of: it asks the
        searcher again and runs that work as a new trial. The stale run is tagged, marked KILLED
        and deleted (recoverable with `mlflow runs restore`), so that the sweep holds exactly
        one run per trial.
        """
        orphans = [run for tid, run in self.children().items() if tid not in trial_ids]
        for run_id in orphans:
            self.log(run_id, tags={"raysweep.orphaned": "true"})
            self.end(run_id, "KILLED", strict=True)
            self.call(self.client.delete_run, run_id)
        if orphans:
            log.warning("retired %d MLflow run(s) of trials lost with an earlier driver (their "
                        "work was redone as new trials): %s", len(orphans), ", ".join(orphans))
        return orphans

    def start_child(self, trial_id: str, name: str, config: Mapping[str, Any],
                    params: bool = True) -> str:
        """A trial's run; `params=False` leaves its params to the caller (the sweep's writer
        sends them with the run's first batch of metrics: one request fewer per trial)."""
        tags = {"mlflow.parentRunId": self.parent_run_id, "raysweep.trial_id": trial_id,
                "raysweep.role": "trial", "raysweep.sweep_name": self.sweep_name}
        tags.update({k: str(config[k]) for k in TRIAL_TAGS if k in config})
        run = self.call(self.client.create_run, self.experiment_id, run_name=name, tags=tags)
        if params:
            self.log(run.info.run_id, params=flat_params(config))
        return run.info.run_id

    # Writes raise unless strict=False, which runs them in `best_effort`. The defaults are the
    # callers' long-standing ones: metrics strict, finishing writes (artifacts, text, status)
    # best effort, so a report or a sweep's end is never lost to the store.

    def log(self, run_id: str, metrics: Mapping[str, float] | None = None, step: int = 0,
            params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
            strict: bool = True) -> None:
        """One batched write (one round trip per epoch, not one per metric)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        with self._policy(strict, f"logging to run {run_id}"):
            self.call(self.client.log_batch, run_id,
                      metrics=[Metric(k, v, now, step) for k, v in (metrics or {}).items()],
                      params=[Param(k, v[:6000]) for k, v in (params or {}).items()],
                      tags=[RunTag(k, v[:5000]) for k, v in (tags or {}).items()])

    def log_artifacts(self, run_id: str, local_dir: str, path: str, strict: bool = False) -> None:
        with self._policy(strict, f"uploading {local_dir} to run {run_id}"):
            self.call(self.client.log_artifacts, run_id, local_dir, path)

    def log_text(self, run_id: str, text: str, name: str, strict: bool = False) -> None:
        with self._policy(strict, f"uploading {name} to run {run_id}"):
            self.call(self.client.log_text, run_id, text, name)

    def end(self, run_id: str, status: str = "FINISHED", strict: bool = False) -> None:
        with self._policy(strict, f"marking run {run_id} {status}"):
            self.call(self.client.set_terminated, run_id, status=status)

    def _policy(self, strict: bool, what: str):
        return contextlib.nullcontext() if strict else self.best_effort(what)
