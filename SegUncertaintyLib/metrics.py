"""Segmentation, uncertainty and multi-rater metrics (formulas in each docstring).

Conventions:

* Voxel metrics score exactly the voxels they are given: the caller picks the voxel set (all
  voxels, or :func:`region_around` the prediction and the raters, as ``seguncertainty evaluate``
  does) by indexing the arrays, and should name it with the result.
* Uncertainty scores are "higher = more likely wrong"; an error is a voxel whose predicted label
  differs from the reference.
* Masks are bool arrays of any shape; two empty masks agree perfectly (Dice 1, IoU 1), which
  matters on multi-rater data where a rater may mark nothing.
* Results are raw numbers (AURC is not scaled by 1000; CRPS is in the units of its input).
"""

from __future__ import annotations

import math

import numpy as np


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice = 2 |P ∩ R| / (|P| + |R|) over all voxels; 1.0 when both masks are empty.

    Args:
        prediction: bool mask, any shape.
        reference: bool mask, same shape.
    """
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"shapes differ: {prediction.shape} vs {reference.shape}")
    total = int(prediction.sum()) + int(reference.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def majority_vote(raters: np.ndarray) -> np.ndarray:
    """The label most raters gave each voxel.

    Ties go to the higher class: for one foreground class this is "marked by at least half of the
    raters" (2 of 4 counts), the usual LIDC consensus.

    Args:
        raters: ``(R, ...)`` label maps, one per rater: bool masks or integer labels.

    Returns:
        ``(...)`` bool mask for bool input, else uint8 labels.
    """
    raters = np.asarray(raters)
    if raters.dtype == bool:
        return raters.mean(axis=0) >= 0.5
    counts = np.stack([(raters == c).sum(axis=0) for c in range(int(raters.max()) + 1)])
    return (len(counts) - 1 - np.argmax(counts[::-1], axis=0)).astype(np.uint8)


def auroc(scores: np.ndarray, errors: np.ndarray) -> float:
    """Error-detection AUROC: ``P(u_err > u_ok) + 0.5 P(u_err = u_ok)`` (Mann-Whitney, ties averaged).

    Args:
        scores: uncertainty per voxel (higher = more likely wrong), any shape.
        errors: bool per voxel, same shape (the voxel set is whatever the caller passes).

    Returns:
        AUROC in [0, 1]; NaN when there are no errors or no correct voxels.
    """
    from scipy.stats import rankdata

    scores, errors = np.asarray(scores, np.float64).ravel(), np.asarray(errors, bool).ravel()
    n_err = int(errors.sum())
    n_ok = errors.size - n_err
    if n_err == 0 or n_ok == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[errors].sum() - n_err * (n_err + 1) / 2.0) / (n_err * n_ok))


def average_precision(scores: np.ndarray, errors: np.ndarray) -> float:
    """Error-detection AUPRC as average precision: ``sum_n (R_n - R_(n-1)) P_n``.

    Errors are the positive class; thresholds are the distinct scores from high to low (as
    scikit-learn's ``average_precision_score``). A random score gives about the error rate.

    Args:
        scores: uncertainty per voxel (higher = more likely wrong), any shape.
        errors: bool per voxel, same shape.

    Returns:
        AP in [0, 1]; NaN when there are no errors.
    """
    scores, errors = np.asarray(scores, np.float64).ravel(), np.asarray(errors, bool).ravel()
    if not errors.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, e = scores[order], errors[order]
    last_of_threshold = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    true_pos = np.cumsum(e)[last_of_threshold]
    precision = true_pos / (last_of_threshold + 1)
    recall = true_pos / true_pos[-1]
    return float((np.diff(np.r_[0.0, recall]) * precision).sum())


def risk_coverage(scores: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Risk-coverage curve: keep voxels in order of increasing uncertainty.

    Voxels with equal scores are kept as a group in random order, so within a tie the expected
    risk is used (the curve then does not depend on how a sort breaks ties).

    Returns:
        ``coverage`` ``(N,)`` = k / N and ``risk`` ``(N,)`` = error rate among the k most certain voxels.
    """
    scores, errors = np.asarray(scores, np.float64).ravel(), np.asarray(errors, bool).ravel()
    order = np.argsort(scores, kind="stable")
    s, e = scores[order], errors[order].astype(np.float64)
    n = s.size
    k = np.arange(1, n + 1, dtype=np.float64)
    # tie blocks: [start, end) of equal scores
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], n]
    block_errors = np.add.reduceat(e, starts)
    before = np.r_[0.0, np.cumsum(block_errors)[:-1]]
    block_of = np.repeat(np.arange(len(starts)), ends - starts)
    position = k - starts[block_of]  # 1.. within the block
    expected_errors = before[block_of] + position * (block_errors / (ends - starts))[block_of]
    return k / n, expected_errors / k


