"""The search's settings: ASHA's rungs as fractions of the epoch budget, and TPE for trials in
flight (multivariate, constant liar, a start-up phase sized to the budget)."""

from __future__ import annotations

import pytest

from raysweep.sweep import spaces, strategy


def ray_milestones(max_t: int, grace: int, rf: int) -> list[int]:
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(metric="m", mode="min", max_t=max_t, grace_period=grace,
                         reduction_factor=rf)
    return sorted(int(m) for m, _ in asha._brackets[0]._rungs)


@pytest.mark.parametrize("epochs,fraction,rf", [(200, 1 / 8, 3), (200, 0.25, 3), (40, 0.25, 2),
                                                (27, 1 / 9, 3), (12, 0.5, 3), (3, 0.1, 3),
                                                (100, 1.0, 3)])
def test_rungs_are_the_milestones_ray_places(epochs, fraction, rf):
    plan = strategy.rungs(epochs, fraction, rf)
    assert plan.milestones == ray_milestones(epochs, plan.grace_period, rf)
    assert strategy.make_scheduler(plan, "m", "min")._brackets[0]._rungs


@pytest.mark.parametrize("epochs,grace,rf", [(16, 4, 3), (8, 3, 2), (200, 50, 3), (27, 1, 3)])
def test_brackets_are_the_ones_ray_places(epochs, grace, rf):
    """Asynchronous Hyperband: bracket k compares from the first bracket's k-th rung on."""
    plan = strategy.Rungs(grace, rf, epochs, brackets=3)
    ray_brackets = strategy.make_scheduler(plan, "m", "min")._brackets
    assert len(ray_brackets) == 3
    for k, bracket in enumerate(ray_brackets):
        assert plan.bracket_milestones(k) == sorted(int(m) for m, _ in bracket._rungs)
    assert len(strategy.make_scheduler(strategy.Rungs(grace, rf, epochs), "m", "min")
               ._brackets) == 1


def test_the_first_rung_is_a_fraction_of_the_budget():
    assert strategy.grace_epochs(200, 0.25) == 50
    assert strategy.grace_epochs(40, 0.25) == 10
    assert strategy.grace_epochs(3, 0.1) == 1  # at least one epoch
    assert strategy.rungs(200, 1 / 8, 3).milestones == [25, 75]
    with pytest.raises(ValueError):
        strategy.grace_epochs(10, 0)


def test_epochs_share_counts_what_each_rung_keeps():
    # rungs 25 and 75 of 200, keeping 1/3 at each: 25 + 50/3 + 125/9 epochs per trial
    assert strategy.rungs(200, 1 / 8, 3).epochs_share() == pytest.approx(
        (25 + 50 / 3 + 125 / 9) / 200)
    assert strategy.rungs(10, 1.0, 3).epochs_share() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["tabular", "quickstart"])
def test_spaces_state_rungs_as_fractions_and_scale_with_the_budget(name):
    sp = spaces.load_space(name)
    full = strategy.rungs(sp.MAX_EPOCHS, sp.GRACE_FRACTION, sp.REDUCTION_FACTOR)
    assert full.grace_period == sp.GRACE_PERIOD  # the absolute grace is the fraction's
    short = strategy.rungs(sp.MAX_EPOCHS // 4, sp.GRACE_FRACTION, sp.REDUCTION_FACTOR)
    assert short.grace_period == pytest.approx(full.grace_period / 4, abs=1)


def test_tpe_is_made_for_trials_in_flight():
    s = strategy.make_sampler("tpe", seed=3, num_samples=16)
    assert s._constant_liar and s._multivariate
    assert s._n_startup_trials == 4
    assert strategy.make_sampler("tpe", 0, 100)._n_startup_trials == strategy.STARTUP_MAX
    assert strategy.make_sampler("tpe-optuna-default", 0, 16)._n_startup_trials == 10
    assert type(strategy.make_sampler("random", 0, 16)).__name__ == "RandomSampler"
    with pytest.raises(ValueError, match="unknown sampler"):
        strategy.make_sampler("grid", 0, 16)


def test_constant_liar_spreads_trials_asked_together():
    """Four trials asked while none has finished, after eight results: with the liar each one
    counts the others in flight as bad, so they spread out; without it they crowd the same
    optimum (over 20 seeds, deterministic)."""
    import numpy as np
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def spread(liar: bool, seed: int) -> float:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True,
                                             constant_liar=liar)
        study = optuna.create_study(sampler=sampler)
        for x in (0.1, 0.2, 0.3, 0.35, 0.5, 0.7, 0.9, 0.25):
            study.enqueue_trial({"x": x})
            t = study.ask()
            study.tell(t, (t.suggest_float("x", 0, 1) - 0.3) ** 2)
        return float(np.std([t.suggest_float("x", 0, 1) for t in [study.ask() for _ in range(4)]]))

    with_liar = np.mean([spread(True, s) for s in range(20)])
    without = np.mean([spread(False, s) for s in range(20)])
    assert with_liar > 1.2 * without


