"""Conformal risk control: the guarantee holds on new cases, is not trivially loose, and says when it cannot hold."""

import numpy as np
import pytest

from SegUncertaintyLib.conformal import control_risk
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
