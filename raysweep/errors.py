"""One error type for everything a user can fix, and one way for CLIs to show it.

A user-facing command prints what is wrong, where, and how to fix it, then exits non-zero; a
traceback is only for `--debug`, because a stack of Ray and torch frames hides the one line that
matters.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """A problem with the user's input or environment, stated so that they can fix it."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.message())

    def message(self) -> str:
        parts = [self.what.rstrip(".") + "."]
        if self.where:
            parts.append(f"Where: {self.where}.")
        if self.fix:
            parts.append(f"Fix: {self.fix.rstrip('.')}.")
        return " ".join(parts)


def unknown_name(kind: str, name: str, valid: Sequence[str], where: str | None = None) -> UserError:
    """The error for a name missing from a registry; it lists the valid names (timm's habit)."""
    return UserError(
        f"unknown {kind} {name!r}",
        where=where,
        fix=f"use one of: {', '.join(sorted(valid))}",
    )


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a CLI `main(argv)`; a UserError becomes one paragraph on stderr and exit code 2.

    `--debug` anywhere in argv re-raises so the full traceback shows.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        return int(main(args) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e.message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130


def setup_logging(debug: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
