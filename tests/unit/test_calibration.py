"""Fraud probabilities calibrated on held-out labels (training/model/calibration.py) and the
measures of calibration (training/evaluation/reliability.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.published import shop_history, shop_model
from tests.unit.test_fraud_trees import txns
from training.evaluation.evaluate import fraud_scores
from training.evaluation.reliability import (
    brier_score,
    expected_calibration_error,
    reliability_bins,
)
from training.features.examples import fraud_examples
from training.model import ModelConfig, ModelFormatError, load_model, save_model
from training.model.calibration import (
    CalibrationError,
    FraudCalibration,
    fit_calibration,
    fit_kind,
)
from training.update.fraud_blend import fit_trees

pytestmark = pytest.mark.unit


def overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores that rank well but say 0.9 where the fraud rate is 0.3 (like trees on few
    frauds): true p = 0.3 * s / 0.9 ... squeezed towards the ends."""
    rng = np.random.default_rng(seed)
    true_p = rng.uniform(0.0, 0.3, n)
    labels = rng.random(n) < true_p
    scores = np.clip(true_p * 3.0, 0.0, 1.0) ** 0.5  # monotone, far too high
    return labels, scores


def test_ece_and_brier_on_a_constructed_case() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    exact = np.array([0.05] * 2 + [0.95] * 2 + [0.35] * 6)  # bins 0, 9, 3
    rows = reliability_bins(labels, exact)
    assert [(r["n"], r["fraud_rate"]) for r in rows] == [(2.0, 0.0), (6.0, 2 / 6), (2.0, 1.0)]
    # ECE: 0.2 * 0.05 + 0.6 * |0.35 - 1/3| + 0.2 * 0.05
    assert expected_calibration_error(labels, exact) == pytest.approx(
        0.01 + 0.6 * abs(0.35 - 1 / 3) + 0.01)
    assert brier_score([1, 0], [0.75, 0.25]) == pytest.approx(0.0625)


def test_calibration_fixes_overconfident_scores_without_changing_their_order() -> None:
    labels, scores = overconfident(4000, 0)
    test_labels, test_scores = overconfident(4000, 1)
    calibration = fit_calibration(labels, scores, seed=0)
    assert calibration.kind in ("platt", "isotonic") and "out-of-fold Brier" in calibration.basis
    before = expected_calibration_error(test_labels, test_scores)
    after = expected_calibration_error(test_labels, calibration.apply(test_scores))
    assert before > 0.15 and after < 0.03
    assert brier_score(test_labels, calibration.apply(test_scores)) < brier_score(
        test_labels, test_scores)
    # Monotone and tie-free: the ranking (AUC-PR, the alert queue) is untouched.
    order = np.argsort(test_scores, kind="stable")
    assert np.all(np.diff(calibration.apply(test_scores)[order]) > 0)
    for kind_only in ("platt", "isotonic"):
        mapped = fit_kind(kind_only, labels, scores).apply(test_scores)
        assert np.all(np.diff(mapped[order]) > 0), kind_only


def test_too_few_frauds_keep_the_blend_as_it_is() -> None:
    labels = np.array([True] * 3 + [False] * 200)
    scores = np.linspace(0.01, 0.99, len(labels))
    calibration = fit_calibration(labels, scores, seed=0)
    assert calibration.kind == "identity" and "3 held-out frauds" in calibration.basis
    np.testing.assert_array_equal(calibration.apply(scores), scores)


def test_the_model_serves_its_calibrated_probability_after_a_checkpoint(tmp_path: Path) -> None:
    model = shop_model(12, 20, ModelConfig(encoder_init="tiny_random", dim=8, history_len=3))
    frame = txns(300, 0)
    examples = fraud_examples(model, frame, shop_history(model))
    raw = fraud_scores(model, examples)
    platt = FraudCalibration("platt", a=0.5, b=-1.0)
    model.set_fraud_calibration(platt)
    np.testing.assert_allclose(fraud_scores(model, examples), platt.apply(raw), rtol=1e-5)
    save_model(model, tmp_path)
    back = load_model(tmp_path)
    assert back.fraud_calibration == platt
    np.testing.assert_allclose(fraud_scores(back, examples), platt.apply(raw), rtol=1e-5)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["fraud_calibration"] = {"kind": "isotonic", "x": [0.2, 0.1], "y": [0.0, 1.0]}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFormatError, match="fraud_calibration.x/y"):
        load_model(tmp_path)
    with pytest.raises(CalibrationError, match="fraud_calibration.kind"):
        FraudCalibration.from_json({"kind": "pickle"})


def test_a_version_without_labels_ranks_nothing() -> None:
    from training.model.calibration import NO_LABELS

    assert NO_LABELS.kind == "constant"
    np.testing.assert_array_equal(NO_LABELS.apply(np.array([0.1, 0.9, 0.5])), np.zeros(3))
    assert FraudCalibration.from_json(NO_LABELS.to_json()) == NO_LABELS


def test_served_probabilities_keep_every_order_through_a_flat_map() -> None:
    # An isotonic map flat over most of the trees' probabilities, or Platt on tiny ones, must
    # not merge two of them into a tie: AUC-PR and the alert queue would change.
    model = shop_model(12, 20, ModelConfig(encoder_init="tiny_random", dim=8, history_len=3))
    history = shop_history(model)
    noisy_labels = txns(600, 0, fraud_rate=0.2)  # trees that overfit: many distinct scores
    model.set_fraud_trees(fit_trees(model, noisy_labels, history, seed=0), 1.0)
    examples = fraud_examples(model, txns(2000, 1), history)
    raw = fraud_scores(model, examples)
    assert raw.min() < 0.01 and len(np.unique(raw)) > 1000
    for calibration in (FraudCalibration("isotonic", x=(0.0, 0.9, 1.0), y=(0.02, 0.02, 0.9)),
                        FraudCalibration("platt", a=0.3, b=-2.0)):
        model.set_fraud_calibration(calibration)
        served = fraud_scores(model, examples)
        assert served.dtype == np.float64
        order = np.argsort(raw, kind="stable")
        rises = np.diff(raw[order]) > 0
        assert np.all(np.diff(served[order])[rises] > 0)


def test_a_replica_applies_a_stored_map_without_importing_scikit_learn() -> None:
    """Serving applies the stored map with numpy; only the fits import scikit-learn (about a
    second of every replica's start, measured)."""
    iso = fit_kind("isotonic", *overconfident(400, seed=3))
    code = ("import json, sys; import numpy as np; import serving.app, serving.replica; "
            "from training.model.calibration import FraudCalibration; "
            f"c = FraudCalibration.from_json(json.loads({json.dumps(json.dumps(iso.to_json()))})); "
            "print(json.dumps([c.apply(np.array([0.1, 0.6])).tolist(), "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy'))]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                         capture_output=True, text=True, check=True, timeout=300)
    applied, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert applied == pytest.approx(iso.apply(np.array([0.1, 0.6])).tolist())
    assert imported == []
