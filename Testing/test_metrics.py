"""Metrics against well-kept libraries (scikit-learn, torchmetrics, scoringrules, MONAI) and hand-computed cases."""

import numpy as np
import pytest

from SegUncertaintyLib.calibration import fit_logistic
from SegUncertaintyLib.metrics import (
    CalibrationBins,
    adaptive_calibration_error,
    augrc,
    aurc,
    auroc,
    average_precision,
    brier_score,
    consensus_dice,
    crps_ensemble,
    curvas_volume_crps,
    dice,
    dice_per_class,
    e_aurc,
    expected_calibration_error,
    gaussian_crps,
    generalized_energy_distance,
    hungarian_matched_iou,
    majority_vote,
    multirater_calibration_error,
    negative_log_likelihood,
    normalized_cross_correlation,
    rater_disagreement,
    rater_variability,
    risk_coverage,
    soft_dice,
    variability_agreement,
    volume_crps,
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
    # two bins used: [0.6, 0.667) holds 0.65 x2 (1 correct), [0.933, 1] holds 0.95 x2 (2 correct)
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


def _binary_probabilities(rng, n):
    logits = rng.normal(0, 2.5, n)
    p = 1 / (1 + np.exp(-logits))
    y = (rng.random(n) < 1 / (1 + np.exp(-0.7 * logits))).astype(int)  # miscalibrated on purpose
    return np.stack([1 - p, p]), y


def test_auprc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(2)
    errors = rng.random(30000) < 0.05
    scores = np.round(rng.random(30000) + 0.5 * errors, 2)
    reference = sklearn_metrics.average_precision_score(errors, scores)
    assert average_precision(scores, errors) == pytest.approx(reference, abs=1e-6)
    assert average_precision(rng.random(100000), rng.random(100000) < 0.2) == pytest.approx(0.2, abs=0.01)
    assert np.isnan(average_precision(scores, np.zeros_like(errors)))


def test_ece_matches_torchmetrics_top_label():
    import torch
    from torchmetrics.classification import MulticlassCalibrationError

    rng = np.random.default_rng(3)
    probabilities, labels = _binary_probabilities(rng, 50000)
    predicted = probabilities.argmax(axis=0)
    ours = expected_calibration_error(probabilities.max(axis=0), predicted == labels, bins=15)
    metric = MulticlassCalibrationError(num_classes=2, n_bins=15, norm="l1")
    theirs = metric(torch.from_numpy(probabilities.T.copy()), torch.from_numpy(labels)).item()
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert ours > 0.01  # the data are miscalibrated, so the check is not trivially 0 == 0


def test_calibration_bins_pool_like_one_array():
    rng = np.random.default_rng(4)
    confidence, correct = rng.uniform(0.5, 1, 9000), rng.random(9000) < 0.8
    pooled = CalibrationBins().add(confidence[:4000], correct[:4000]).add(confidence[4000:], correct[4000:])
    assert pooled.ece() == pytest.approx(expected_calibration_error(confidence, correct), abs=1e-12)
    mean_confidence, accuracy, count = pooled.curve()
    assert count.sum() == 9000 and np.all(np.diff(mean_confidence) > 0)
    assert np.all(np.abs(accuracy - 0.8) < 0.1)  # correctness was drawn independently of confidence
    assert np.isnan(CalibrationBins().ece())


def test_brier_and_nll_match_scikit_learn():
    rng = np.random.default_rng(5)
    probabilities, labels = _binary_probabilities(rng, 20000)
    # the multi-class Brier score is twice the binary one for two classes
    binary = sklearn_metrics.brier_score_loss(labels, probabilities[1])
    assert brier_score(probabilities, labels) == pytest.approx(2 * binary, abs=1e-6)
    nll = sklearn_metrics.log_loss(labels, np.clip(probabilities.T, 1e-7, 1))
    assert negative_log_likelihood(probabilities, labels) == pytest.approx(nll, abs=1e-6)
    three = rng.dirichlet(np.ones(3), 500).T
    y3 = rng.integers(0, 3, 500)
    expected = np.mean([((three[:, i] - np.eye(3)[y3[i]]) ** 2).sum() for i in range(500)])
    assert brier_score(three, y3) == pytest.approx(expected)


def test_crps_matches_scoringrules_without_truncation():
    import scoringrules

    rng = np.random.default_rng(6)
    members = rng.normal(70, 4, 10)
    for observation in (69.0, 80.0, 170.0, 7000.0):
        reference = float(scoringrules.crps_ensemble(observation, members, estimator="nrg"))
        assert crps_ensemble(observation, members) == pytest.approx(reference, abs=1e-6)
        assert crps_ensemble(observation, members) == pytest.approx(
            float(scoringrules.crps_ensemble(observation, members)), abs=1e-6
        )
    # far outside the forecast the score keeps growing with the distance (no saturation)
    assert crps_ensemble(7000.0, members) > 10 * crps_ensemble(170.0, members)
    assert crps_ensemble(3.0, np.array([5.0])) == 2.0  # one member: the absolute error
    assert volume_crps(np.array([5.0]), np.array([3.0, 7.0])) == 2.0


def test_dice_matches_monai_with_explicit_batch_and_channel():
    import torch
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(7)
    z, y, x = np.mgrid[:24, :30, :28]
    truth = ((z - 12) ** 2 / 64 + (y - 15) ** 2 / 100 + (x - 14) ** 2 / 81) < 1
    prediction = truth ^ (rng.random(truth.shape) < 0.03)
    metric = DiceMetric(include_background=True, reduction="mean")
    theirs = metric(torch.from_numpy(prediction[None, None]).float(), torch.from_numpy(truth[None, None]).float())
    assert dice(prediction, truth) == pytest.approx(theirs.item(), abs=1e-6)
    assert dice_per_class(prediction.astype(np.uint8), truth, 2) == [dice(prediction, truth)]


def test_consensus_dice_ignores_disputed_voxels():
    raters = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], bool)
    # unanimous: voxels 0, 1 (all mark), 4, 5 (none mark); 2 and 3 are disputed
    assert consensus_dice(np.array([1, 1, 1, 1, 0, 0]), raters) == 1.0
    assert consensus_dice(np.array([1, 0, 1, 1, 0, 1]), raters) == pytest.approx(2 * 1 / (2 + 2))


