"""One incremental update, end to end: what ``python -m training.incremental`` runs.

Flow: resume from the training head (``training.update.head``: latest, or after a rejection the
rejected candidate, whose state has seen every window so far; the pretrained encoder when
the store is empty) → hold out the tail of the window after the head's → mix a replay
sample into the rest → Ray Train ``TorchTrainer`` (DDP, each worker on its own shard,
distillation from the state resumed) → fit the fraud trees on every labelled row known so
far and choose their weight in the fraud score on the tail (``training.update.fraud_blend``) → score
candidate and the live incumbent (latest) on
the same held-out slice → promotion gate → publish (or record the rejection; serving keeps
latest) → move the head → retention. After ``--fallback-after`` rejections in a row the
update is instead a full retrain from the pretrained encoder on all windows so far, gated
the same way; ``--on-reject hold`` always resumes from latest.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.config import TrainConfig
from training.data.schema import WindowData
from training.data.sources import merge_windows
from training.data.synthetic import SyntheticShopConfig
from training.evaluation.evaluate import (
    evaluate_fraud,
    evaluate_rec_by_user,
    fraud_labels_scores,
    fraud_scores,
)
from training.features.examples import fraud_examples
from training.features.history import PurchaseHistory
from training.features.replay import ReplayBuffer
from training.fit.raytrain import fit_window
from training.fit.result import FitResult
from training.incremental_config import (
    IncrementalConfig,
    apply_best_config,
)
from training.model import ModelConfig, ShopStreamModel
from training.model.calibration import NO_LABELS, FraudCalibration, fit_calibration
from training.update.bundle import write_bundle
from training.update.fraud_blend import fraud_blend, known_transactions, refit_trees
from training.update.gate import (
    GateDecision,
    decide,
    fraud_thresholds,
    main_metrics,
    paired_ap_interval,
    paired_user_interval,
)
from training.update.head import INCREMENTAL, StartPoint, after_update, write_head
from training.update.phases import Laps
from training.update.prepare import Update, prepare_update
from training.update.ranking_terms import choose_ranking_terms
from training.update.title_cache import keep_titles

logger = logging.getLogger(__name__)


def decision_thresholds(model: ShopStreamModel, history: PurchaseHistory, window: WindowData,
                        inc: IncrementalConfig, newest: pd.DataFrame | None = None
                        ) -> dict[str, Any]:
    """Fraud decision thresholds from the candidate's scores on the held-out slice: every
    transaction is scored (an alert budget needs no labels), the labelled ones set FPRs.
    ``newest``: transactions newer than the slice, whose labels have not arrived (under a
    label delay): the thresholds move to their score distribution."""
    labels, scores, every = _scored(model, history, window.transactions)
    fresh = _scored(model, history, newest)[2] if newest is not None and len(newest) \
        else None
    return fraud_thresholds(labels, scores, inc.continual.review_fpr,
                            inc.continual.decline_fpr, inc.continual.review_rate, every, fresh)


def _scored(model: ShopStreamModel, history: PurchaseHistory, txns: pd.DataFrame
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels of the labelled rows, their scores, every row's score) of ``txns``."""
    known = txns["is_fraud"].notna().to_numpy()
    examples = fraud_examples(model, txns.assign(is_fraud=txns["is_fraud"].fillna(0)), history)
    scores = fraud_scores(model, examples)
    return examples.label.astype(bool)[known], scores[known], scores


def fit_fraud_calibration(model: ShopStreamModel, history: PurchaseHistory,
                          window: WindowData, seed: int, known: pd.DataFrame
                          ) -> FraudCalibration:
    """Calibrate ``model``'s blended fraud probability on ``window`` (held out from the
    trees and the head), set it on the model and return it; a constant when no labelled
    fraud and legit are ``known`` nor held out. The parent's calibration the candidate
    inherited is dropped first: it was fitted to another blend."""
    model.set_fraud_calibration(FraudCalibration())
    labels, scores = fraud_labels_scores(model, history, window)
    ever = np.concatenate([known["is_fraud"].to_numpy(dtype=bool) if len(known) else [],
                           labels]).astype(bool)
    calibration = fit_calibration(labels, scores, seed) if ever.any() and not ever.all() \
        else NO_LABELS
    model.set_fraud_calibration(calibration)
    logger.info("fraud calibration: %s (%s)", calibration.kind, calibration.basis)
    return calibration


