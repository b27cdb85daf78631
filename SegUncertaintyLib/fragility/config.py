"""Every knob of the fragility search in one place: the fast search's (:class:`FragilityConfig`, the default) and
the faithful QUAM-SM search's (:class:`QuamConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SegUncertaintyError

TRAINABLE = ("auto", "last-block", "last-conv", "head", "logits")
MODES = ("fast", "quam")


@dataclass(frozen=True)
class FragilityConfig:
    """Settings of the fast search (:class:`.search.FragilitySearch`).

    The defaults were chosen on the head-calibration split (``benchmarks/fragility_sweep.py``,
    BENCHMARKS.md "Choice of the defaults"); they make the search two-sided (every shrink adversary
    has admissible snapshots) and keep it within twice one plain inference on the demo: 2
    adversaries per class (as QUAM-SM) x 4 steps (QUAM-SM: 6).

    Attributes:
        radii_mm: how far, in mm, each adversary is pushed to grow or shrink a class's contour; one
            grow and one shrink adversary per radius and foreground class (the ball is anisotropic
            on anisotropic model grids). Several radii follow almost the same path (BENCHMARKS.md),
            so the default is one.
        steps: optimisation steps per adversary (K); every step's model is a snapshot.
        trainable: the part the adversaries change: ``"last-block"`` (the last decoder stage and the
            1x1x1 output layer), ``"last-conv"`` (its last 3x3x3 convolution and norm, and the output
            layer), ``"head"`` (the output layer only: spatially uniform, so fragility reduces to a
            logit margin), ``"logits"`` (an affine map of the output logits, for networks whose
            layers cannot be reached, such as TorchScript; also spatially uniform) or ``"auto"``
            (``last-conv`` where the architecture is known, else ``logits``).
        learning_rate: Adam step size; None picks 2e-3, or 1e-2 for the spatially uniform parts.
        anchor_weight: lambda, weight of keeping the ROI voxels outside the band at the reference label.
        penalty_start: c0 of the data-fit penalty schedule ``c_k = c0 * growth^floor(k / every)`` on
            the replay loss's excess over the reference's.
        penalty_growth: growth factor of that schedule.
        penalty_every: steps between growths.
        slack: gamma, in nats of mean cross-entropy: a snapshot is admissible when
            ``L_R <= L_R,ref + slack``. Absolute, as QUAM-SM's (0.05 nats there): a replay set labelled
            by the model itself has a reference loss ten times smaller than a labelled one (0.011
            against 0.125 nats for the bundled model), and a slack relative to it would hold its
            adversaries ten times tighter. 0.125 nats is the labelled reference loss itself, where the
            calibration sweep's quality stopped rising (BENCHMARKS.md).
        temperature: T of the snapshot weights ``exp(-max(L_R - L_R,ref, 0) / T)``, in nats; None uses
            the slack.
        roi_margin_voxels: padding of the band's bounding box (model-grid voxels).
        replay_crop: edge, in model-grid voxels, of the central cube of each replay patch the data-fit
            loss is computed on (the whole patch gives the trunk its context).
    """

    radii_mm: tuple[float, ...] = (2.0,)
    steps: int = 4
    trainable: str = "auto"
    learning_rate: float | None = None
    anchor_weight: float = 1.0
    penalty_start: float = 1.0
    penalty_growth: float = 2.0
    penalty_every: int = 4
    slack: float = 0.125
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

    def step_size(self, uniform: bool) -> float:
        """Adam's step: the configured one, else 2e-3, or 1e-2 for a spatially uniform tail (``head``, ``logits``)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-2 if uniform else 2e-3

    def penalty_weight(self, step: int) -> float:
        """c_k for step ``k`` (0-based)."""
        return self.penalty_start * self.penalty_growth ** (step // self.penalty_every)

    def to_dict(self) -> dict:
        return {"mode": "fast", **self.__dict__, "radii_mm": list(self.radii_mm)}


# c_k at the published pipeline's six steps: c = 1 + 2 floor(b / 3) after training batch b, with a
# step every 50 batches of a 100-batch epoch (so the k-th step, k >= 1, uses b = 50 k - 1).
PENALTY = (1.0, 33.0, 67.0, 99.0, 133.0, 167.0)


@dataclass(frozen=True)
class QuamConfig:
    """Settings of the faithful search (:class:`.quam.QuamSearch`); the defaults are the published ones.

    Attributes:
        steps: optimisation steps per adversary (published: 3 epochs x 2 = 6).
        learning_rate: Adam's step size for the whole network.
        slack: gamma, absolute, in nats of mean cross-entropy.
        iterations: dilations / erosions by a 3-voxel cube that make a target.
        batch_size: replay patches per step (published: the training loader's batch of 4).
        temperature: T of the snapshot weights ``softmax(-L / T)``.
    """

    steps: int = 6
    learning_rate: float = 5e-4
    slack: float = 0.05
    iterations: int = 3
    batch_size: int = 4
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.iterations < 1 or self.batch_size < 1:
            raise SegUncertaintyError("the QUAM-SM search needs steps, iterations and batch_size of at least 1")
        if self.learning_rate <= 0 or self.slack <= 0 or self.temperature <= 0:
            raise SegUncertaintyError("the QUAM-SM search's learning rate, slack and temperature must be positive")

    def penalty_weight(self, step: int) -> float:
        """c_k for step ``k`` (0-based): the published values, continued by their formula past six steps."""
        return PENALTY[step] if step < len(PENALTY) else 1.0 + 2.0 * ((50 * step - 1) // 3)

    def to_dict(self) -> dict:
        return {"mode": "quam", **self.__dict__}


SearchConfig = FragilityConfig | QuamConfig