@pytest.mark.parametrize("name,epochs", [("tabular", 200), ("tabular", 40), ("quickstart", 8)])
def test_a_sweep_resolves_the_spaces_rungs_for_its_budget(tmp_path, name, epochs):
    from raysweep.sweep.resolve import resolve
    from raysweep.sweep.spec import Request

    spec, _ = resolve(Request(space=name, storage=str(tmp_path), sets=(f"epochs={epochs}",)))
    sp = spaces.load_space(name)
    assert spec.epochs == epochs and spec.searcher == "tpe"
    assert spec.early_stopping.grace_period == strategy.grace_epochs(epochs, sp.GRACE_FRACTION)
    assert spec.early_stopping.reduction_factor == sp.REDUCTION_FACTOR
    assert spec.early_stopping.brackets == 1  # plain ASHA unless asked
    given, _ = resolve(Request(space=name, storage=str(tmp_path), grace_period=3, brackets=3,
                               sets=(f"epochs={epochs}",)))
    assert given.early_stopping.grace_period == 3  # --grace-period still wins
    assert given.early_stopping.brackets == 3


def test_the_tuner_samples_and_stops_with_the_strategy(tmp_path, ray_local):
    """build_tuner hands Tune the strategy's sampler and ASHA over the spec's rungs."""
    from raysweep.sweep import resources
    from raysweep.sweep.resolve import resolve
    from raysweep.sweep.spec import Request, Resources
    from raysweep.sweep.tuner import TuneJob, build_tuner

    spec, sweep = resolve(Request(space="tabular", storage=str(tmp_path), num_samples=12,
                                  sets=("epochs=40",)))
    pl = resources.plan(spec.num_samples, Resources(1, 1.0, 0, 2), local=True, cpus=8,
                        gpus=0)
    tuner = build_tuner(TuneJob(spec, sweep.space, sweep.overrides, refs={}, plan=pl,
                                tracker=None))
    config = tuner._local_tuner._tune_config
    sampler = config.search_alg._sampler
    assert sampler._constant_liar and sampler._multivariate and sampler._n_startup_trials == 4
    assert sorted(m for m, _ in config.scheduler._brackets[0]._rungs) == [10, 30]
    assert len(config.scheduler._brackets) == 1
    hedged, sweep = resolve(Request(space="tabular", storage=str(tmp_path), num_samples=12,
                                    sets=("epochs=40",), brackets=2))
    config = build_tuner(TuneJob(hedged, sweep.space, sweep.overrides, refs={}, plan=pl,
                                 tracker=None))._local_tuner._tune_config
    assert [sorted(m for m, _ in b._rungs) for b in config.scheduler._brackets] == [[10, 30],
                                                                                   [30]]


@pytest.mark.parametrize("name", ["tabular", "quickstart"])
def test_spaces_state_the_rungs_they_compute(name):
    """A space's docstring names its rungs at its own budget: the computation must agree."""
    sp = spaces.load_space(name)
    plan = strategy.rungs(sp.MAX_EPOCHS, sp.GRACE_FRACTION, sp.REDUCTION_FACTOR)
    below = [str(m) for m in plan.milestones if m < sp.MAX_EPOCHS]
    assert f"rungs {' and '.join(below)} of {sp.MAX_EPOCHS}" in " ".join(sp.doc.split())


def test_resume_refuses_other_brackets(tmp_path):
    """--resume continues a sweep with the brackets it started with: another --brackets is
    refused in one paragraph, the same one (or none) is not."""
    from raysweep.errors import UserError
    from raysweep.sweep.resolve import _refuse_what_resume_ignores, resolve
    from raysweep.sweep.spec import Request

    saved, _ = resolve(Request(space="tabular", storage=str(tmp_path), name="s", brackets=2))
    with pytest.raises(UserError, match="--brackets"):
        _refuse_what_resume_ignores(Request(name="s", resume=True, brackets=3), saved)
    for same in (2, None):
        _refuse_what_resume_ignores(Request(name="s", resume=True, brackets=same), saved)


def test_a_space_may_state_its_brackets(tmp_path):
    """BRACKETS in a space file reaches the spec (and --brackets still wins); a space without it
    runs plain ASHA."""
    from raysweep.sweep.resolve import resolve
    from raysweep.sweep.spec import Request

    space = tmp_path / "hedged.py"
    space.write_text("MAX_EPOCHS = 27\nGRACE_FRACTION = 1 / 27\nBRACKETS = 3\n\n"
                     "def define_by_run(trial):\n"
                     "    return {'lr': trial.suggest_float('lr', 1e-3, 1e-2, log=True)}\n")
    spec, _ = resolve(Request(space=str(space), storage=str(tmp_path)))
    assert spec.early_stopping.brackets == 3 and spec.early_stopping.grace_period == 1
    given, _ = resolve(Request(space=str(space), storage=str(tmp_path), brackets=1))
    assert given.early_stopping.brackets == 1