def aurc(scores: np.ndarray, errors: np.ndarray) -> float:
    """Area under the risk-coverage curve (mean risk over coverages k/N), in raw units (x1000 in papers).

    Random scores give about the error rate; lower is better.
    """
    return float(risk_coverage(scores, errors)[1].mean())


def e_aurc(scores: np.ndarray, errors: np.ndarray) -> float:
    """AURC minus the AURC of a perfect ranking (all errors last); 0 for a perfect ranking."""
    errors = np.asarray(errors, bool).ravel()
    n, n_err = errors.size, int(errors.sum())
    k = np.arange(1, n + 1, dtype=np.float64)
    optimal = float((np.maximum(0.0, k - (n - n_err)) / k).mean())
    return aurc(scores, errors) - optimal


def augrc(scores: np.ndarray, errors: np.ndarray) -> float:
    """Area under the generalized risk-coverage curve (Traub et al. 2024), in raw units (x1000 in papers).

    ``(1/N) sum_k (k/N) R(k/N)``: the mean over coverages of the share of *all* voxels that are both
    kept and wrong, so an error kept early costs more than one kept late and, unlike AURC, the few
    most certain voxels do not dominate. Ties as in :func:`risk_coverage`; lower is better.

    Args:
        scores: uncertainty per voxel (higher = more likely wrong), any shape.
        errors: bool per voxel, same shape.
    """
    coverage, risk = risk_coverage(scores, errors)
    return float((coverage * risk).mean())


