"""Every knob of the fragility search in one place, with the defaults of the fast 3D variant."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SegUncertaintyError

TRAINABLE = ("last-block", "last-conv", "head")


@dataclass(frozen=True)
class FragilityConfig:
    """Settings of :func:`.search.fragility_search`.

    Attributes:
        radii_mm: how far, in mm, each adversary is pushed to grow or shrink a class's contour; one
            grow and one shrink adversary per radius and foreground class (the ball is anisotropic
            on anisotropic model grids).
        steps: optimisation steps per adversary (K); every step's model is a snapshot.
        trainable: the part the adversaries change: ``"last-block"`` (the last decoder stage and the
            1x1x1 output layer), ``"last-conv"`` (its last 3x3x3 convolution and norm, and the output
            layer) or ``"head"`` (the output layer only: spatially uniform, so fragility reduces to a
            logit margin).
        learning_rate: Adam step size; None picks 3e-4 with a 3x3x3 convolution, 1e-2 for the head
            (the largest of a sweep on the calibration split that kept the epistemic map at least as good
            an error detector as the entropy; see BENCHMARKS.md).
        anchor_weight: lambda, weight of keeping the ROI voxels outside the band at the reference label.
        penalty_start: c0 of the data-fit penalty schedule ``c_k = c0 * growth^floor(k / every)``.
        penalty_growth: growth factor of that schedule.
        penalty_every: steps between growths.
        slack: gamma relative to the reference replay loss: a snapshot is admissible when
            ``L_R <= L_R,ref * (1 + slack)``.
        temperature: of the snapshot weights ``exp(-(L_R - L_R,ref) / T)``, relative to ``L_R,ref``;
            None uses the slack (T = gamma).
        roi_margin_voxels: padding of the band's bounding box (model-grid voxels).
        replay_crop: edge, in model-grid voxels, of the central cube of each replay patch the data-fit
            loss is computed on (the whole patch gives the trunk its context).
    """

    radii_mm: tuple[float, ...] = (1.0, 2.0, 3.0)
    steps: int = 12
    trainable: str = "last-conv"
    learning_rate: float | None = None
    anchor_weight: float = 1.0
    penalty_start: float = 1.0
    penalty_growth: float = 2.0
    penalty_every: int = 4
    slack: float = 0.02
    temperature: float | None = None
    roi_margin_voxels: int = 3
    replay_crop: int = 16

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise SegUncertaintyError(f"unknown trainable part {self.trainable!r}; use one of {', '.join(TRAINABLE)}")
        if not self.radii_mm or min(self.radii_mm) <= 0:
            raise SegUncertaintyError(f"fragility radii must be positive mm values, got {self.radii_mm}")
        if self.steps < 1:
            raise SegUncertaintyError(f"the fragility search needs at least 1 step, got {self.steps}")
        if self.slack <= 0 or (self.temperature is not None and self.temperature <= 0):
            raise SegUncertaintyError("fragility slack and temperature must be positive")
        if self.replay_crop < 2 or self.roi_margin_voxels < 0 or self.penalty_every < 1:
            raise SegUncertaintyError("replay_crop must be >= 2, roi_margin_voxels >= 0 and penalty_every >= 1")

    @property
    def step_size(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-2 if self.trainable == "head" else 3e-4

    def penalty_weight(self, step: int) -> float:
        """c_k for step ``k`` (0-based)."""
        return self.penalty_start * self.penalty_growth ** (step // self.penalty_every)

    def to_dict(self) -> dict:
        return {**self.__dict__, "radii_mm": list(self.radii_mm), "learning_rate": self.step_size}
