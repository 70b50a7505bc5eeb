"""`SweepSpec`: the one typed record of what a sweep is, written with it and read back by --resume.

`python -m raysweep.search` turns its command line into a `Request` (`Request.from_args`, the
one place a flag becomes a setting; None means "the space's default", or with --resume "the
sweep's own"), resolves it against the space into a frozen `SweepSpec` (every value concrete,
built once and never rebuilt), and writes the spec as JSON next to the sweep's Tune state
(`<storage>/<name>/raysweep_sweep.json`) together with the MLflow parent run it opened.
`--resume --name X` reads both back, so a sweep continues with what it was started with (a DDP
sweep does not come back as one-worker trials) into the same run.

The file carries a `version`: a file from a newer raysweep is refused in one paragraph rather
than half-read. Files written before the spec existed (no `version`) are read as version 0.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from raysweep.errors import UserError

VERSION = 1
SPEC_FILE = "raysweep_sweep.json"
BUILTIN_DATA = ("<in-memory>", "synthetic default")  # describe_data's names for no path
DEFAULT_STORAGE = "~/raysweep_results"  # a Request without --storage


@dataclass(frozen=True)
class Request:
    """The command line (or what `run_sweep` is given), before the space fills in its defaults."""

    space: str | None = None
    data: Any = None  # a card/folder path, a URI, an in-memory Prepared, or None
    num_samples: int | None = None
    max_concurrent: int | None = None
    workers_per_trial: int | None = None
    gpus_per_trial: float | None = None
    cpus_per_worker: float | None = None
    storage: str | None = None
    name: str | None = None
    resume: bool = False
    seed: int | None = None  # None: 0 for a new sweep; on --resume, the sweep's own
    sets: tuple[str, ...] = ()
    smoke_test: bool = False
    grace_period: int | None = None
    reduction_factor: int | None = None
    brackets: int | None = None  # None: the space's BRACKETS (1 = plain ASHA)
    max_failures: int = 1
    searcher: str = "tpe"
    early_stopping: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Request:
        """The parsed command line: each flag's `dest` is the field of the same name."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**{**given, "sets": tuple(given.get("sets") or ())})


@dataclass(frozen=True)
class Resources:
    """What a trial asks for (the resource flags); `resources.plan` turns it into a Plan."""

    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_trial: float | None = None  # None: the plan decides from the cluster's GPUs
    max_concurrent: int | None = None  # None: as many as fit


@dataclass(frozen=True)
class EarlyStopping:
    enabled: bool  # False: every trial runs its last epoch (no ASHA)
    grace_period: int
    reduction_factor: int
    brackets: int = 1  # asynchronous Hyperband's brackets (records before it: 1, plain ASHA)


@dataclass(frozen=True)
class Tracking:
    uri: str  # the MLflow store, resolved before the sweep starts
    experiment: str