class CalibrationBins:
    """Per-bin sums for a top-label reliability diagram and ECE, accumulated over any number of cases.

    Bins are equal-width on [0, 1]: bin b holds confidences in ``[b/B, (b+1)/B)``, the last bin also
    holds 1.0 (the MONAI and torchmetrics convention).
    """

    def __init__(self, bins: int = 15):
        self.bins = bins
        self.count = np.zeros(bins, np.int64)
        self.confidence_sum = np.zeros(bins)
        self.correct_sum = np.zeros(bins)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> CalibrationBins:
        """Add voxels: ``confidence`` (probability of the predicted class) and ``correct`` (bool), same shape."""
        confidence = np.asarray(confidence, np.float64).ravel()
        index = np.clip(np.floor(confidence * self.bins).astype(np.int64), 0, self.bins - 1)
        self.count += np.bincount(index, minlength=self.bins)
        self.confidence_sum += np.bincount(index, confidence, self.bins)
        self.correct_sum += np.bincount(index, np.asarray(correct, np.float64).ravel(), self.bins)
        return self

    def ece(self) -> float:
        """``sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|``; NaN without voxels."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        return float(np.abs(self.correct_sum - self.confidence_sum).sum() / total)

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Non-empty bins: mean confidence, accuracy and voxel count, each ``(n_bins_used,)``."""
        used = self.count > 0
        n = self.count[used]
        return self.confidence_sum[used] / n, self.correct_sum[used] / n, n


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width bins (Guo et al. 2017), see :class:`CalibrationBins`.

    Args:
        confidence: probability of the predicted class per voxel, in [0, 1], any shape.
        correct: bool per voxel, the prediction equals the reference, same shape.
        bins: number of equal-width bins.
    """
    return CalibrationBins(bins).add(confidence, correct).ece()


def adaptive_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-mass bins (adaptive calibration error, Nixon et al. 2019).

    The bin edges are the ``b / bins`` quantiles of the confidences, so each bin holds about ``N / bins``
    voxels; voxels of equal confidence always share a bin (a saturated 1.0 may fill several bins' worth).
    ``sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|``.

    Args:
        confidence: probability of the predicted class per voxel, in [0, 1], any shape.
        correct: bool per voxel, the prediction equals the reference, same shape.
        bins: number of bins.

    Returns:
        ACE in [0, 1]; NaN without voxels.
    """
    confidence = np.asarray(confidence, np.float64).ravel()
    correct = np.asarray(correct, np.float64).ravel()
    if confidence.size == 0:
        return float("nan")
    edges = np.quantile(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    index = np.searchsorted(edges, confidence, side="left")  # a value equal to an edge joins the lower bin
    gap = np.bincount(index, confidence - correct, minlength=bins)
    return float(np.abs(gap).sum() / confidence.size)


def multirater_calibration_error(probabilities: np.ndarray, raters: np.ndarray, bins: int = 50) -> float:
    """CURVAS's ECE: top-label, ``bins`` equal-width bins, over every voxel given (background
    included), against each rater in turn, then averaged over the raters.

    Args:
        probabilities: ``(C, ...)`` class probabilities.
        raters: ``(R, ...)`` rater label maps (bool for one foreground class).
        bins: 50 in CURVAS.
    """
    p = np.asarray(probabilities)
    confidence, predicted = p.max(axis=0), p.argmax(axis=0)
    raters = np.asarray(raters).astype(np.int64)
    return float(np.mean([CalibrationBins(bins).add(confidence, predicted == r).ece() for r in raters]))


def _flat_scored(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(C, N)`` float64 probabilities and the ``(N,)`` probability given to each voxel's reference label."""
    p = np.asarray(probabilities, np.float64).reshape(len(probabilities), -1)
    y = np.asarray(labels).ravel()
    return p, p[y, np.arange(y.size)]


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score ``mean_i sum_c (p_ic - [y_i = c])^2``.

    For two classes this is twice the binary Brier score ``mean_i (p_i,fg - y_i,fg)^2``.

    Args:
        probabilities: ``(C, N...)`` class probabilities of the voxels to score.
        labels: ``(N...)`` reference labels of the same voxels.
    """
    p, p_reference = _flat_scored(probabilities, labels)
    if p_reference.size == 0:
        return float("nan")
    return float(((p**2).sum(axis=0) - 2.0 * p_reference + 1.0).mean())


NLL_EPSILON = 1e-7


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """``-mean_i log p_{i, y_i}`` in nats, with probabilities clipped to ``[1e-7, 1]``.

    Args:
        probabilities: ``(C, N...)`` class probabilities of the voxels to score.
        labels: ``(N...)`` reference labels of the same voxels.
    """
    _, p_reference = _flat_scored(probabilities, labels)
    if p_reference.size == 0:
        return float("nan")
    return float(-np.log(np.clip(p_reference, NLL_EPSILON, 1.0)).mean())


def region_around(masks: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxels within ``radius_mm`` of any mask: the voxel set "around the prediction and the raters".

    Every error lies in (prediction ∪ reference); the margin adds the hard correct voxels next to
    boundaries. Distances are physical, so anisotropic grids are fine.

    Args:
        masks: ``(M, k, j, i)`` bool masks, e.g. the prediction and every rater.
        radius_mm: margin in mm.
        spacing: voxel size in mm along ``(i, j, k)`` (ITK order).

    Returns:
        ``(k, j, i)`` bool mask.
    """
    from scipy.ndimage import distance_transform_edt

    union = np.asarray(masks, bool).any(axis=0)
    if not union.any():
        return union
    return distance_transform_edt(~union, sampling=tuple(spacing)[::-1]) <= radius_mm


def dice_per_class(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> list[float]:
    """Dice of every foreground class ``1..C-1`` between two label maps (see :func:`dice`).

    Args:
        prediction: ``(...)`` integer labels.
        reference: ``(...)`` integer labels (bool is class 1), same shape.
        num_classes: C, background included.
    """
    prediction, reference = np.asarray(prediction), np.asarray(reference).astype(np.int64)
    return [dice(prediction == c, reference == c) for c in range(1, num_classes)]


def consensus_dice(prediction: np.ndarray, raters: np.ndarray, label: int = 1) -> float:
    """Dice against the unanimous consensus, scored only where the raters agree (CURVAS style).

    For class ``label``: the target is the voxels every rater gives that class; voxels where the
    raters disagree (some give it, some do not) are left out of both masks.

    Args:
        prediction: ``(...)`` integer labels.
        raters: ``(R, ...)`` label maps (bool for one foreground class).
        label: the class to score.
    """
    marked = np.asarray(raters).astype(np.int64) == label
    everyone, nobody = marked.all(axis=0), ~marked.any(axis=0)
    agreed = everyone | nobody
    return dice((np.asarray(prediction) == label) & agreed, everyone)


def _pairwise_iou(a: np.ndarray, b: np.ndarray, num_classes: int) -> np.ndarray:
    """``(len(a), len(b))`` IoU averaged over foreground classes; IoU of two empty masks is 1."""
    iou = np.zeros((len(a), len(b)))
    for c in range(1, num_classes):
        ma = (np.asarray(a) == c).reshape(len(a), -1).astype(np.float32)
        mb = (np.asarray(b) == c).reshape(len(b), -1).astype(np.float32)
        intersection = ma @ mb.T
        union = ma.sum(1)[:, None] + mb.sum(1)[None, :] - intersection
        iou += np.where(union > 0, intersection / np.maximum(union, 1), 1.0)
    return iou / (num_classes - 1)


def generalized_energy_distance(samples: np.ndarray, raters: np.ndarray, num_classes: int = 2) -> dict[str, float]:
    """Squared generalised energy distance between predicted samples and raters (Kohl et al. 2018).

    ``GED^2 = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')]`` with ``d = 1 - IoU`` (mean IoU over the
    foreground classes; two empty masks have d = 0). Every expectation averages over all pairs,
    i = j included (the V-statistic of the published LIDC code), so one sample gives
    ``E[d(S, S')] = 0``.

    Args:
        samples: ``(S, ...)`` predicted label maps (one for a deterministic method).
        raters: ``(R, ...)`` rater label maps (bool for one foreground class).
        num_classes: C, background included.

    Returns:
        ``ged`` (GED^2), ``cross`` E[d(S, Y)], ``sample_diversity`` E[d(S, S')], ``rater_diversity`` E[d(Y, Y')].
    """
    samples, raters = np.asarray(samples).astype(np.int64), np.asarray(raters).astype(np.int64)
    cross = float((1 - _pairwise_iou(samples, raters, num_classes)).mean())
    within_s = float((1 - _pairwise_iou(samples, samples, num_classes)).mean())
    within_y = float((1 - _pairwise_iou(raters, raters, num_classes)).mean())
    return {
        "ged": 2 * cross - within_s - within_y,
        "cross": cross,
        "sample_diversity": within_s,
        "rater_diversity": within_y,
    }


def hungarian_matched_iou(samples: np.ndarray, raters: np.ndarray, num_classes: int = 2) -> float:
    """Mean IoU of a one-to-one matching of samples to raters that maximises the total IoU.

    When the counts differ, both sets are repeated up to their least common multiple before
    matching (so 10 samples and 4 raters match 20 with 20). IoU as in :func:`generalized_energy_distance`.

    Args:
        samples: ``(S, ...)`` predicted label maps.
        raters: ``(R, ...)`` rater label maps.
        num_classes: C, background included.
    """
    from scipy.optimize import linear_sum_assignment

    samples, raters = np.asarray(samples).astype(np.int64), np.asarray(raters).astype(np.int64)
    iou = _pairwise_iou(samples, raters, num_classes)
    n = math.lcm(len(samples), len(raters))
    tiled = iou[np.ix_(np.arange(n) % len(samples), np.arange(n) % len(raters))]
    rows, cols = linear_sum_assignment(tiled, maximize=True)
    return float(tiled[rows, cols].mean())


def soft_dice(probability: np.ndarray, frequency: np.ndarray) -> float:
    """``2 sum(p q) / (sum p + sum q)`` between a foreground probability and the rater frequency map.

    Args:
        probability: predicted foreground probability per voxel, any shape.
        frequency: fraction of raters marking each voxel, same shape.

    Returns:
        Soft Dice in [0, 1]; 1.0 when both maps are zero everywhere.
    """
    p, q = np.asarray(probability, np.float64), np.asarray(frequency, np.float64)
    total = p.sum() + q.sum()
    return 1.0 if total == 0 else float(2 * (p * q).sum() / total)


def rater_disagreement(raters: np.ndarray) -> np.ndarray:
    """Per-voxel variance of the raters' foreground indicator, ``f (1 - f)`` with f the rater frequency.

    Args:
        raters: ``(R, ...)`` label maps; any class > 0 counts as foreground.

    Returns:
        ``(...)`` float32 in [0, 0.25]: 0 where all raters agree, 0.25 at an even split.
    """
    frequency = (np.asarray(raters) > 0).mean(axis=0, dtype=np.float32)
    return frequency * (1 - frequency)


def rater_variability(raters: np.ndarray) -> np.ndarray:
    """Per-voxel binary entropy of the rater frequency f, in bits: 0 where all agree, 1 at an even split.

    The reference map of the QUAM-SM protocol (a ring along the outlines the raters disagree on).

    Args:
        raters: ``(R, ...)`` label maps; any class > 0 counts as foreground.

    Returns:
        ``(...)`` float32 in [0, 1].
    """
    f = (np.asarray(raters) > 0).mean(axis=0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(f * np.log2(f) + (1 - f) * np.log2(1 - f))
    return np.nan_to_num(h, nan=0.0).astype(np.float32)


def variability_agreement(uncertainty: np.ndarray, variability: np.ndarray) -> dict[str, float]:
    """How well an uncertainty map matches the raters' variability map over a voxel set (QUAM-SM's protocol).

    * ``pcc``: Pearson correlation over the voxels (:func:`normalized_cross_correlation`);
    * ``r2``: its square (the R^2 of a one-variable least-squares fit);
    * ``sdice``: soft Dice ``2 sum(u r) / (sum u + sum r)`` of the min-max normalised uncertainty ``u``
      and the variability ``r`` (:func:`soft_dice`).

    Args:
        uncertainty: the method's map over the voxel set, any shape.
        variability: :func:`rater_variability` over the same voxels.

    Returns:
        ``pcc``, ``r2`` and ``sdice``; pcc and r2 are NaN when either map is constant there.
    """
    u = np.asarray(uncertainty, np.float64).ravel()
    span = u.max() - u.min() if u.size else 0.0
    normalised = (u - u.min()) / span if span > 0 else np.zeros_like(u)
    pcc = normalized_cross_correlation(u, variability)
    return {"pcc": pcc, "r2": pcc**2, "sdice": soft_dice(normalised, np.asarray(variability).ravel())}


def normalized_cross_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """``mean((a - mean a)(b - mean b)) / (std a * std b)`` with population standard deviations.

    Used between an uncertainty map and :func:`rater_disagreement` over a voxel set.

    Returns:
        NCC in [-1, 1]; NaN when either map is constant.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return float("nan")
    return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))


def crps_ensemble(observation: float, forecasts: np.ndarray) -> float:
    """CRPS of an empirical (ensemble) forecast: ``mean|v_m - x| - 1/(2 M^2) sum_mn |v_m - v_n|``.

    No truncation: a forecast far from the observation costs in proportion to the distance. In the
    units of the variable; one member gives the absolute error.

    Args:
        observation: the observed value x.
        forecasts: ``(M,)`` forecast members.
    """
    v = np.asarray(forecasts, np.float64).ravel()
    spread = np.abs(v[:, None] - v[None, :]).sum() / (2 * v.size**2)
    return float(np.abs(v - observation).mean() - spread)


def volume_crps(sample_volumes: np.ndarray, rater_volumes: np.ndarray) -> float:
    """Mean over raters of :func:`crps_ensemble` of the predicted volumes against each rater's volume.

    Args:
        sample_volumes: ``(M,)`` volumes of the method's samples, mL (one for a deterministic method).
        rater_volumes: ``(R,)`` volumes the raters drew, mL.

    Returns:
        CRPS in mL (lower is better).
    """
    return float(np.mean([crps_ensemble(v, sample_volumes) for v in np.asarray(rater_volumes, np.float64)]))


def gaussian_crps(observation: np.ndarray | float, mean: np.ndarray | float, sd: np.ndarray | float) -> np.ndarray:
    """CRPS of ``N(mean, sd^2)`` at ``observation``, closed form: ``sd [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]``
    with ``z = (observation - mean) / sd``; ``|observation - mean|`` where ``sd`` is 0. Broadcasts; in
    the units of the variable."""
    from scipy.stats import norm

    x, mu, sigma = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (observation, mean, sd)))
    z = np.divide(x - mu, sigma, out=np.zeros(x.shape), where=sigma > 0)
    closed = sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))
    return np.where(sigma > 0, closed, np.abs(x - mu))


CURVAS_SPAN_SD = 3.0


def curvas_volume_crps(predicted_ml: float, rater_volumes_ml: np.ndarray) -> float:
    """CURVAS's volume CRPS: a Gaussian fitted to the raters' volumes (mean, population sd) against the
    prediction's one volume (its soft volume ``sum p * voxel volume`` in CURVAS), the squared
    difference of their distribution functions integrated over ``mean +- 3 sd`` only.

    Kept for comparison with the challenge's published figures; it is not a proper score: the
    window makes it saturate (a volume 100 sd off costs what one 3 sd off does, about
    :func:`gaussian_crps` at 3 sd), and it is 0 whatever the prediction when every rater drew the
    same volume. :func:`volume_crps` is the project's volume score.

    Args:
        predicted_ml: the predicted volume, mL.
        rater_volumes_ml: ``(R,)`` the raters' volumes, mL.

    Returns:
        mL (lower is better).
    """
    from scipy import integrate
    from scipy.stats import norm

    volumes = np.asarray(rater_volumes_ml, np.float64)
    mu, sd = float(volumes.mean()), float(volumes.std())
    if sd == 0:
        return 0.0
    # in units of sd: the step of the prediction at z_hat splits the window into two smooth pieces
    z_hat = (predicted_ml - mu) / sd
    low, high = -CURVAS_SPAN_SD, CURVAS_SPAN_SD
    cut = min(max(z_hat, low), high)
    below = integrate.quad(lambda z: norm.cdf(z) ** 2, low, cut)[0]
    above = integrate.quad(lambda z: norm.sf(z) ** 2, cut, high)[0]
    return float(sd * (below + above))
