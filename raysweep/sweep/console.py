"""A sweep's console: Tune's own output quieted, one line per failed trial, and the closing lines
that say where everything is.

Ray Tune 2.60, left alone at verbose 0, prints its configuration table, "View detailed results
here", "To visualize your results with TensorBoard" (whenever its TensorBoard logger runs, which
Tune adds by default), for every failed trial a logged 40-line traceback and a result box, and
"Trials did not complete" at the end. raysweep writes no TensorBoard files worth opening and has
its own progress bar, so a sweep says each failure in one line with its reason; the traceback
stays in the trial's error.txt under the sweep's storage and on its MLflow run (error.txt, tag
`raysweep.error`). `--debug` (verbose > 0) shows Tune's output as Tune prints it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from ray import tune
from tqdm import tqdm

from raysweep.tracking.reconcile import diverged

# Tune reads these when the run starts (Tuner.fit). A value the user exported wins.
QUIET_ENV = {
    # No default loggers: the TensorBoard one is what prints the TensorBoard line; the tuner
    # names the CSV and JSON loggers the leaderboard needs.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}
QUIET_UNLESS_DEBUG = {
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",  # the logged traceback of every failed trial
    # Tune's older console reporter prints nothing at verbose 0; the new one prints its
    # configuration table and a result box per failed trial at any verbosity.
    "RAY_AIR_NEW_OUTPUT": "0",
}
INCOMPLETE = "Trials did not complete"  # Tune's closing error line, said per trial here already


class _DropIncomplete(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(INCOMPLETE)


DROP_INCOMPLETE = _DropIncomplete()


def quiet_tune(verbose: int) -> dict[str, str]:
    """Quiet Tune's console for the run about to start; the settings it applied."""
    wanted = {**QUIET_ENV, **({} if verbose else QUIET_UNLESS_DEBUG)}
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    if not verbose:
        tune_log = logging.getLogger("ray.tune.tune")
        if DROP_INCOMPLETE not in tune_log.filters:
            tune_log.addFilter(DROP_INCOMPLETE)
    return {k: os.environ[k] for k in wanted}


def reason(text: str) -> str:
    """The line of a traceback that says what went wrong: its last exception line."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if not line.startswith(("File ", "^", "~", "Traceback", "raise ", "During handling",
                                "The above exception")):
            kind, sep, rest = line.partition(": ")
            if sep and re.fullmatch(r"[\w.]+", kind):  # raysweep.train.loop.NonFiniteLoss
                line = f"{kind.rsplit('.', 1)[-1]}: {rest}"
            return line[:400]
    return "failed without an error message"


def failure_line(trial, retrying: bool = False) -> str:
    """`trial_3f2a1b0c_00004 failed after epoch 29: NonFiniteLoss: non-finite ... [traceback:
    ...]`: the trial's name (its MLflow run's), the last epoch it reported, the reason."""
    result: Mapping = trial.last_result or {}
    epoch = result.get("epoch", result.get("training_iteration"))
    why = diverged(trial)
    if why:  # ended by its last result, not raised: no traceback, no retry
        return f"{trial} diverged in epoch {epoch}, not retried: {reason(why)}  [its MLflow run]"
    text = _error_text(trial)
    where = f" after epoch {epoch}" if epoch else ""
    then = " (retrying from its last checkpoint)" if retrying else ""
    error_file = f"{trial.path}/error.txt" if getattr(trial, "path", None) else trial.error_file
    return (f"{trial} failed{where}{then}: {reason(text)}  "
            f"[traceback: {error_file}, and on the trial's MLflow run]")


def _error_text(trial) -> str | None:
    """The trial's error.txt: in the sweep's storage once synced, in the driver's staging
    folder (`error_file`) when Tune has only just written it (as in on_trial_error)."""
    text = trial.get_error() if hasattr(trial, "get_error") else None
    local = getattr(trial, "error_file", None)
    if not text and local and os.path.exists(local):
        text = Path(local).read_text()
    return text


class FailureLines(tune.Callback):
    """One line on stderr per failed (or retried) trial, above the progress bar."""

    def on_trial_error(self, iteration, trials, trial, **info):
        _say(failure_line(trial))

    def on_trial_complete(self, iteration, trials, trial, **info):
        if diverged(trial):
            _say(failure_line(trial))

    def on_trial_recover(self, iteration, trials, trial, **info):
        _say(failure_line(trial, retrying=True))


def _say(line: str) -> None:
    tqdm.write(line, file=sys.stderr)


def where(out, report: str | Path | None = None) -> str:
    """The closing lines of a sweep (`out`, a run.SweepResult): where its results, its MLflow
    store and its report are."""
    uri = out.tracking_uri
    browse = "open it in a browser" if uri.startswith(("http://", "https://")) else \
        f"browse with `mlflow ui --backend-store-uri {uri}`"
    report_line = str(report) if report else (
        f"none yet: `python -m raysweep.eval_winners --parent-run {out.parent_run_id}` "
        "writes it (or run the sweep with --eval-winners)")
    return "\n".join([f"results: {out.path}/results.csv",
                      f"MLflow parent run: {out.parent_run_id} in {uri} ({browse})",
                      f"report:  {report_line}"])


def any_finished(out) -> bool:
    """Whether a trial of the sweep `out` finished: what an evaluation needs to run."""
    return "status" in out.table and bool((out.table["status"] == "FINISHED").any())
