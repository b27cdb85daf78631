"""Metrics against a well-kept library (scikit-learn) and hand-computed cases."""

import numpy as np
import pytest

from SegUncertaintyLib.calibration import fit_logistic
from SegUncertaintyLib.metrics import (
    aurc,
    auroc,
    dice,
    e_aurc,
    expected_calibration_error,
    majority_vote,
    risk_coverage,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    errors = rng.random(20000) < 0.07
    scores = np.round(rng.random(20000) + 0.6 * errors, 2)  # many ties
    assert auroc(scores, errors) == pytest.approx(sklearn_metrics.roc_auc_score(errors, scores), abs=1e-6)
    assert auroc(rng.random(200000), rng.random(200000) < 0.1) == pytest.approx(0.5, abs=0.01)
    assert np.isnan(auroc(scores, np.zeros_like(errors)))


def test_risk_coverage_limits():
    errors = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0, 1], bool)
    perfect = errors.astype(float)  # errors get the highest uncertainty
    assert e_aurc(perfect, errors) == pytest.approx(0.0, abs=1e-12)
    # constant scores: every coverage has the overall error rate (ties are kept together)
    coverage, risk = risk_coverage(np.zeros(10), errors)
    np.testing.assert_allclose(risk, 0.3)
    np.testing.assert_allclose(coverage, np.arange(1, 11) / 10)
    assert aurc(np.zeros(10), errors) == pytest.approx(0.3)
    # hand-computed: order by score keeps [ok, ok, err, ok]: risks 0, 0, 1/3, 1/4
    assert aurc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 0], bool)) == pytest.approx((1 / 3 + 1 / 4) / 4)


def test_ece_hand_computed():
    # two bins used: (0.6, 0.667] holds 0.65 x2 (1 correct), (0.933, 1] holds 0.95 x2 (2 correct)
    confidence = np.array([0.65, 0.65, 0.95, 0.95])
    correct = np.array([1, 0, 1, 1], bool)
    expected = 0.5 * abs(0.5 - 0.65) + 0.5 * abs(1.0 - 0.95)
    assert expected_calibration_error(confidence, correct) == pytest.approx(expected)
    assert expected_calibration_error(np.ones(5), np.ones(5, bool)) == 0.0


def test_logistic_fit_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    u = rng.normal(2.0, 1.5, 50000)
    y = rng.random(u.size) < 1 / (1 + np.exp(-(2.0 * u - 6.0)))
    slope, intercept = fit_logistic(u, y, ridge=0.0)
    reference = LogisticRegression(C=1e12, max_iter=1000).fit(u[:, None], y)
    assert slope == pytest.approx(reference.coef_[0, 0], rel=1e-3)
    assert intercept == pytest.approx(reference.intercept_[0], rel=1e-3)
    # separable data still gives finite, increasing parameters
    slope, intercept = fit_logistic(np.arange(100.0), np.arange(100) > 90)
    assert np.isfinite([slope, intercept]).all() and slope > 0


def test_majority_vote_ties_and_dice_conventions():
    raters = np.array([[0, 1, 2, 2], [0, 1, 1, 2], [1, 0, 1, 0], [1, 0, 0, 0]], np.uint8)
    np.testing.assert_array_equal(majority_vote(raters), [1, 1, 1, 2])
    np.testing.assert_array_equal(majority_vote(raters > 0), [True, True, True, True])
    assert dice(np.zeros(5, bool), np.zeros(5, bool)) == 1.0
    assert dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == pytest.approx(0.5)
