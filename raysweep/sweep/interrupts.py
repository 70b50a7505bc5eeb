"""Ctrl-C (SIGINT) and SIGTERM during a sweep: stop gracefully once, and remember that we did.

Tune catches SIGINT itself and returns from `fit()` as if the sweep had ended: its clean-up
marks every running trial TERMINATED, and SIGTERM (what `kill`, systemd and Kubernetes send)
it does not catch at all, so the driver died with its MLflow runs left RUNNING. Here both
signals take Tune's graceful path (its SIGUSR1 handler: one last snapshot, trials stopped), and
`Interrupts.signal` says that the sweep was interrupted, so that it ends KILLED, its unfinished
trials INTERRUPTED, and the resume command is printed. A second signal stops at once
(KeyboardInterrupt). Outside `fit()` (data preparation, the leaderboard) a signal is a
KeyboardInterrupt straight away.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODE = 130  # what a shell reports for a command ended by Ctrl-C


class Interrupts:
    def __init__(self) -> None:
        self.signal: str | None = None  # the name of the first signal received
        self._in_tune = False
        self._saved: dict[int, object] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def tune(self) -> Iterator[None]:
        """Around `Tuner.fit()`: a signal asks Tune to stop gracefully instead of raising.
        Tune's own SIGINT handler is turned off for the call, so every SIGINT reaches ours."""
        old = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        if self._saved:  # ray.init put its own (C++) SIGTERM handler over ours: take it back
            for sig in SIGNALS:
                signal.signal(sig, self._handle)
        self._in_tune = True
        try:
            yield
        finally:
            self._in_tune = False
            if old is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = old

    def _handle(self, sig: int, frame) -> None:
        first = self.signal is None
        self.signal = self.signal or signal.Signals(sig).name
        tune_stop = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
        if first and self._in_tune and callable(tune_stop):
            log.warning("%s received: stopping the sweep after Tune's last snapshot (send it "
                        "again to stop at once)", self.signal)
            tune_stop(sig, frame)
            return
        raise KeyboardInterrupt(self.signal)