def test_generalized_energy_distance_hand_computed_and_limits():
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[0, 1, 1, 0]], bool)
    raters = np.concatenate([a, b])
    same = generalized_energy_distance(raters, raters)
    assert same["ged"] == pytest.approx(0.0, abs=1e-12)
    # one sample equal to a: d(a, a) = 0, d(a, b) = 1 - 1/3; rater pairs (aa, ab, ba, bb) -> mean 1/3
    one = generalized_energy_distance(a, raters)
    assert one["cross"] == pytest.approx(1 / 3)
    assert one["sample_diversity"] == 0.0
    assert one["rater_diversity"] == pytest.approx(1 / 3)
    assert one["ged"] == pytest.approx(2 / 3 - 0 - 1 / 3)
    # empty against empty is a perfect match
    empty = np.zeros((2, 4), bool)
    assert generalized_energy_distance(empty, empty)["ged"] == 0.0


def test_hungarian_matched_iou():
    raters = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
    assert hungarian_matched_iou(raters[::-1], raters) == 1.0  # the order of samples does not matter
    assert hungarian_matched_iou(raters[:1], raters) == pytest.approx(0.5)  # one sample matched to both raters
    three = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0]], bool)
    # tiled to lcm(3, 2) = 6: samples A A A A B B, raters A A A B B B -> five perfect pairs, one A-B pair (IoU 0)
    assert hungarian_matched_iou(three, raters) == pytest.approx(5 / 6)


def test_soft_dice_ncc_and_rater_disagreement():
    frequency = np.array([0.0, 0.25, 0.5, 1.0])
    assert soft_dice(frequency, frequency) == pytest.approx(2 * (frequency**2).sum() / (2 * frequency.sum()))
    assert soft_dice(np.zeros(3), np.zeros(3)) == 1.0
    raters = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]], bool)
    np.testing.assert_allclose(rater_disagreement(raters), [0, 0.25, 0.1875, 0])
    u = np.array([0.1, 0.9, 0.5, 0.2])
    assert normalized_cross_correlation(u, 3 * u + 1) == pytest.approx(1.0)
    assert normalized_cross_correlation(u, -u) == pytest.approx(-1.0)
    assert np.isnan(normalized_cross_correlation(u, np.ones(4)))


def test_rater_variability_and_the_quam_sm_agreement_scores():
    from scipy.stats import pearsonr

    raters = np.zeros((4, 1, 1, 3), bool)
    raters[:2, 0, 0, 0] = True  # 2 of 4: one bit
    raters[:1, 0, 0, 1] = True  # 1 of 4
    np.testing.assert_allclose(rater_variability(raters)[0, 0], [1.0, 0.8112781, 0.0], atol=1e-6)
    rng = np.random.default_rng(3)
    u, r = rng.random(200) * 5 + 2, rng.random(200)
    agreement = variability_agreement(u, r)
    assert agreement["pcc"] == pytest.approx(pearsonr(u, r).statistic, abs=1e-12)
    assert agreement["r2"] == pytest.approx(agreement["pcc"] ** 2)
    normalised = (u - u.min()) / (u.max() - u.min())
    assert agreement["sdice"] == pytest.approx(2 * (normalised * r).sum() / (normalised.sum() + r.sum()))
    assert np.isnan(variability_agreement(np.ones(5), r[:5])["pcc"])


