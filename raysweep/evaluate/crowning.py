"""Stages 4 and 5 of eval_winners: the champion crowned on validation only (or by grouped
k-fold over sessions, the ensemble, the gradient-boosting families and the cross-family blend
then scored on the same folds), then its error bound calibrated for new sessions on its
out-of-fold errors (raysweep.serve.bounds.calibrate_sessions) and checked on the split.

A crowned family (or cross-family blend) is fitted on the training split and written as a
folder (raysweep.serve.family; a weighted ensemble folder for the blend), then loaded back from
it: the model scored, compared and calibrated is the one registered and served."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from raysweep.evaluate import baselines, coverage, selection
from raysweep.evaluate.leaders import Leader
from raysweep.evaluate.record import EvalRun
from raysweep.evaluate.scoring import comparisons, score
from raysweep.serve import ensemble, family
from raysweep.train import NonFiniteLoss

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
        # not yet the champion: the ensemble, the families and the blend meet it on these folds
        log.info("selection across sessions: %s is the folds' best leader (%s)", champion.name,
                 sel.stability)
    chosen = f"chosen by validation dE00 {champion.val:.3f}" if sel is None else (
        "chosen by grouped k-fold over sessions (mean validation dE00 "
        f"{sel.table.set_index('leader').loc[champion.name, 'cv_mean']:.3f}; its own "
        f"validation dE00 {champion.val:.3f})")
    if sel is not None:  # the folds judge every candidate: the ensemble, then the families
        if ens is not None:
            champion, chosen = _ensemble_on_folds(r, ens, champion, chosen, sel)
        champion, chosen = _families_on_folds(r, champion, chosen, sel)
        log.info("selection across sessions: %s crowned", champion.name)
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


def _families_on_folds(r: EvalRun, champion, chosen: str, sel):
    """Gradient boosting (the `selection.FAMILIES` among the baselines asked for) and the
    cross-family blend against the crowned learned model, on the SAME session folds
    (selection.crown_on_folds); the learned one stays on a tie."""
    s, data = r.settings, champion.data
    oof = dict(sel.oof)
    # the families among the baselines asked for (--baselines): none asked, none run
    names = [n for n in selection.FAMILIES if s.baseline_names is None or n in s.baseline_names]
    if not oof or not names:
        return champion, chosen
    learned = list(oof)
    if champion.name not in oof:  # the ensemble: its members' mean out-of-fold prediction
        mine = selection.champion_oof(_members(r, champion), sel, s.select_folds, s.seed)
        if mine is None:
            return champion, chosen
        oof[champion.name] = mine
        learned.append(champion.name)
    oof.update(selection.family_oof(data, next(iter(sel.oof.values())).folds, names))
    fc = selection.crown_on_folds(oof, data, learned)
    r.fold_crown = fc
    if fc.champion in learned:
        others = ", ".join(f"{k} {v:.3f}" for k, v in fc.cv.items() if k not in learned)
        return champion, chosen + (f"; on the same folds {others}" if others else "")
    return _family_leader(r, fc, data), fc.line


def _family_leader(r: EvalRun, fc, data) -> Leader:
    """The crowned family as a Leader: fitted on the training split, written as a folder and
    loaded back from it, scored on the split."""
    folder = _family_folder(r, fc, data)
    pred = ensemble.load_folder(folder, device="cpu")
    ev = data.subset(data.indices(r.settings.split))
    if not np.array_equal(ev.sample_id, r.eval_data.sample_id):
        raise ValueError("the family champion's rows differ from the leaders' rows")
    by = _by_name(r)
    lead = by.get(fc.fold_leader, r.leaders[0])
    ld = Leader(lead.run_id if fc.champion in fc.members else "", "", {}, fc.cv[fc.champion],
                lead.parent_run_id, [fc.line], pred, folder, pred.predict(ev), data,
                label=fc.champion)
    if ld.name not in r.errs:  # the cross-family blend (or a family not asked for): scored too
        kind = "ensemble" if fc.champion in fc.members else "baseline"
        row, errs = score({ld.name: ld.pred}, {ld.name: kind}, r.eval_data.target, {},
                          r.settings.n_boot, r.settings.seed)
        r.preds[ld.name], r.kinds[ld.name] = ld.pred, kind
        r.errs.update(errs)
        r.summary = pd.concat([r.summary, row], ignore_index=True)
    return ld


def _by_name(r: EvalRun) -> dict[str, Leader]:
    return {ld.name: ld for ld in [*r.leaders, *([r.ens] if r.ens is not None else [])]}


def _family_folder(r: EvalRun, fc, data):
    """The crowned family's folder, or for a cross-family blend a weighted ensemble folder of the
    learned candidate's checkpoints (an ensemble's members sharing its weight) and the families'
    folders."""
    train = data.subset(data.indices("train"))
    by = _by_name(r)
    dirs, names, weights = [], [], []
    members = fc.members.get(fc.champion, [fc.champion])
    for m, w in zip(members, fc.weights.get(fc.champion, [1.0])):
        if m in by:  # the learned member: a leader, or the ensemble's member checkpoints
            parts = _members(r, by[m])
            dirs += [ld.checkpoint_dir for ld in parts]
            names += [ld.name for ld in parts]
            weights += [w / len(parts)] * len(parts)
            continue
        base = m.split(":", 1)[1]
        dirs.append(family.save(r.work / "families" / base, base,
                                baselines.make_baseline(base).fit(train),
                                data.info))
        names.append(m)
        weights.append(w)
    if len(dirs) == 1:
        return dirs[0]
    return ensemble.save(r.work / "family_champion", dirs, names,
                         info={"crowned": fc.champion}, weights=weights)


def calibrate(r: EvalRun) -> None:
    """The champion's error bound: the new-session bound from its out-of-fold errors over
    session folds (the validation bound kept beside it for seen sessions), or the validation
    bound alone when the data has too few sessions per camera (or --select-folds 1)."""
    s = r.settings
    champion = r.champion
    info = {"champion_run": champion.run_id, "split_id": r.eval_data.info.get("split_id")}
    fc = r.fold_crown
    # the folds that crowned it hold its out-of-fold predictions (a family's, a leader's, the
    # ensemble's members' mean): the same ones the crown compared
    oof = fc.oof.get(champion.name) if fc is not None else None
    # --split val reproduces the logged validation metric: no coverage to report, no folds to run
    if oof is None and s.select_folds > 1 and s.split != "val" and \
            selection.sessions_of(champion.data) is not None:
        try:
            oof = selection.champion_oof(_members(r, champion), r.sel, s.select_folds, s.seed)
        except NonFiniteLoss as e:  # a fold diverged: no new-session bound, said in the log
            log.warning("session folds of %s diverged (%s): the bound is the validation one",
                        champion.name, e)
    r.cal, r.trust, r.trust_note = coverage.champion_trust(
        champion.predictor, champion.data, s.split, s.level, max(200, s.n_boot // 4), s.seed,
        info=info, oof=oof)
