"""Search spaces: load a study by name or file, fix parameters, and validate it before Ray starts.

A space is a plain Python file with `define_by_run(trial) -> dict` of TrainConfig overrides
(Optuna define-by-run: conditional parameters are just `if`s) and optional constants:
FIXED (dict), MAX_EPOCHS, GRACE_FRACTION (ASHA's first rung as a share of the epoch budget) or
GRACE_PERIOD (in epochs), REDUCTION_FACTOR, NUM_SAMPLES, CPUS_PER_TRIAL, GPUS_PER_TRIAL,
WORKERS_PER_TRIAL. What "best" means is not a space's to choose (config.SELECT_METRIC: the same
for checkpoints, Tune and evaluation), so METRIC and MODE are refused. It computes nothing, so we can run it a few
dozen times with random choices to catch unknown names and invalid combinations up front.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import search_spaces
from raysweep.config import (
    FEATURE_BLOCKS,
    SELECT_METRIC,
    SELECT_MODE,
    WIDTH_BACKBONES,
    TrainConfig,
    coerce,
    ignored_fields,
)
from raysweep.errors import UserError, unknown_name

# Data-level settings: one prepared split serves the whole sweep, so these cannot vary per trial.
SPLIT_KEYS = ("split_by", "val_fraction", "test_fraction", "seed")
# Settings that pick a prepared variant of the data (one object-store copy each).
DATA_KEYS = ("crop", "image_size")
SETTINGS = {  # module constant -> default
    "FIXED": {}, "MAX_EPOCHS": None, "GRACE_PERIOD": 1, "GRACE_FRACTION": None,
    "REDUCTION_FACTOR": 3, "NUM_SAMPLES": 16, "CPUS_PER_TRIAL": 1.0, "GPUS_PER_TRIAL": None,
    "WORKERS_PER_TRIAL": 1, "BRACKETS": 1,
}
REFUSED = ("METRIC", "MODE")  # settings of older raysweeps that only Tune honoured


@dataclass
class Space:
    name: str
    define_by_run: Callable[[Any], dict | None]
    doc: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __getattr__(self, key: str) -> Any:  # space.MAX_EPOCHS etc.
        settings = self.__dict__.get("settings", {})
        if key in settings:
            return settings[key]
        raise AttributeError(key)

    @property
    def question(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""


def builtin_spaces() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(search_spaces.__path__)
                  if not m.name.startswith("_"))


def load_space(name_or_path: str) -> Space:
    """A built-in study by name (`search_spaces/<name>.py`) or a user's own file."""
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".py") or path.is_file():
        if not path.is_file():
            raise UserError(f"search space file {str(path)!r} does not exist", where="--space",
                            fix="give the path of a .py file with define_by_run(trial), or "
                                f"one of the built-in spaces: {', '.join(builtin_spaces())}")
        module_name = f"raysweep_user_space_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        # Registered under a name that depends only on the file name: Tune pickles the searcher
        # (and so define_by_run, by reference) for --resume, which loads the file again first.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[module_name]
            raise UserError(f"search space file {str(path)!r} failed to import: {e!r}",
                            where="--space", fix="run `python <file>` to see the error") from e
        name, source = path.stem, str(path.resolve())
    else:
        valid = builtin_spaces()
        if name_or_path not in valid:
            raise unknown_name("search space", name_or_path, valid, where="--space")
        module = importlib.import_module(f"search_spaces.{name_or_path}")
        name, source = name_or_path, module.__file__
    fn = getattr(module, "define_by_run", None)
    if not callable(fn):
        raise UserError(f"search space {name!r} has no define_by_run(trial) function",
                        where=source, fix="define `def define_by_run(trial): return {...}`")
    if refused := [k for k in REFUSED if hasattr(module, k)]:
        raise UserError(f"search space {name!r} sets {' and '.join(refused)}, which raysweep "
                        f"does not take from a space: every part ranks by {SELECT_METRIC} "
                        f"({SELECT_MODE}), the checkpoint each trial keeps, Tune's searcher and "
                        "scheduler, the leaderboard and eval_winners' leaders alike",
                        where=source, fix=f"remove {' and '.join(refused)} from the space")
    settings = {k: getattr(module, k, v) for k, v in SETTINGS.items()}
    check_settings(settings, source)
    settings["FIXED"] = dict(settings["FIXED"] or {})
    return Space(name=name, define_by_run=fn, doc=module.__doc__ or "", settings=settings,
                 source=source)