@dataclass(frozen=True)
class SweepSpec:
    name: str
    storage: str  # the root folder or URI; the sweep lives in <storage>/<name>
    space: str  # the space's name
    space_source: str  # its file: how --resume finds a user's own space again
    data: str  # describe_data(): a resolved path, a URI, or one of BUILTIN_DATA
    sets: tuple[str, ...]  # the --set KEY=VALUE overrides, as given
    seed: int
    num_samples: int
    epochs: int  # the budget: the most epochs any trial runs
    metric: str
    mode: str
    searcher: str
    smoke_test: bool
    max_failures: int
    resources: Resources
    early_stopping: EarlyStopping
    tracking: Tracking
    version: int = field(default=VERSION)

    @property
    def path(self) -> str:
        return f"{self.storage}/{self.name}"

    def params(self) -> dict[str, Any]:
        """The parent run's MLflow params (names kept from before the spec: eval_winners and
        existing runs read them)."""
        return {"space": self.space, "space_source": self.space_source, "sets": list(self.sets),
                "seed": self.seed, "num_samples": self.num_samples,
                "smoke_test": self.smoke_test, "max_epochs": self.epochs,
                "grace_period": self.early_stopping.grace_period,
                "reduction_factor": self.early_stopping.reduction_factor,
                "early_stopping": self.early_stopping.enabled, "metric": self.metric,
                "mode": self.mode, "workers_per_trial": self.resources.workers_per_trial,
                "data": self.data}

    def to_json(self, parent_run_id: str | None = None) -> str:
        """The spec and the parent run it opened (`saved_parent_run` reads it back)."""
        raw = asdict(self)
        raw["tracking"]["parent_run_id"] = parent_run_id
        return json.dumps(raw, indent=2)

    @classmethod
    def from_json(cls, text: str, where: str) -> SweepSpec:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"the sweep record is not valid JSON ({e})", where=where,
                            fix="restore the file, or start the sweep again under a new "
                                "--name") from None
        if not isinstance(raw, dict):
            raise UserError("the sweep record is not a JSON object", where=where,
                            fix="start the sweep again under a new --name")
        version = raw.get("version", 0)
        if version == 0:
            raw = _from_v0(raw)
        elif version != VERSION:
            raise UserError(f"the sweep was written by a raysweep whose sweep record is version "
                            f"{version!r}; this one reads version {VERSION}", where=where,
                            fix="resume it with the raysweep that started it")
        try:
            spec = cls(**{
                **_known(cls, raw), "sets": tuple(raw["sets"]),
                "resources": Resources(**_known(Resources, raw["resources"])),
                "early_stopping": EarlyStopping(**_known(EarlyStopping, raw["early_stopping"])),
                "tracking": Tracking(**_known(Tracking, raw["tracking"]))})
        except (KeyError, TypeError) as e:
            raise UserError(f"the sweep record lacks or mistypes a field ({e})", where=where,
                            fix="restore the file, or start the sweep again under a new "
                                "--name") from None
        bad = mistyped(spec)
        if bad:  # found here, not as a traceback deep in the resumed sweep
            raise UserError(f"the sweep record mistypes {', '.join(bad)}", where=where,
                            fix="restore the file, or start the sweep again under a new --name")
        return spec


def saved_parent_run(text: str) -> str | None:
    """The MLflow parent run a spec file records (None: none yet); the file was read by
    `SweepSpec.from_json` first, so it is a valid record."""
    raw = json.loads(text)
    run = (raw.get("tracking") or {}).get("parent_run_id") if raw.get("version") else \
        raw.get("parent_run_id")
    return run if isinstance(run, str) and run else None


def mistyped(record: Any) -> list[str]:
    """`field=value` for every field of a (nested) dataclass record whose value is not of its
    annotated type (bool is no int here, an int is a float)."""
    hints = typing.get_type_hints(type(record))
    bad = []
    for f in fields(record):
        value = getattr(record, f.name)
        if is_dataclass(value):
            bad += [f"{f.name}.{b}" for b in mistyped(value)]
        elif not _is(value, hints[f.name]):
            bad.append(f"{f.name}={value!r}")
    return bad


def _is(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        ok = (int, float) if hint is float else (int,)
        return isinstance(value, ok) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, tuple) and all(_is(v, args[0]) for v in value)
    return hint is Any or not isinstance(hint, type) or isinstance(value, hint)


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def _from_v0(raw: dict[str, Any]) -> dict[str, Any]:
    """The untyped dict that sweeps wrote before the spec (resource flags other than the
    workers were not recorded; early stopping was always on unless a baseline turned it off)."""
    return {**raw, "name": raw.get("name", ""), "storage": raw.get("storage", ""),
            "space_source": raw.get("space_source") or raw["space"],
            "epochs": raw["max_epochs"], "searcher": raw.get("searcher", "tpe"),
            "max_failures": raw.get("max_failures", 1), "version": VERSION,
            "resources": {"workers_per_trial": raw.get("workers_per_trial") or 1,
                          "cpus_per_worker": raw.get("cpus_per_worker") or 1.0,
                          "gpus_per_trial": None, "max_concurrent": None},
            "early_stopping": {"enabled": raw.get("early_stopping", True),
                               "grace_period": raw["grace_period"],
                               "reduction_factor": raw["reduction_factor"]},
            "tracking": {"uri": raw.get("tracking_uri") or "", "experiment": raw["space"]}}