def test_augrc_is_the_mean_share_of_all_voxels_kept_and_wrong():
    rng = np.random.default_rng(11)
    scores, errors = rng.permutation(2000) / 2000.0, rng.random(2000) < 0.2  # no ties
    order = np.argsort(scores)
    kept_wrong = np.cumsum(errors[order]) / errors.size  # after keeping k voxels, most certain first
    assert augrc(scores, errors) == pytest.approx(kept_wrong.mean(), abs=1e-12)
    oracle = augrc(errors.astype(float), errors)  # every error last
    assert oracle < augrc(scores, errors) < augrc(-errors.astype(float), errors)  # errors first: the worst
    assert augrc(scores, errors) == pytest.approx(errors.mean() / 2, abs=0.01)  # random: about half the rate
    assert augrc(np.zeros(10), np.ones(10, bool)) == pytest.approx(0.55)  # ties: expected risk, (1/N) sum k/N


def test_adaptive_ece_bins_by_equal_mass_and_keeps_ties_together():
    rng = np.random.default_rng(12)
    confidence = rng.uniform(0.5, 1.0, 3000) ** 3 * 0.5 + 0.5  # crowded near 0.5: equal-width bins differ
    correct = rng.random(3000) < 0.75 + 0.2 * np.sin(40 * confidence)  # over- and underconfident by turns
    order = np.argsort(confidence)
    groups = np.array_split(order, 15)  # no ties: equal-mass bins are these groups exactly
    expected = sum(abs(confidence[g].sum() - correct[g].sum()) for g in groups) / 3000
    assert adaptive_calibration_error(confidence, correct) == pytest.approx(expected, abs=1e-12)
    assert adaptive_calibration_error(confidence, correct) != pytest.approx(
        expected_calibration_error(confidence, correct), abs=1e-4
    )
    # a saturated confidence shared by many voxels stays in one bin: a bin of 1.0s that are 90 % right
    saturated = np.r_[np.ones(900), rng.uniform(0.6, 0.9, 100)]
    right = np.r_[np.arange(900) % 10 != 0, rng.random(100) < 0.75]
    gap_of_ones = 900 * 0.1 / 1000
    assert adaptive_calibration_error(saturated, right) >= gap_of_ones
    assert np.isnan(adaptive_calibration_error(np.zeros(0), np.zeros(0, bool)))


def test_curvas_ece_is_torchmetrics_top_label_with_50_bins_per_rater_averaged():
    import torch
    from torchmetrics.classification import MulticlassCalibrationError

    rng = np.random.default_rng(13)
    probabilities, labels = _binary_probabilities(rng, 30000)
    probabilities = probabilities.reshape(2, 30, 1000)
    raters = np.stack([labels, labels ^ (rng.random(30000) < 0.1), labels ^ (rng.random(30000) < 0.2)])
    raters = raters.reshape(3, 30, 1000).astype(bool)
    metric = MulticlassCalibrationError(num_classes=2, n_bins=50, norm="l1")
    flat = torch.from_numpy(probabilities.reshape(2, -1).T.copy())
    theirs = [metric(flat, torch.from_numpy(r.ravel().astype(np.int64))).item() for r in raters]
    assert multirater_calibration_error(probabilities, raters) == pytest.approx(np.mean(theirs), abs=1e-6)
    assert len({round(t, 4) for t in theirs}) == 3  # each rater gives its own figure


def test_gaussian_crps_matches_scoringrules_and_the_curvas_score_saturates():
    import scoringrules
    from scipy import integrate, stats

    for x, mu, sd in ((69.0, 74.3, 3.7), (90.0, 74.3, 3.7), (74.3, 74.3, 0.2)):
        assert float(gaussian_crps(x, mu, sd)) == pytest.approx(float(scoringrules.crps_normal(x, mu, sd)), rel=1e-9)
    assert float(gaussian_crps(5.0, 3.0, 0.0)) == 2.0  # a point mass: the absolute error
    raters = np.array([70.0, 74.0, 79.0])
    mu, sd = raters.mean(), raters.std()  # the population sd, as CURVAS's np.std

    def windowed(v: float) -> float:  # the defining integral over mean +- 3 sd, on a fine grid
        y = np.linspace(mu - 3 * sd, mu + 3 * sd, 200001)
        return float(integrate.trapezoid((stats.norm.cdf(y, mu, sd) - (y >= v)) ** 2, y))

    for v in (mu, mu + 1.0, mu - 2 * sd, mu + 3 * sd):
        assert curvas_volume_crps(v, raters) == pytest.approx(windowed(v), rel=1e-4)
    # inside the window it is close to the proper score, far outside it stops growing: 10 sd off costs
    # what 100 sd off costs, where the closed form grows with the distance
    assert curvas_volume_crps(mu, raters) == pytest.approx(float(gaussian_crps(mu, mu, sd)), rel=0.02)
    assert curvas_volume_crps(mu + 10 * sd, raters) == pytest.approx(curvas_volume_crps(mu + 100 * sd, raters))
    assert float(gaussian_crps(mu + 100 * sd, mu, sd)) > 9 * float(gaussian_crps(mu + 10 * sd, mu, sd))
    assert curvas_volume_crps(123.0, np.array([5.0, 5.0, 5.0])) == 0.0  # equal raters: 0 whatever the volume