# What each module constant must be (None allowed where its default is None).
SETTING_TYPES = {"FIXED": dict, "MAX_EPOCHS": int, "GRACE_PERIOD": int, "GRACE_FRACTION": float,
                 "REDUCTION_FACTOR": int, "NUM_SAMPLES": int, "CPUS_PER_TRIAL": float, "GPUS_PER_TRIAL": float, "WORKERS_PER_TRIAL": int,
                 "BRACKETS": int}


def check_settings(settings: dict[str, Any], source: str) -> None:
    """A space's constants of the wrong type (`FIXED = [...]`, `NUM_SAMPLES = "8"`) are one
    paragraph naming the constant, not a traceback later."""
    for key, want in SETTING_TYPES.items():
        value = settings.get(key)
        if value is None and (SETTINGS[key] is None or key == "FIXED"):
            continue
        ok = (int, float) if want is float else (want,)
        if isinstance(value, bool) or not isinstance(value, ok):
            kind = {dict: "a dict", float: "a number", int: "an int", str: "a str"}[want]
            raise UserError(f"{key} = {value!r} in search space {source} is not {kind}",
                            where=f"{source}: {key}",
                            fix='e.g. FIXED = {"epochs": 20}' if want is dict else
                            f"give {key} a {want.__name__} value, or leave it out for the "
                            f"default ({SETTINGS[key]!r})")


# A feature block the data lacks -> (why, how the data gains it): sweep.data.missing_blocks.
Missing = Mapping[str, tuple[str, str]]
# What each block that data can lack is needed by: `inv` is computed from the ring statistics.
NEEDED_BY = {"image": {"image"}, "ring": {"ring", "inv"}}


def prune_features(choices: Sequence[Any], missing: Missing) -> tuple[list[Any], dict[Any, str]]:
    """(the `features` presets the data can feed, {each other preset: why not}).

    A preset needing a block the data lacks can never run: ring or image stop every trial that
    draws it with a UserError (retried once, for nothing), and inv without the ring trains on
    columns missing on every row (data/invariant.py). On a phone spreadsheet that was a third
    of the budget, and TPE learnt from the failures. So the sweep searches only what the data
    can feed, and says what it left out; the space file keeps its question as written.
    """
    kept, removed = [], {}
    for preset in choices:
        blocks = set(str(preset).split("+"))
        whys = [missing[b][0] for b in NEEDED_BY if b in missing and blocks & NEEDED_BY[b]]
        if whys:
            removed[preset] = "; ".join(whys)
        else:
            kept.append(preset)
    return kept, removed


def pruned_note(pruned: Mapping[Any, str]) -> str:
    """The console's one line on what prune_features left out of the sweep, and why."""
    by_why: dict[str, list[str]] = {}
    for preset, why in pruned.items():
        by_why.setdefault(why, []).append(str(preset))
    return "; ".join(f"features {', '.join(sorted(presets))} left out of the search: {why}"
                     for why, presets in by_why.items())


class FixingTrial:
    """Wraps an Optuna trial: parameters fixed by `--set` are returned, not searched, and the
    `features` choices the data cannot feed (`missing`) are not offered (prune_features)."""

    def __init__(self, trial: Any, fixed: dict[str, Any], missing: Missing | None = None):
        self._trial, self._fixed, self._missing = trial, fixed, missing or {}
        self.removed: dict[Any, str] = {}

    def _maybe(self, name: str, suggest: Callable, *args: Any, **kwargs: Any) -> Any:
        if name in self._fixed:
            return self._fixed[name]
        return suggest(name, *args, **kwargs)

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        return self._maybe(name, self._trial.suggest_float, *args, **kwargs)

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        return self._maybe(name, self._trial.suggest_int, *args, **kwargs)

    def suggest_categorical(self, name: str, choices: Sequence[Any], **kwargs: Any) -> Any:
        if name == "features" and self._missing and name not in self._fixed:
            kept, removed = prune_features(choices, self._missing)
            if kept:  # none left: every draw is unrunnable, which check_space refuses
                choices = kept
                self.removed.update(removed)
        return self._maybe(name, self._trial.suggest_categorical, choices, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._trial, attr)


