"""Fitting a monotone map from an uncertainty score to a probability of error."""

from __future__ import annotations

import numpy as np


def _negative_log_likelihood(w: np.ndarray, design: np.ndarray, y: np.ndarray, ridge: float) -> float:
    z = design @ w
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * ridge * w[0] ** 2)


def fit_logistic(
    scores: np.ndarray, errors: np.ndarray, iterations: int = 100, ridge: float = 1e-3
) -> tuple[float, float]:
    """Logistic regression ``P(error | u) = sigmoid(a u + b)`` (Platt scaling).

    Newton's method with a backtracking line search on the standardised score and a small ridge on
    the slope, so that nearly separable data (a very good ranking) still gives finite numbers.

    Args:
        scores: uncertainty per voxel, any shape.
        errors: bool per voxel, same shape.
        iterations: Newton steps at most.
        ridge: L2 penalty on the standardised slope.

    Returns:
        ``(a, b)``; ``a > 0`` when higher scores mean more errors, so the map keeps the ranking.
    """
    u = np.asarray(scores, np.float64).ravel()
    y = np.asarray(errors, np.float64).ravel()
    mean, std = u.mean(), u.std() or 1.0
    design = np.stack([(u - mean) / std, np.ones_like(u)], axis=1)
    rate = np.clip(y.mean(), 1e-9, 1 - 1e-9)
    w = np.array([0.0, np.log(rate / (1 - rate))])
    loss = _negative_log_likelihood(w, design, y, ridge)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ w)))
        gradient = design.T @ (p - y) + np.array([ridge * w[0], 0.0])
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag([ridge, 1e-12])
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6:
            candidate = w - scale * step
            candidate_loss = _negative_log_likelihood(candidate, design, y, ridge)
            if candidate_loss <= loss:
                break
            scale /= 2.0
        else:
            break
        converged = loss - candidate_loss < 1e-10 * max(1.0, abs(loss))
        w, loss = candidate, candidate_loss
        if converged:
            break
    return float(w[0] / std), float(w[1] - w[0] * mean / std)
