"""The guarantees' statistics: they hold on new cases, are not trivially loose, and say when they cannot hold.

Conformal risk control, the conformal interval scale and the Learn-then-Test bound on accepted cases,
each checked over many random calibration / test draws of synthetic exchangeable cases whose truth
is known.
"""

import json

import numpy as np
import pytest
from scipy import stats

from SegUncertaintyLib.conformal import (
    RiskCurve,
    bound_accepted_risk,
    conformal_scale,
    control_risk,
    share_below,
)
from SegUncertaintyLib.errors import SegUncertaintyError

THRESHOLDS = np.linspace(0.0, 1.0, 101)


def _missed_share(cases: int, rng: np.random.Generator) -> np.ndarray:
    """(cases, T) share of a case's errors left unflagged at each threshold: its errors' scores fall below it."""
    scores = rng.beta(2.0, 5.0, size=(cases, 50)) * rng.uniform(0.5, 1.5, size=(cases, 1))
    return (scores[:, :, None] < THRESHOLDS).mean(axis=1)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_the_expected_loss_on_new_cases_is_at_most_alpha_and_close_to_it(alpha):
    rng = np.random.default_rng(0)
    realised = []
    for _ in range(400):  # random calibration / test splits of exchangeable cases
        losses = _missed_share(140, rng)
        control = control_risk(losses[:100], THRESHOLDS, alpha)
        realised.append(losses[100:, np.searchsorted(THRESHOLDS, control.threshold)].mean())
    mean = float(np.mean(realised))
    assert mean <= alpha + 0.003  # the guarantee is on average over splits; 400 splits leave ~0.001 of noise
    assert mean >= alpha - 0.02  # and not trivially conservative


def test_the_corrected_risk_includes_the_finite_sample_term():
    losses = np.zeros((9, THRESHOLDS.size))  # no loss at any threshold: only B / (n + 1) = 0.1 remains
    control = control_risk(losses, THRESHOLDS, 0.1)
    assert control.threshold == 1.0 and control.corrected_risk == pytest.approx(0.1)
    assert control_risk(losses, THRESHOLDS, 0.099) is None  # the same set cannot guarantee less


def test_three_calibration_cases_give_no_guarantee_at_alpha_0_1():
    assert control_risk(np.zeros((3, THRESHOLDS.size)), THRESHOLDS, 0.1) is None


def test_a_loss_curve_that_dips_is_bounded_by_its_running_maximum():
    losses = np.array([[0.0, 0.3, 0.0, 0.3]] * 19)  # dips back to 0 at the third threshold
    control = control_risk(losses, np.array([0.1, 0.2, 0.3, 0.4]), 0.1)
    assert control.threshold == 0.1  # the dip at 0.3 is not taken


@pytest.mark.parametrize(
    "losses, thresholds, alpha",
    [
        (np.zeros((4, 3)), np.array([0.1, 0.2]), 0.1),  # shapes disagree
        (np.zeros((4, 2)), np.array([0.2, 0.1]), 0.1),  # thresholds not increasing
        (np.zeros((4, 2)), np.array([0.1, 0.2]), 0.0),  # alpha out of range
        (np.full((4, 2), np.nan), np.array([0.1, 0.2]), 0.1),  # NaN losses
        (np.full((4, 2), 1.5), np.array([0.1, 0.2]), 0.1),  # losses above the bound
    ],
)
def test_bad_inputs_are_clear_errors(losses, thresholds, alpha):
    with pytest.raises(SegUncertaintyError):
        control_risk(losses, thresholds, alpha)


def test_a_stored_risk_curve_controls_any_alpha_as_the_losses_did():
    losses = _missed_share(60, np.random.default_rng(1))
    curve = RiskCurve.from_dict(json.loads(json.dumps(RiskCurve.fit(losses, THRESHOLDS).to_dict())))
    for alpha in (0.05, 0.1, 0.3):
        assert curve.control(alpha) == control_risk(losses, THRESHOLDS, alpha)
    with pytest.raises(SegUncertaintyError):
        RiskCurve.from_dict({"thresholds": [0.1, 0.2], "mean_loss": [0.0], "cases": 3})