class DefineByRun:
    """The callable OptunaSearch samples: space FIXED, then the space's choices, then `--set`.

    Picklable (Tune saves the searcher with the experiment, for --resume). `missing`: the
    feature blocks the data lacks, whose presets are not offered (prune_features); `removed`
    collects what that left out.
    """

    def __init__(self, fn: Callable, space_fixed: dict[str, Any], overrides: dict[str, Any],
                 missing: Missing | None = None):
        self.fn, self.space_fixed, self.overrides = fn, dict(space_fixed), dict(overrides)
        self.missing, self.removed = dict(missing or {}), {}

    def __call__(self, trial: Any) -> dict[str, Any]:
        # A searcher pickled before `missing` existed (--resume of an older sweep) has neither.
        fixing = FixingTrial(trial, self.overrides, self.__dict__.get("missing"))
        chosen = self.fn(fixing) or {}
        self.__dict__.setdefault("removed", {}).update(fixing.removed)
        if not isinstance(chosen, dict):
            raise TypeError(f"define_by_run must return a dict, got {type(chosen).__name__}")
        return {**self.space_fixed, **chosen, **self.overrides}


def parse_sets(pairs: Iterable[str], extra_names: Iterable[str] = ()) -> dict[str, Any]:
    """`--set key=value` pairs -> typed overrides (TrainConfig fields, or the space's own names)."""
    out: dict[str, Any] = {}
    fields = TrainConfig.field_names()
    extra = set(extra_names)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {pair!r} is not key=value", where="--set",
                            fix="write e.g. --set lr=3e-4")
        if key in fields:
            out[key] = coerce(key, value.strip(), where=f"--set {pair}")
        elif key in extra:
            out[key] = _literal(value.strip())
        else:
            raise unknown_name("parameter", key, fields + sorted(extra), where=f"--set {pair}")
    return out