def fraud_noise(candidate: ShopStreamModel, incumbent: ShopStreamModel | None,
                history: PurchaseHistory, window: WindowData) -> dict[str, tuple[float, float]]:
    """{"fraud": paired interval of the two models' AP difference on ``window``} (empty
    without an incumbent or without both classes)."""
    if incumbent is None:
        return {}
    labels, ours = fraud_labels_scores(candidate, history, window)
    if not labels.any() or labels.all():
        return {}
    return {"fraud": paired_ap_interval(labels, ours,
                                        fraud_labels_scores(incumbent, history, window)[1])}


def rec_noise(users: dict[str, dict[str, float]]) -> dict[str, tuple[float, float]]:
    """{"rec": paired interval of the candidate's and the incumbent's per-user NDCG@k
    difference} from :func:`gate_scores`' per-user values (empty without an incumbent or
    without held-out interactions)."""
    if not users.get("candidate") or not users.get("incumbent"):
        return {}
    return {"rec": paired_user_interval(users["candidate"], users["incumbent"])}


def gate_scores(models: dict[str, ShopStreamModel | None], history: PurchaseHistory,
                train_part: WindowData, gate_window: WindowData, k: int,
                fraud_window: WindowData | None = None
                ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Both models scored on exactly the same held-out slice (fraud on ``fraud_window``
    when given: the fraud trees of the incumbent have seen the replay rows of the slice,
    so fraud is judged on the tail that neither model has seen), and each model's
    per-user NDCG@k on it (for :func:`rec_noise`; not part of the scores kept in meta)."""
    out: dict[str, dict[str, Any]] = {}
    users: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        if model is None:
            continue
        model.eval()
        model.text.use_shared_cache()
        rec, users[name] = evaluate_rec_by_user(model, history, train_part.interactions,
                                                gate_window, k=k) \
            if len(gate_window.interactions) else ({}, {})
        fraud = evaluate_fraud(model, history, fraud_window or gate_window)
        out[name] = {"rec": rec, "fraud": fraud, "main": main_metrics(rec, fraud, k)}
    return out, users


def run_incremental(inc: IncrementalConfig, train_cfg: TrainConfig, model_cfg: ModelConfig,
                    synthetic: SyntheticShopConfig | None = None,
                    explicit: frozenset[str] = frozenset()) -> dict[str, Any]:
    """One update (incremental, or a fallback full retrain after ``fallback_after``
    rejections in a row); returns the summary (also logged as one line), with the wall
    seconds of each phase under ``phases``.

    ``explicit`` names the settings the user gave; they override the store's
    ``configs/best.json`` (written by tuning.sweep), which overrides the defaults.
    """
    laps = Laps()
    store = inc.store.open()
    train_cfg, inc, config_used = apply_best_config(store, inc, train_cfg, explicit)
    with tempfile.TemporaryDirectory(prefix="shopstream-") as tmp:
        up = prepare_update(store, inc, train_cfg, model_cfg, synthetic, Path(tmp))
        replay, window_id = up.replay, up.window_id
        label = window_id if up.kind == INCREMENTAL else f"fallback-{window_id}"
        laps.lap("prepare")
        fit = fit_window(inc, train_cfg, up.model, up.teacher,
                         up.parent.optimizer if up.parent else None, up.examples, label)
        laps.lap("fit")
        window = up.window
        laps.lap("reread")
        evaluation, decision = judge(up, fit, inc, train_cfg, laps)
        if window.window_id in replay.windows:
            logger.info("window %s retrained: its rows are already in the replay buffer",
                        window.window_id)
        else:
            replay.add_window(window)
        summary = _publish(store, inc, Path(tmp) / "candidate", fit, replay,
                           up.history.update(window.interactions), up.start, window,
                           evaluation, decision, train_cfg, config_used, up.vocab)
        summary["titles"] = up.titles.summary(
            keep_titles(store, fit.model, up.titles, inc.store.title_cache))
        laps.lap("publish")
    summary["seconds"] = round(laps.total(), 1)
    summary["phases"] = laps.to_json()
    summary["train"] = {"steps": fit.steps, "fit_seconds": round(fit.seconds, 1),
                        "epoch_peak_lrs": list(fit.epoch_peak_lrs),
                        "loop_seconds": round(fit.loop_seconds, 2),
                        "samples_per_s": round(fit.samples_per_s, 1),
                        "workers": inc.scaling.num_workers if fit.trainer == "ray" else 1,
                        "trainer": fit.trainer, "trainer_reason": fit.trainer_reason,
                        "use_gpu": fit.use_gpu,
                        "resumed_from": fit.resumed_from}
    logger.info("SUMMARY %s", summary_line(summary))
    return summary


def judge(up: Update, fit: FitResult, inc: IncrementalConfig, train_cfg: TrainConfig,
          laps: Laps) -> tuple[dict[str, Any], GateDecision]:
    """On the held-out tail: the candidate's ranking-time terms and fraud blend, the gate's
    verdict against the incumbent and the fraud decision thresholds; then the fraud trees
    refitted on every labelled row, tail included. Returns (the evaluation for the meta,
    the decision)."""
    # Read as of each row's own window: the tail, the reservoir and late labels come from
    # windows whose buyers' histories have grown since (training.features.bought_before);
    # prepare_update refused windows without a length.
    history_train = up.history.update(up.train_part.interactions).windowed(up.windows.freq)
    ranking = choose_ranking_terms(fit.model, history_train, up.holdout,
                                   inc.continual.repeat_bonus_grid, inc.continual.count_weight_grid,
                                   train_cfg.eval_k)
    laps.lap("ranking_terms")
    known = known_transactions(up.replay.frame("transactions"), up.mixed.transactions)
    blend = fraud_blend(fit.model, known, up.holdout.transactions, history_train,
                        train_cfg.seed)
    laps.lap("fraud_blend")
    scores, users = gate_scores({"candidate": fit.model, "incumbent": up.incumbent},
                                history_train, up.train_part,
                                gate_slice(up, train_cfg.seed, inc.continual.gate_replay),
                                train_cfg.eval_k, up.holdout)
    decision = decide(scores["candidate"]["main"],
                      scores["incumbent"]["main"] if "incumbent" in scores else None,
                      inc.continual.gate_tolerance, train_cfg.eval_k,
                      {**fraud_noise(fit.model, up.incumbent, history_train, up.holdout),
                       **rec_noise(users)})
    laps.lap("gate")
    calibration = fit_fraud_calibration(fit.model, history_train, up.holdout, train_cfg.seed,
                                        known)
    thresholds = decision_thresholds(fit.model, history_train, up.holdout, inc,
                                     up.unlabelled_transactions()
                                     if inc.continual.label_delay else None)
    refit_trees(fit.model, known_transactions(known, up.holdout.transactions),
                history_train, train_cfg.seed)
    laps.lap("thresholds_trees")
    return {"scores": scores, "fraud_thresholds": thresholds, "ranking_terms": ranking,
            "fraud_blend": blend, "fraud_calibration": calibration.to_json()}, decision


def gate_slice(up: Update, seed: int, with_replay: bool) -> WindowData:
    """The held-out tail (rows neither model has trained on), plus — with ``with_replay``
    — replay rows disjoint from the ones mixed into training.

    A fallback retrain trained on every earlier row, so only the tail measures it."""
    if not with_replay or up.kind != INCREMENTAL or not len(up.replay):
        return up.holdout
    return merge_windows([up.holdout, up.replay.sample(
        len(up.holdout.interactions), len(up.holdout.transactions), seed + 1,
        exclude=up.mixed)])


def _publish(store: Any, inc: IncrementalConfig, directory: Path, fit: Any,
             replay: ReplayBuffer, history: PurchaseHistory, start: StartPoint,
             window: WindowData, evaluation: dict[str, Any], decision: GateDecision,
             train_cfg: TrainConfig, config_used: str, vocab: dict[str, int]
             ) -> dict[str, Any]:
    """Publish or record the candidate, then move the training head (see training.update.head).

    The store's parent is always the live version the candidate was gated against (the
    published lineage); ``start_from`` says which state it actually resumed from."""
    files, bundle_meta = write_bundle(directory, fit.model, fit.optimizer, replay, history)
    meta = {**bundle_meta, "window": window.window_id, "source": inc.source.name,
            "kind": start.kind, "start_from": start.to_json(),
            "metrics": evaluation["scores"], "gate": decision.to_json(),
            "fraud_thresholds": evaluation["fraud_thresholds"],
            "ranking_terms": evaluation["ranking_terms"],
            "fraud_blend": evaluation["fraud_blend"],
            "fraud_calibration": evaluation["fraud_calibration"],
            "train_config": asdict(train_cfg),
            "incremental_config": inc.public_dict(), "config_used": config_used,
            "vocab_growth": vocab}
    parent_version = start.live.version if start.live else None
    meta = json_safe(meta)
    if decision.promote:
        # Gated against the live version: if another publisher moved latest meanwhile,
        # the gate's verdict no longer holds (ConcurrentPublishError; the version is kept).
        info = store.publish(files, meta, parent=parent_version, expect_latest=parent_version)
        deleted = store.retain(inc.store.keep_last)
    else:
        info = store.record_rejected(files, meta, parent_version, reason=decision.reason,
                                     metrics=json_safe(decision.candidate))
        deleted = []
    head = after_update(start, info, window.window_id, decision.promote)
    write_head(store, head)
    live = info if decision.promote else start.live
    return {"version": info.version, "parent": parent_version, "window": window.window_id,
            "kind": start.kind, "start_from": start.to_json(),
            "promoted": decision.promote, "gate": decision.reason,
            "candidate": decision.candidate, "incumbent": decision.incumbent,
            "consecutive_rejections": head.consecutive_rejections,
            "live_version": live.version if live else None,
            "live_window": live_window(live),
            "config_used": config_used, "retention_deleted": deleted,
            "ranking_terms": {key: evaluation["ranking_terms"][key]
                              for key in ("repeat_bonus", "count_weight",
                                          "cold_count_weight", "cold_ties")},
            "fraud_tree_weight": evaluation["fraud_blend"]["tree_weight"],
            "fraud_calibration": evaluation["fraud_calibration"]["kind"]}


def live_window(live: Any) -> str | None:
    """The newest window whose data the live model was trained on: its own window (every
    version, incremental or fallback, trains on the window it is published for)."""
    window = live.user_meta.get("window") if live is not None else None
    return None if window is None else str(window)


def json_safe(value: Any) -> Any:
    """Meta is strict JSON: NaN/inf (an unmeasured metric) become null."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_line(summary: dict[str, Any]) -> str:
    fmt = {k: round(v, 4) for k, v in summary["candidate"].items()}
    train = summary.get("train") or {}
    return (f"version={summary['version']} window={summary['window']} "
            f"parent={summary['parent']} kind={summary.get('kind')} "
            f"start={summary.get('start_from')} promoted={summary['promoted']} "
            f"rejections_in_a_row={summary.get('consecutive_rejections')} "
            f"candidate={fmt} ranking_terms={summary.get('ranking_terms')} "
            f"gate='{summary['gate']}' config={summary['config_used']} "
            f"trainer={train.get('trainer')} ({train.get('trainer_reason')}) "
            f"seconds={summary.get('seconds')} phases={summary.get('phases')} "
            f"titles={summary.get('titles')}")
