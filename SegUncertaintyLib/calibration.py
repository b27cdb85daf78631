"""Post-hoc calibration maps, fitted on held-out voxels by maximum likelihood.

* :func:`fit_logistic`: a monotone map from an uncertainty score to a probability of error (Platt).
* :class:`LogitScaling`: the backbone's class probabilities recalibrated as
  ``softmax(scale_c * log p_c + bias_c)``: temperature scaling (Guo et al. 2017, one scale ``1/T``
  shared by the classes, no bias) and vector scaling (a scale and a bias per class; for two classes
  this is Platt scaling of the logit difference). ``log p`` are the logits up to a per-voxel constant,
  which the softmax ignores, so the maps need only the probabilities a prediction keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOG_FLOOR = 1e-30  # log p of a probability that float32 rounded to 0 (a logit gap beyond ~69 nats)


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


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``log p`` in float64 with ``p`` floored at :data:`LOG_FLOOR`, same shape."""
    return np.log(np.maximum(np.asarray(probabilities, np.float64), LOG_FLOOR))


@dataclass(frozen=True)
class LogitScaling:
    """``softmax(scale_c * log p_c + bias_c)`` over the classes ``c`` (see the module docstring).

    Attributes:
        scale: ``(C,)`` per-class scales (all ``1 / T`` for temperature scaling).
        bias: ``(C,)`` per-class biases (0 for temperature scaling; the first is always 0, since a bias
            shared by every class changes nothing).
    """

    scale: tuple[float, ...]
    bias: tuple[float, ...]

    @property
    def temperature(self) -> float | None:
        """T when this is a temperature scaling (one shared scale, no bias), else None."""
        if len(set(self.scale)) == 1 and not any(self.bias):
            return 1.0 / self.scale[0]
        return None

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """``(C, ...)`` probabilities -> ``(C, ...)`` float32 recalibrated probabilities."""
        shape = (-1,) + (1,) * (np.ndim(probabilities) - 1)
        scale, bias = np.reshape(self.scale, shape), np.reshape(self.bias, shape)
        if scale.shape[0] != len(probabilities):
            raise ValueError(f"{len(self.scale)} classes in the scaling, {len(probabilities)} in the probabilities")
        logits = scale * log_probabilities(probabilities) + bias
        logits -= logits.max(axis=0, keepdims=True)
        weights = np.exp(logits)
        return (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)

    @classmethod
    def fit(cls, probabilities: np.ndarray, labels: np.ndarray, per_class: bool) -> LogitScaling:
        """Maximum likelihood on held-out voxels: temperature scaling, or vector scaling with ``per_class``.

        Args:
            probabilities: ``(C, N)`` the backbone's probabilities of N voxels.
            labels: ``(N,)`` their reference labels in ``0..C-1``.
            per_class: fit a scale and a bias per class (vector scaling) instead of one temperature.
        """
        from scipy.optimize import minimize

        z = log_probabilities(probabilities)
        y = np.asarray(labels, np.int64).ravel()
        classes, n = z.shape
        if y.shape != (n,) or n == 0 or y.min() < 0 or y.max() >= classes:
            raise ValueError(f"need one label in 0..{classes - 1} for each of the {n} voxels")
        onehot = np.zeros_like(z)
        onehot[y, np.arange(n)] = 1.0

        def unpack(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if not per_class:
                return np.full(classes, w[0]), np.zeros(classes)
            return w[:classes], np.r_[0.0, w[classes:]]

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            a, b = unpack(w)
            u = a[:, None] * z + b[:, None]
            u -= u.max(axis=0, keepdims=True)
            log_norm = np.log(np.exp(u).sum(axis=0))
            value = float((log_norm - (u * onehot).sum(axis=0)).mean())
            du = (np.exp(u - log_norm) - onehot) / n  # d loss / d u
            da, db = (du * z).sum(axis=1), du.sum(axis=1)
            return value, (np.array([da.sum()]) if not per_class else np.r_[da, db[1:]])

        scales, biases = (classes, classes - 1) if per_class else (1, 0)
        start = np.r_[np.ones(scales), np.zeros(biases)]
        bounds = [(1e-3, 1e3)] * scales + [(None, None)] * biases
        result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
        a, b = unpack(result.x)
        return cls(tuple(float(v) for v in a), tuple(float(v) for v in b))

    def to_dict(self) -> dict[str, list[float]]:
        return {"scale": list(self.scale), "bias": list(self.bias)}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> LogitScaling:
        return cls(tuple(map(float, data["scale"])), tuple(map(float, data["bias"])))
