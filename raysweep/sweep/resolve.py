"""Resolve a sweep's `Request` (flags + space, or the saved `SweepSpec` on --resume) into a
concrete, frozen `SweepSpec`: everything the user can get wrong, checked before Ray starts."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from raysweep.config import SELECT_METRIC, SELECT_MODE
from raysweep.data.card import card_path
from raysweep.data.splits import check_validation
from raysweep.errors import UserError, unknown_name
from raysweep.sweep import files, spaces, strategy
from raysweep.sweep.data import describe_data, missing_blocks, smoke_dataset
from raysweep.sweep.spec import (
    BUILTIN_DATA,
    DEFAULT_STORAGE,
    SPEC_FILE,
    EarlyStopping,
    Request,
    SweepSpec,
    Tracking,
    saved_parent_run,
)
from raysweep.sweep.spec import Resources as SpecResources
from raysweep.sweep.storage import check_writable
from raysweep.tracking.store import tracking_uri
from raysweep.uri import is_uri

log = logging.getLogger("raysweep.search")
SMOKE = {"num_samples": 2, "epochs": 2}
SEARCHERS = strategy.SAMPLERS


@dataclass(frozen=True)
class Sweep:
    """The runtime objects a spec resolves to (the spec itself holds only plain values)."""

    space: spaces.Space  # a copy with the epochs budget in FIXED; the loaded one is not touched
    checked: spaces.Checked
    overrides: dict
    data: Any  # what load_data reads: a path, a URI, an in-memory Prepared, or None
    parent_run_id: str | None = None  # with --resume: the MLflow parent run to reopen
    missing: dict = field(default_factory=dict)  # feature blocks the data lacks (DefineByRun)


def storage_root(storage: str | None) -> str:
    storage = storage or DEFAULT_STORAGE
    if is_uri(storage):
        return storage.rstrip("/")
    return os.path.abspath(os.path.expanduser(storage))


def resolve(request: Request) -> tuple[SweepSpec, Sweep]:
    """The request (plus, with --resume, the sweep's own spec) and the space -> a concrete spec."""
    _check_flags(request)
    data = request.data
    if isinstance(data, str | Path) and not is_uri(data):
        card_path(data)  # a missing dataset fails here, before a run is opened in MLflow
    root = storage_root(request.storage)
    check_writable(root)
    saved, parent = read_spec(root, request.name) if request.resume else (None, None)
    if saved is not None:
        _refuse_what_resume_ignores(request, saved)
    space_arg = request.space
    if space_arg is None and saved is not None:
        space_arg = saved.space if saved.space in spaces.builtin_spaces() else saved.space_source
    if space_arg is None:
        raise UserError("no search space given", where="--space",
                        fix=f"pass --space with one of: {', '.join(spaces.builtin_spaces())}, "
                            "or a .py file (only --resume can leave it out)")
    loaded = spaces.load_space(space_arg)
    if saved and saved.space != loaded.name:
        raise UserError(f"sweep {request.name!r} searched space {saved.space!r}, not "
                        f"{loaded.name!r}", where="--resume", fix=f"pass --space {saved.space}")
    # What the sweep was started with, so that `--resume --name X` alone continues it.
    sets, smoke = (saved.sets, saved.smoke_test) if saved else (request.sets, request.smoke_test)
    names = spaces.check_space(loaded, {}).names
    overrides = spaces.parse_sets(sets, extra_names=names)
    if smoke:
        overrides.setdefault("epochs", SMOKE["epochs"])
    fixed = dict(loaded.FIXED)
    if loaded.MAX_EPOCHS and "epochs" not in fixed:
        fixed["epochs"] = loaded.MAX_EPOCHS
    sp = replace(loaded, settings={**loaded.settings, "FIXED": fixed})
    if data is None and saved and saved.data not in BUILTIN_DATA:
        data = saved.data
    missing = missing_blocks(data)  # no data given: the synthetic set (photos, hence rings)
    checked = spaces.check_space(sp, overrides, missing=missing)
    if checked.pruned:
        log.warning("%s", spaces.pruned_note(checked.pruned))
    if isinstance(data, str | Path) and not is_uri(data):  # before Ray, not in each trial
        check_validation(data, **{k: checked.base[k] for k in ("split_by", "val_fraction")
                                  if k in checked.base})
    if data is None and smoke:
        data = smoke_dataset()
    spec = (_resumed(saved, request, root, data) if saved else
            _new_spec(request, sp, root, data, max(s["epochs"] for s in checked.samples)))
    if not request.resume and files.read_text(f"{spec.path}/{SPEC_FILE}") is not None:
        raise UserError(f"a sweep named {spec.name!r} already exists under {root}",
                        fix="pass --resume to continue it, or choose another --name")
    return spec, Sweep(sp, checked, overrides, data, parent, missing)


def _check_flags(request: Request) -> None:
    if request.name is not None:
        check_name(request.name)
    if request.searcher not in SEARCHERS:
        raise unknown_name("searcher", request.searcher, SEARCHERS, where="--searcher")
    # 0 must not quietly mean "the space's default": say it is invalid.
    for flag, value, least in (("--num-samples", request.num_samples, 1),
                               ("--max-concurrent", request.max_concurrent, 1),
                               ("--workers-per-trial", request.workers_per_trial, 1),
                               ("--grace-period", request.grace_period, 1),
                               ("--reduction-factor", request.reduction_factor, 2),
                               ("--brackets", request.brackets, 1),
                               ("--max-failures", request.max_failures, 0)):
        if value is not None and value < least:
            raise UserError(f"{flag} must be at least {least}, got {value}", where=flag,
                            fix=f"pass {flag} {least} or more, or leave it out for the default")


# A sweep name is a folder under --storage and a value in MLflow's run filters: no path, no quote.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_MAX = 128


def check_name(name: str) -> None:
    fix = "use letters, digits, '.', '_' and '-' only, e.g. --name fusion-2026-12-01"
    if len(name) > NAME_MAX:
        raise UserError(f"--name is {len(name)} characters long; a sweep name has at most "
                        f"{NAME_MAX} (it names a folder and MLflow runs)", where="--name",
                        fix=fix)
    if not NAME.fullmatch(name) or ".." in name:
        raise UserError(f"{name!r} is not a sweep name: it becomes a folder under --storage and "
                        "an MLflow filter value, so it may hold no path separator, quote, space "
                        "or '..', and starts with a letter or digit", where="--name", fix=fix)


def default_name(space: str) -> str:
    """SPACE-DATE-TIME, with what a name may not hold (a space file named `it's.py`) as `_`."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", space).strip("._-")[:80] or "sweep"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}".replace("..", "_")


def _refuse_what_resume_ignores(request: Request, saved: SweepSpec) -> None:
    """--resume continues the sweep as it was started: a flag that would change what it
    samples or how it stops is refused, not silently ignored."""
    given = [("--set", bool(request.sets) and tuple(request.sets) != tuple(saved.sets),
              " ".join(saved.sets) or "none"),
             ("--num-samples", request.num_samples not in (None, saved.num_samples),
              saved.num_samples),
             ("--seed", request.seed not in (None, saved.seed), saved.seed),
             ("--grace-period", request.grace_period not in (None, saved.early_stopping
                                                             .grace_period),
              saved.early_stopping.grace_period),
             ("--reduction-factor", request.reduction_factor not in (
                 None, saved.early_stopping.reduction_factor),
              saved.early_stopping.reduction_factor),
             ("--brackets", request.brackets not in (None, saved.early_stopping.brackets),
              saved.early_stopping.brackets),
             ("--no-early-stopping", not request.early_stopping and saved.early_stopping.enabled,
              "on"),
             ("--smoke-test", request.smoke_test and not saved.smoke_test, "off")]
    data = request.data
    if isinstance(data, str | Path) and saved.data not in BUILTIN_DATA and \
            describe_data(data) != saved.data and Path(saved.data).exists():
        given.append(("--data", True, saved.data))  # allowed only for a dataset that moved
    refused = [(flag, was) for flag, changed, was in given if changed]
    if refused:
        shown = "; ".join(f"{flag} (the sweep has {was})" for flag, was in refused)
        raise UserError(f"--resume continues sweep {saved.name!r} as it was started, so it "
                        f"cannot change: {shown}", where="--resume",
                        fix="leave these flags out to resume, or start a new sweep with "
                            "another --name to search differently")


def read_spec(root: str, name: str | None) -> tuple[SweepSpec, str | None]:
    """The spec that the sweep `name` under `root` was started with, and its MLflow parent run
    (for --resume)."""
    if not name:
        raise UserError("--resume needs the --name of the sweep to continue",
                        fix=f"look up the name under {root} and pass --name NAME")
    where = f"{root}/{name}/{SPEC_FILE}"
    text = files.read_text(where)
    if text is None:
        raise UserError(f"no sweep named {name!r} under {root}", where="--resume",
                        fix="pass the same --name and --storage as the interrupted sweep")
    return SweepSpec.from_json(text, where=where), saved_parent_run(text)


def _new_spec(request: Request, sp: spaces.Space, root: str, data: Any, epochs: int) -> SweepSpec:
    smoke = request.smoke_test
    return SweepSpec(
        name=request.name or default_name(sp.name), storage=root,
        space=sp.name, space_source=sp.source, data=describe_data(data),
        sets=tuple(request.sets), seed=request.seed if request.seed is not None else 0,
        num_samples=request.num_samples or (SMOKE["num_samples"] if smoke else sp.NUM_SAMPLES),
        epochs=epochs, metric=SELECT_METRIC, mode=SELECT_MODE, searcher=request.searcher,
        smoke_test=smoke, max_failures=request.max_failures,
        resources=SpecResources(
            workers_per_trial=request.workers_per_trial or sp.WORKERS_PER_TRIAL,
            cpus_per_worker=request.cpus_per_worker or sp.CPUS_PER_TRIAL,
            gpus_per_trial=request.gpus_per_trial if request.gpus_per_trial is not None
            else sp.GPUS_PER_TRIAL, max_concurrent=request.max_concurrent),
        early_stopping=EarlyStopping(request.early_stopping,
                                     request.grace_period or space_grace(sp, epochs),
                                     request.reduction_factor or sp.REDUCTION_FACTOR,
                                     request.brackets or sp.BRACKETS),
        tracking=Tracking(uri=tracking_uri(), experiment=sp.name))


def space_grace(sp: spaces.Space, epochs: int) -> int:
    """ASHA's first rung: the space's GRACE_FRACTION of this sweep's budget, else GRACE_PERIOD."""
    if sp.GRACE_FRACTION:
        return strategy.grace_epochs(epochs, sp.GRACE_FRACTION)
    return sp.GRACE_PERIOD


def _resumed(saved: SweepSpec, request: Request, root: str, data: Any) -> SweepSpec:
    """The saved spec, with what may differ where it resumes: the storage path it was found
    at, resource flags given again (another cluster), the retry budget, a dataset moved."""
    r, given = saved.resources, request
    return replace(
        saved, name=request.name, storage=root,
        data=describe_data(data) if request.data is not None else saved.data,
        max_failures=request.max_failures,
        resources=SpecResources(
            workers_per_trial=given.workers_per_trial or r.workers_per_trial,
            cpus_per_worker=given.cpus_per_worker or r.cpus_per_worker,
            gpus_per_trial=r.gpus_per_trial if given.gpus_per_trial is None
            else given.gpus_per_trial,
            max_concurrent=given.max_concurrent or r.max_concurrent),
        # A resumed sweep logs into the store it started in, wherever it is resumed from,
        # unless MLFLOW_TRACKING_URI says where that store is now.
        tracking=replace(saved.tracking, uri=tracking_uri() if os.environ.get(
            "MLFLOW_TRACKING_URI") or not saved.tracking.uri else saved.tracking.uri))