def test_share_below_counts_the_members_whose_score_is_under_each_threshold():
    scores = np.array([[0.05, 0.2], [0.5, 0.9]])
    members = np.array([[True, True], [False, True]])  # scores 0.05, 0.2, 0.9
    np.testing.assert_allclose(share_below(scores, members, np.array([0.05, 0.1, 0.2, 1.0])), [0, 1 / 3, 1 / 3, 1])
    np.testing.assert_array_equal(share_below(scores, np.zeros((2, 2), bool), np.array([0.5])), [0.0])  # none: 0


def test_the_conformal_interval_holds_the_coverage_on_new_cases_and_no_more():
    rng = np.random.default_rng(0)
    realised = []
    for _ in range(400):
        # four observations per case around its centre, with a spread that varies by case (heavy tails)
        width = rng.uniform(0.5, 2.0, size=(140, 1))
        scores = np.abs(rng.standard_t(3, size=(140, 4)) * width * rng.uniform(0.5, 1.5, size=(140, 1))) / width
        q = conformal_scale(scores[:100], 0.9)
        realised.append((scores[100:] <= q).mean())
    assert 0.9 - 0.003 <= float(np.mean(realised)) <= 0.9 + 0.02
    assert conformal_scale(np.ones((8, 4)), 0.9) is None  # 1 / 9 > 0.1: eight cases cannot give 90 %
    with pytest.raises(SegUncertaintyError):
        conformal_scale(np.full((20, 4), -1.0), 0.9)


def _cases(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform in [0, 1]; a case is bad with probability 0.3 (1 - score)^2: known selective risks."""
    scores = rng.uniform(size=n)
    return scores, rng.uniform(size=n) < 0.3 * (1 - scores) ** 2


def _selective_risk(t: float) -> float:
    """The true share of bad cases among those with score >= t: mean of 0.3 (1 - s)^2 over [t, 1]."""
    return 0.1 * (1 - t) ** 2


def test_the_accepted_cases_keep_the_bound_with_the_promised_probability():
    rng = np.random.default_rng(0)
    candidates = np.round(np.arange(0.0, 1.0, 0.1), 1)
    failures, accepted = 0, []
    for _ in range(400):
        scores, bad = _cases(1000, rng)
        bound = bound_accepted_risk(scores, bad, candidates, delta=0.05, epsilon=0.1)
        if bound is None:  # nothing shown: every case goes to review, which keeps the bound
            accepted.append(0.0)
            continue
        failures += _selective_risk(bound.accept_from) > 0.05
        accepted.append(1 - bound.accept_from)
    assert failures / 400 <= 0.1  # the bound fails in at most epsilon of the calibration draws
    # and it is not vacuous: the risk is 0.05 from t = 0.29 on; a draw rarely shows nothing, and most
    # draws accept 40 % of the cases or more
    assert np.mean(np.asarray(accepted) == 0) <= 0.05
    assert np.median(accepted) >= 0.4


def test_the_bound_is_the_binomial_test_at_the_bonferroni_level_and_honours_at_least():
    scores, bad = _cases(300, np.random.default_rng(3))
    candidates = np.array([0.2, 0.4, 0.6, 0.8])
    bound = bound_accepted_risk(scores, bad, candidates, 0.05, 0.1)
    taken = scores >= bound.accept_from
    assert bound.accepted == taken.sum() and bound.bad_accepted == (bad & taken).sum()
    assert bound.p_value == pytest.approx(stats.binom.cdf(bound.bad_accepted, bound.accepted, 0.05))
    assert bound.p_value <= 0.1 / 4
    lower = candidates[candidates < bound.accept_from]
    for t in lower:  # every lower candidate failed its test
        n, k = (scores >= t).sum(), (bad & (scores >= t)).sum()
        assert stats.binom.cdf(k, n, 0.05) > 0.1 / 4
    later = bound_accepted_risk(scores, bad, candidates, 0.05, 0.1, at_least=bound.accept_from + 0.01)
    assert later is None or later.accept_from > bound.accept_from
    few_scores, few_bad = scores[:20], bad[:20]  # 20 cases cannot show 5 %: (0.95)^20 > 0.025
    assert bound_accepted_risk(few_scores, few_bad, candidates, 0.05, 0.1) is None
