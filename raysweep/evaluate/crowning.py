"""Stages 4 and 5 of eval_winners: the champion crowned on validation only (or by grouped
k-fold over sessions, the ensemble then scored on the same folds), then its error bound
calibrated for new sessions on its out-of-fold errors (raysweep.serve.bounds.calibrate_sessions)
and checked on the split."""

from __future__ import annotations

import logging

from raysweep.evaluate import coverage, selection
from raysweep.evaluate.record import EvalRun
from raysweep.evaluate.scoring import comparisons

log = logging.getLogger("raysweep.eval_winners")


def crown(r: EvalRun) -> None:
    """The champion and why it was chosen; the study's questions as paired comparisons."""
    s = r.settings
    leaders, ens, seed = r.leaders, r.ens, s.seed
    champion = leaders[0]
    # few validation sessions select noise: re-score the top leaders across sessions
    why = selection.why_rescore(champion.data) if s.select_folds > 1 else None
    sel = selection.rescore(leaders, why, s.select_folds, s.select_top, seed) if why else None
    if sel is not None:
        champion = leaders[sel.champion]
        log.info("selection across sessions: %s crowned (%s)", champion.name, sel.stability)
    chosen = f"chosen by validation dE00 {champion.val:.3f}" if sel is None else (
        "chosen by grouped k-fold over sessions (mean validation dE00 "
        f"{sel.table.set_index('leader').loc[champion.name, 'cv_mean']:.3f}; its own "
        f"validation dE00 {champion.val:.3f})")
    if ens is not None and sel is not None:
        champion, chosen = _ensemble_on_folds(r, ens, champion, chosen, sel)
    elif ens is not None and ens.val < min(ld.val for ld in leaders):
        # best on validation: the mean of the top leaders is one more candidate, not one more
        # draw among noisy single runs
        champion, chosen = ens, (f"chosen by validation dE00 {ens.val:.3f}, below the best "
                                 f"single leader's {leaders[0].val:.3f}; the mean of "
                                 f"{', '.join(ens.predictor.names)}")
    r.comp = comparisons(leaders, r.errs, r.best_base, s.n_boot, seed, champion=champion.name)
    r.champion, r.chosen, r.sel = champion, chosen, sel


def _members(r: EvalRun, champion) -> list:
    names = getattr(champion.predictor, "names", None)
    return [ld for ld in r.leaders if ld.name in names] if names else [champion]


def _ensemble_on_folds(r: EvalRun, ens, leader, chosen: str, sel):
    """The folds crowned `leader`: the ensemble must beat it on the SAME session folds (the mean
    of its members' out-of-fold predictions), not on the two validation sessions that picked
    its members, or it could crown a model worse than the folds' choice."""
    s = r.settings
    oof = selection.champion_oof(_members(r, ens), sel, s.select_folds, s.seed)
    if oof is None or leader.name not in sel.oof:
        return leader, chosen + "; the ensemble was not scored on the same folds"
    data = leader.data
    e_cv, l_cv = float(oof.errors(data).mean()), float(sel.oof[leader.name].errors(data).mean())
    if e_cv >= l_cv:
        return leader, chosen + f"; ensemble:top{len(_members(r, ens))} {e_cv:.3f} on the same folds"
    return ens, (f"chosen by grouped k-fold over sessions: mean out-of-fold dE00 {e_cv:.3f}, "
                 f"below the folds' best leader {leader.name} ({l_cv:.3f}); the mean of "
                 f"{', '.join(ens.predictor.names)}")


def calibrate(r: EvalRun) -> None:
    """The champion's error bound: the new-session bound from its out-of-fold errors over
    session folds (the validation bound kept beside it for seen sessions), or the validation
    bound alone when the data has too few sessions per camera (or --select-folds 1)."""
    from raysweep.train import NonFiniteLoss

    s = r.settings
    champion = r.champion
    info = {"champion_run": champion.run_id, "split_id": r.eval_data.info.get("split_id")}
    oof = None
    # --split val reproduces the logged validation metric: no coverage to report, no folds to run
    if s.select_folds > 1 and s.split != "val" and selection.sessions_of(champion.data) is not None:
        try:
            oof = selection.champion_oof(_members(r, champion), r.sel, s.select_folds, s.seed)
        except NonFiniteLoss as e:  # a fold diverged: no new-session bound, said in the log
            log.warning("session folds of %s diverged (%s): the bound is the validation one",
                        champion.name, e)
    r.cal, r.trust, r.trust_note = coverage.champion_trust(
        champion.predictor, champion.data, s.split, s.level, max(200, s.n_boot // 4), s.seed,
        info=info, oof=oof)
