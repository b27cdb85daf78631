"""Two predictors of a case's Dice without ground truth, stored in the model package without pickling.

* :class:`LinearQuality`: ridge regression on standardised case features
  (:func:`..quality.features.case_features`), fitted with scikit-learn's ``RidgeCV`` (leave-one-out
  choice of the penalty) and stored as plain numbers in the card; predicting needs only numpy.
* :class:`QualityNet`: a small 3D CNN on the image, the foreground probability and the estimated
  probability of error, cropped around the prediction and resized to ``NET_SHAPE``, as in the seed
  paper's framework 2 (image + uncertainty map + segmentation, one encoder over stacked channels);
  weights in ``quality_net.safetensors``.

Both output a Dice in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..errors import ModelError

# Features the linear predictor reads: all from one backbone pass with the head.
LINEAR_FEATURES = (
    "log_volume",
    "expected_dice",
    "interval_relative_width",
    "max_softmax:band_mean",
    "entropy:band_mean",
    "error_probability:band_mean",
    "error_probability:fg_mean",
    "ranking:band_mean",
    "calibration:band_mean",
    "epistemic:band_mean",
    "expected_wrong_ml",
)
NET_SHAPE = (32, 32, 32)
NET_MARGIN_VOXELS = 8


@dataclass
class LinearQuality:
    """``dice = clip(intercept + sum coef * (x - mean) / scale, 0, 1)`` over ``features``."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    alpha: float

    def predict(self, rows: Sequence[dict[str, float]]) -> np.ndarray:
        """Predicted Dice ``(N,)`` of feature rows (raises :class:`ModelError` naming a missing feature)."""
        x = feature_matrix(rows, self.features)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return np.clip(self.intercept + z @ np.asarray(self.coef), 0.0, 1.0)

    def to_dict(self) -> dict:
        return asdict(self)


def feature_matrix(rows: Sequence[dict[str, float]], names: Sequence[str]) -> np.ndarray:
    """``(N, F)`` float64 matrix of the named features of every row."""
    missing = sorted({name for row in rows for name in names if name not in row})
    if missing:
        raise ModelError(f"the quality predictor needs feature(s) {', '.join(missing)}: predict with the head")
    return np.array([[row[name] for name in names] for row in rows], dtype=np.float64)


def fit_linear(
    rows: Sequence[dict[str, float]], dice: np.ndarray, features: Sequence[str] = LINEAR_FEATURES
) -> LinearQuality:
    """Ridge regression of Dice on standardised features (penalty chosen by leave-one-out over a log grid)."""
    from sklearn.linear_model import RidgeCV

    x = feature_matrix(rows, features)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = RidgeCV(alphas=np.geomspace(1e-2, 1e3, 26)).fit((x - mean) / scale, dice)
    return LinearQuality(
        list(features),
        mean.tolist(),
        scale.tolist(),
        model.coef_.tolist(),
        float(model.intercept_),
        float(model.alpha_),
    )


def net_input(image: np.ndarray, background: np.ndarray, risk: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """``(3, *NET_SHAPE)`` float32 input of :class:`QualityNet` for one case: the image, the probability of
    any foreground class and the risk, in the segmentation's box.

    Args:
        image: ``(k, j, i)`` normalised image (the model card's normalisation).
        background: ``(k, j, i)`` probability of the background (one minus that of any foreground class).
        risk: ``(k, j, i)`` estimated probability of error.
        labels: ``(k, j, i)`` segmentation: the crop is its box (or, when empty, the box of
            a foreground probability of at least 0.1, or the whole volume) plus ``NET_MARGIN_VOXELS``.
    """
    mask = labels > 0
    if not mask.any():
        mask = (1.0 - background) >= 0.1
    if mask.any():
        box = ndimage.find_objects(mask.astype(np.int8))[0]
        box = tuple(
            slice(max(0, s.start - NET_MARGIN_VOXELS), min(n, s.stop + NET_MARGIN_VOXELS))
            for s, n in zip(box, mask.shape, strict=True)
        )
    else:
        box = tuple(slice(0, n) for n in mask.shape)
    stacked = torch.from_numpy(np.stack([image[box], 1.0 - background[box], risk[box]]).astype(np.float32))
    return F.interpolate(stacked[None], size=NET_SHAPE, mode="trilinear", align_corners=False)[0]


class QualityNet(nn.Module):
    """``(B, 3, 32, 32, 32)`` -> ``(B,)`` predicted Dice: three conv stages, global mean and max pooling, an MLP."""

    def __init__(self, width: int = 16):
        super().__init__()

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.InstanceNorm3d(c_out, affine=True), nn.GELU())

        self.stages = nn.ModuleList([stage(3, width), stage(width, 2 * width), stage(2 * width, 2 * width)])
        self.mlp = nn.Sequential(nn.Linear(4 * width, 32), nn.GELU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n, block in enumerate(self.stages):
            x = block(x if n == 0 else F.max_pool3d(x, 2))
        pooled = torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1)
        return torch.sigmoid(self.mlp(pooled))[:, 0]


def fit_net(
    inputs: torch.Tensor,
    dice: np.ndarray,
    epochs: int = 150,
    seed: int = 0,
    learning_rate: float = 2e-3,
    progress: Callable[[float], None] | None = None,
) -> QualityNet:
    """Train a :class:`QualityNet` (MSE, AdamW, random flips) on ``(N, 3, *NET_SHAPE)`` inputs and their Dice.

    ``progress`` receives the fraction done after every epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = QualityNet()
    target = torch.as_tensor(np.asarray(dice), dtype=torch.float32)
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), 16):
            index = order[start : start + 16]
            x = inputs[index]
            for axis in (2, 3, 4):  # nodules have no preferred side
                if torch.rand((), generator=generator) < 0.5:
                    x = x.flip(axis)
            loss = F.mse_loss(net(x), target[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        schedule.step()
        if progress is not None:
            progress((epoch + 1) / epochs)
    return net.eval()


def predict_net(net: QualityNet, inputs: torch.Tensor) -> np.ndarray:
    """Predicted Dice ``(N,)`` for ``(N, 3, *NET_SHAPE)`` inputs."""
    with torch.inference_mode():
        return net(inputs).numpy().astype(np.float64)
