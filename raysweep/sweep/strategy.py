"""How a sweep picks and stops trials: the Optuna sampler and ASHA's rungs.

A space states its early stopping as fractions of its epoch budget (`GRACE_FRACTION`, with
`REDUCTION_FACTOR`), so `--set epochs=N` moves the rungs with the budget: the learning-rate
schedule decays over the whole budget, and a rung sits at the same point of every trial's curve
whatever N is. The sampler is TPE made for trials in flight: multivariate (lr and weight decay
are learnt together), a constant liar (a trial still running counts as a bad result, so the next
suggestion moves away from it instead of sampling a near-duplicate), and a start-up phase sized
to the budget. `benchmarks/search_efficiency.py` measures these against random search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SAMPLERS = ("tpe", "tpe-optuna-default", "random")
# TPE's model needs a few finished trials per searched parameter; Optuna's fixed 10 spends most
# of a 16-trial sweep at random. A quarter of the budget, at least 4 and at most 10.
STARTUP_SHARE, STARTUP_MIN, STARTUP_MAX = 0.25, 4, 10


@dataclass(frozen=True)
class Rungs:
    """ASHA's plan for one sweep: the epochs at which trials are compared."""

    grace_period: int
    reduction_factor: int
    max_epochs: int
    # Asynchronous Hyperband: each trial joins one of `brackets` ASHA brackets (Ray draws it,
    # favouring those with more rungs); bracket k starts comparing at grace * rf**k, so the
    # later brackets hedge against a first rung that cuts late bloomers.
    brackets: int = 1

    @property
    def milestones(self) -> list[int]:
        """The rungs Ray's ASHA places (in its first bracket): grace * rf**k, up to the budget
        (the rung at the budget itself, when it falls there, stops nothing: every trial ends
        there anyway)."""
        return self.bracket_milestones(0)

    def bracket_milestones(self, k: int) -> list[int]:
        """Bracket k's rungs: the first bracket's from its k-th on (Ray's rule)."""
        g, rf, top = self.grace_period, self.reduction_factor, self.max_epochs
        n = int(math.log(top / g) / math.log(rf) + 1) if top >= g else 1
        return [g * rf**i for i in range(k, n)]

    def epochs_share(self) -> float:
        """The share of the no-early-stopping epochs a sweep spends when each rung keeps its
        top 1/rf (ASHA's steady state): what early stopping can save at most."""
        kept, spent, last = 1.0, 0.0, 0
        for m in [m for m in self.milestones if m < self.max_epochs] + [self.max_epochs]:
            spent += kept * (m - last)
            kept, last = kept / self.reduction_factor, m
        return spent / self.max_epochs


def grace_epochs(max_epochs: int, fraction: float) -> int:
    """The first rung: `fraction` of the budget, at least one epoch, at most the budget."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a grace fraction is in (0, 1], got {fraction}")
    return min(max_epochs, max(1, round(max_epochs * fraction)))


def rungs(max_epochs: int, fraction: float, reduction_factor: int, brackets: int = 1) -> Rungs:
    return Rungs(grace_epochs(max_epochs, fraction), reduction_factor, max_epochs, brackets)


def startup_trials(num_samples: int) -> int:
    share = math.ceil(num_samples * STARTUP_SHARE)
    return max(STARTUP_MIN, min(STARTUP_MAX, share))


def make_sampler(name: str, seed: int, num_samples: int):
    """The Optuna sampler `name` (one of SAMPLERS), seeded.

    "tpe-optuna-default" is what raysweep used before: the installed Optuna's TPE as it comes
    (10 start-up trials; Optuna 5 makes it multivariate with a liar, Optuna 3-4 independent and
    without), kept as the benchmark's yardstick. "tpe" states its settings, so a sweep samples
    the same way whichever Optuna (>= 3.6) is installed."""
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe-optuna-default":
        return optuna.samplers.TPESampler(seed=seed)
    if name != "tpe":
        raise ValueError(f"unknown sampler {name!r}; one of {SAMPLERS}")
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(num_samples),
                                      multivariate=True, constant_liar=True)


def make_scheduler(plan: Rungs | None, metric: str, mode: str):
    """ASHA over `plan`'s rungs and brackets, or None (every trial runs its whole budget)."""
    if plan is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode,
                         max_t=plan.max_epochs, grace_period=plan.grace_period,
                         reduction_factor=plan.reduction_factor, brackets=plan.brackets)