def _literal(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


class _Replay:
    """Answers suggest_* with the values a trial already drew (to re-run define_by_run)."""

    def __init__(self, trial: Any):
        self.params = trial.params

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.params[name]

    suggest_int = suggest_categorical = suggest_float


@dataclass
class Checked:
    """What the dry run learned about a space."""

    names: set[str]  # every name the space suggests (searched parameters)
    variants: list[tuple[str, int]]  # (crop, image_size) pairs the trials can ask for
    base: dict[str, Any]  # values every trial shares (split settings, epochs, ...)
    samples: list[dict[str, Any]]
    pruned: dict[str, str] = field(default_factory=dict)  # features left out -> why (missing)


def check_space(space: Space, overrides: dict[str, Any], n: int = 64, seed: int = 0,
                missing: Missing | None = None) -> Checked:
    """Run define_by_run on `n` random trials; every sample must be a valid TrainConfig (and,
    given the feature blocks the data lacks, a trial that data can run)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    sampler = DefineByRun(space.define_by_run, space.FIXED, overrides, missing)
    where = f"search space {space.name!r} ({space.source})"
    names: set[str] = set()
    crops, sizes, samples = set(), set(), []
    for _ in range(n):
        trial = study.ask()
        try:
            sample = sampler(trial)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"define_by_run of {where} raised {e!r}", where=where,
                            fix="fix the space file; it must only call trial.suggest_* and "
                                "return a dict of TrainConfig overrides") from e
        names |= set(trial.distributions)
        # Helper choices (suggested but not returned, e.g. a switch) may have any name; the
        # returned dict must be TrainConfig fields only.
        helpers = (set(trial.distributions) | set(overrides)) - set(TrainConfig.field_names())
        returned = set(sampler.fn(FixingTrial(_Replay(trial), overrides)) or {})
        cfg = TrainConfig.from_dict({k: v for k, v in sample.items()
                                     if k not in helpers or k in returned},
                                    where=f"{where}, sample {sample}")
        check_applies(cfg, (set(trial.distributions) & returned) - set(overrides), where)
        for name, dist in trial.distributions.items():
            if name in DATA_KEYS and hasattr(dist, "choices"):
                (crops if name == "crop" else sizes).update(dist.choices)
        crops.add(cfg.crop)
        sizes.add(cfg.image_size)
        samples.append(cfg.to_dict())
        study.tell(trial, 0.0)
    for key in SPLIT_KEYS:
        if len({s[key] for s in samples}) > 1:
            raise UserError(f"{where} varies {key!r}, a data-split setting", where=where,
                            fix=f"keep {key} fixed (FIXED or --set {key}=...): every trial of a "
                                "sweep must be selected on the same validation split")
    check_fed(space, overrides, samples, missing or {}, where)
    for backbone in sorted({s["backbone"] for s in samples}):
        check_backbone(backbone, where)
    base = {k: samples[0][k] for k in samples[0] if len({str(s[k]) for s in samples}) == 1}
    variants = sorted((c, int(s)) for c in crops for s in sizes)
    return Checked(names=names, variants=variants, base=base, samples=samples,
                   pruned=dict(sampler.removed))


def check_fed(space: Space, overrides: dict[str, Any], samples: list[dict[str, Any]],
              missing: Missing, where: str) -> None:
    """Refuse a sweep in which no trial could run on the data: a `features` preset pinned (by
    --set or FIXED) or computed that needs a block the data lacks, or a choice with nothing left
    once pruned (prune_features). One trial that can run and the sweep goes ahead."""
    unfed = prune_features(sorted({s["features"] for s in samples}), missing)[1]
    if not unfed or any(s["features"] not in unfed for s in samples):
        return
    preset, why = next(iter(unfed.items()))
    lacking = [b for b in NEEDED_BY if b in missing and set(preset.split("+")) & NEEDED_BY[b]]
    drop = set().union(*(NEEDED_BY[b] for b in lacking))
    alt = "+".join(b for b in FEATURE_BLOCKS if b in preset.split("+") and b not in drop)
    alt = alt or "mean+meta"
    if "features" in overrides:
        where = f"--set features={overrides['features']}"
    elif "features" in space.FIXED:
        where = f"{space.source}: FIXED features"
    shown = ", ".join(sorted(unfed))
    raise UserError(f"no trial could run: features {shown} need{'s' * (len(unfed) == 1)} what "
                    f"the data lacks: {why}",
                    where=where, fix=f"use features={alt} (--set features={alt}), or "
                    + "; or ".join(missing[b][1] for b in lacking))


def check_applies(cfg: TrainConfig, searched: set[str], where: str) -> None:
    """A searched setting the sampled model never reads would change nothing: refused, with why."""
    ignored = {k: why for k, why in ignored_fields(cfg).items() if k in searched}
    if ignored:
        raise UserError(f"the space searches {', '.join(sorted(ignored))}, which the model "
                        "ignores: " + "; ".join(f"{k}: {why}" for k, why in sorted(ignored.items())),
                        where=where, fix="suggest it only where it applies (an `if` in "
                        "define_by_run, as search_spaces/fusion.py does for film_stages), or fix "
                        f"it: --set {min(ignored)}=<value>")


def check_backbone(name: str, where: str) -> None:
    """Unknown backbones fail here, not in the first trial an hour later."""
    if name in WIDTH_BACKBONES:  # the registry's names (test_models pins them), torch-free
        return
    # lazy: timm and the registry import torch (seconds), needed only for a timm name
    import timm

    # lazy: as above
    from raysweep.models.backbones import TIMM_HINT

    if not timm.is_model(name):
        raise unknown_name("backbone", name, [*WIDTH_BACKBONES, TIMM_HINT], where=where)
