"""The model card (``model.json``) as typed sections, and the package that holds it.

Each section's defaults are written here once; readers take them from these classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ModelError

CARD_FORMAT = "seguncertainty-model/1"
CARD_NAME = "model.json"  # the card's file in a package folder
HEAD_FILE = "head.safetensors"  # the SegWithU head (see segwithu.package)
QUALITY_NET_FILE = "quality_net.safetensors"  # the quality network (see quality.package)


def _refuse_unknown(cls: type, data: dict[str, Any], section: str) -> None:
    """A card section's keys must be the section's settings (a misspelt one is never silently ignored)."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ModelError(f"unknown {section} setting(s) {', '.join(unknown)}")


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}


@dataclass
class InferenceSettings:
    """The card's ``inference`` section: how the network is run over a volume.

    Attributes:
        mode: ``"window"`` (Gaussian-blended sliding windows of the card's ``patch_size``) or
            ``"whole"`` (the whole volume resized to ``shape``, one pass).
        overlap: fraction of a window shared with its neighbour along each axis, in ``[0, 1)``.
        sw_batch_size: windows per forward pass.
        frame: sliding-window models' network frame: ``"LPS"`` (the patient's axes), ``"voxel"``
            (the stored array's axes, as nnU-Net) or ``"RAS"`` (the stored axes made nibabel's
            closest canonical, as TotalSegmentator runs nnU-Net); see :mod:`..network_grid`.
        shape: whole-volume models' network input ``(D, H, W)``, in ``orientation``'s axes.
        orientation: whole-volume models' axis order (``"RAS"``, ...); None keeps the stored order.
        crop: two-stage models' locating network (``architecture``, ``shape``, ``threshold``,
            ``margin``; see :mod:`..roi`); None runs the network on the whole input.
    """

    mode: str = "window"
    overlap: float = 0.5
    sw_batch_size: int = 2
    frame: str = "LPS"
    shape: tuple[int, int, int] | None = None
    orientation: str | None = None
    crop: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.overlap, self.sw_batch_size = float(self.overlap), int(self.sw_batch_size)
        if self.mode not in ("window", "whole"):
            raise ModelError(f"unknown inference.mode {self.mode!r} (known: window, whole)")
        if not 0.0 <= self.overlap < 1.0 or self.sw_batch_size < 1:
            raise ModelError("inference.overlap must lie in [0, 1) and inference.sw_batch_size be at least 1")
        if self.shape is not None:
            self.shape = tuple(int(n) for n in self.shape)
        if self.mode == "whole" and (self.shape is None or len(self.shape) != 3):
            raise ModelError("a whole-volume model needs inference.shape: three sizes")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceSettings:
        _refuse_unknown(cls, data, "inference")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The section as ``model.json`` holds it (unset optional settings left out)."""
        data = asdict(self)
        if self.shape is not None:
            data["shape"] = list(self.shape)
        return _without_none(data)


@dataclass
class HeadSection:
    """The card's ``head`` section: the uncertainty head trained on the frozen backbone (``train-head``).

    Attributes:
        config: the head's construction arguments (:class:`..segwithu.network.HeadConfig`).
        method: the head's method (``"segwithu"``).
        file: its weights in the package.
        error_probability: ``slope`` and ``intercept`` of the logistic map from the ranking score to
            an estimated probability of error, fitted on the validation cases (None: no such map).
        training: how it was trained (command, data, time, machine, losses).
        validation: its figures on the validation cases.
        held_out: its figures on a held-out split, when the data set has one.
    """

    config: dict[str, Any]
    method: str = "segwithu"
    file: str = HEAD_FILE
    error_probability: dict[str, float] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    held_out: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.method != "segwithu":
            raise ModelError(f"unknown head.method {self.method!r} (known: segwithu)")
        if not isinstance(self.config, dict):
            raise ModelError("head.config must be the head's settings (an object)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadSection | None:
        """The section as ``model.json`` holds it; an empty one (a package without a head) gives None."""
        if not data:
            return None
        _refuse_unknown(cls, data, "head")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return _without_none(asdict(self))


@dataclass
class QualitySection:
    """The card's ``quality`` section: the case-level quality predictors (``train-quality``).

    Attributes:
        linear: the linear predictor's fitted state (:class:`..quality.predictor.LinearQuality`).
        volume_scale: the scale of the volume forecast's spread, fitted for CRPS.
        net: the image network: ``{"file": its weights in the package}``.
        bad_dice: the Dice below which a case counts as bad.
        review_below: the estimated Dice below which a case is flagged for review (default ``bad_dice``).
        training: how they were trained; test: their figures on the test split.
    """

    linear: dict[str, Any]
    volume_scale: float
    net: dict[str, str] = field(default_factory=lambda: {"file": QUALITY_NET_FILE})
    bad_dice: float = 0.7
    review_below: float | None = None
    training: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.volume_scale, self.bad_dice = float(self.volume_scale), float(self.bad_dice)
        self.review_below = self.bad_dice if self.review_below is None else float(self.review_below)
        if not (isinstance(self.net, dict) and isinstance(self.net.get("file", QUALITY_NET_FILE), str)):
            raise ModelError('quality.net must name the network\'s file: {"file": ...}')

    @property
    def net_file(self) -> str:
        """The quality network's weights in the package."""
        return str(self.net.get("file", QUALITY_NET_FILE))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualitySection:
        _refuse_unknown(cls, data, "quality")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GuaranteeSection:
    """The card's ``guarantees`` section: what the calibration cases guarantee (see :mod:`..guarantees`).

    Attributes:
        review: the :class:`..conformal.RiskCurve` of the share of a case's wrong voxels left
            outside the review regions, against the region threshold on ``risk_map``.
        structure: the :class:`..conformal.RiskCurve` of the share of the structure outside the
            outline ``p >= threshold`` of the (calibrated) foreground probability.
        risk_map: the map the review curve was fitted on (a prediction drawing its regions from
            another map has no guarantee).
        volume_scale_90: the conformal scale of the 90 % volume interval ``mean +- q * width``
            (None when the calibration set is too small for it).
        triage: the :class:`..conformal.SelectionBound` on the estimated Dice, or None.
        training: how they were fitted; test: what they gave on the test split.
    """

    review: dict[str, Any]
    structure: dict[str, Any]
    risk_map: str
    volume_scale_90: float | None = None
    triage: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ..conformal import RiskCurve, SelectionBound  # the card stays torch- and scipy-free to import
        from ..errors import SegUncertaintyError

        try:
            RiskCurve.from_dict(self.review), RiskCurve.from_dict(self.structure)
            if self.triage is not None:
                SelectionBound.from_dict(self.triage)
        except (KeyError, TypeError, ValueError, SegUncertaintyError) as exc:
            raise ModelError(f"malformed guarantees section ({exc})") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuaranteeSection:
        _refuse_unknown(cls, data, "guarantees")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RecalibrationSection:
    """The card's ``recalibration`` section: the calibration baselines, fitted on held-out voxels
    (see :mod:`..recalibration`).

    Attributes:
        temperature: temperature scaling as a :class:`..calibration.LogitScaling` dict (``scale``, ``bias``).
        vector: vector scaling, likewise.
        training: how they were fitted (data, voxels, command).
    """

    temperature: dict[str, Any]
    vector: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import math

        from ..calibration import LogitScaling  # numpy only: the card stays torch-free to import

        try:
            scalings = [LogitScaling.from_dict(self.temperature), LogitScaling.from_dict(self.vector)]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed recalibration section ({exc})") from None
        for scaling in scalings:
            values = scaling.scale + scaling.bias
            if len(scaling.scale) != len(scaling.bias) or not all(map(math.isfinite, values)):
                raise ModelError("recalibration: each scaling needs one finite scale and bias per class")
        if scalings[0].temperature is None or scalings[0].temperature <= 0:
            raise ModelError("recalibration: temperature scaling has one positive scale and no bias")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecalibrationSection:
        _refuse_unknown(cls, data, "recalibration")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DisplaySettings:
    """The card's ``display`` section: how the report shows the image.

    Attributes:
        window: ``(centre, width)`` of the intensity window, in the image's units (HU for CT).
        window_name: what the window is for, in words.
    """

    window: tuple[float, float] | None = None
    window_name: str = ""

    def __post_init__(self) -> None:
        if self.window is not None:
            if len(self.window) != 2 or float(self.window[1]) <= 0:
                raise ModelError("display.window must be a centre and a positive width")
            self.window = (float(self.window[0]), float(self.window[1]))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DisplaySettings:
        _refuse_unknown(cls, data, "display")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.window is not None:
            data["window"] = list(self.window)
        return _without_none(data)


@dataclass
class Normalization:
    """Intensity normalisation applied before the network.

    ``scheme="ct"``: clip to ``clip`` (HU), then ``(x - mean) / std`` with fixed statistics.
    ``scheme="zscore"``: per volume ``(x - mean) / std`` over voxels above the volume minimum
    (``"zscore-all"``: over every voxel).
    ``scheme="quantile"`` (MRI networks such as deepbet): per volume, clip to the ``quantiles``
    (e.g. 0.5 % and 99.5 %) and scale to [0, 1], standardise, then ``* std + mean``.
    """

    scheme: str = "ct"
    clip: tuple[float, float] | None = (-1000.0, 500.0)
    mean: float | None = None
    std: float | None = None
    quantiles: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.scheme not in ("ct", "zscore", "zscore-all", "quantile"):
            raise ModelError(f"unknown normalisation scheme {self.scheme!r} (known: ct, zscore, zscore-all, quantile)")
        if self.scheme == "quantile" and (self.quantiles is None or self.mean is None or not self.std):
            raise ModelError("quantile normalisation needs quantiles, a mean and a positive std in the model card")
        if self.quantiles is not None:
            self.quantiles = (float(self.quantiles[0]), float(self.quantiles[1]))
        if self.scheme == "ct" and (self.mean is None or not self.std):
            raise ModelError("ct normalisation needs a mean and a positive std in the model card")
        if self.clip is not None:
            self.clip = (float(self.clip[0]), float(self.clip[1]))

    @property
    def voxelwise(self) -> bool:
        """Each voxel's value depends on that voxel alone (``ct``), so a crop of the normalised image is the
        normalised crop; the other schemes take statistics over the whole image."""
        return self.scheme == "ct"


@dataclass
class ModelCard:
    """The contents of ``model.json``."""

    name: str
    architecture: dict[str, Any]
    classes: list[str]
    in_channels: int
    modality: str
    target_spacing_mm: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    normalization: Normalization
    description: str = ""
    licence: str = ""
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    taps: list[dict[str, Any]] = field(default_factory=list)  # [{"name": submodule, "channels": n}] the head reads
    files: dict[str, str] = field(default_factory=dict)  # weights file name -> SHA-256
    training: dict[str, Any] = field(default_factory=dict)
    head: HeadSection | None = None  # the uncertainty head, when the package has one
    quality: QualitySection | None = None  # the quality predictors, when the package has them
    guarantees: GuaranteeSection | None = None  # what the calibration cases guarantee, when fitted
    recalibration: RecalibrationSection | None = None  # temperature and vector scaling, when fitted
    display: DisplaySettings | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # sections this class does not type (fragility, ...)

    def __post_init__(self) -> None:
        # sections as written in model.json, or by a card's maker
        if isinstance(self.inference, dict):
            self.inference = InferenceSettings.from_dict(self.inference)
        if isinstance(self.head, dict):
            self.head = HeadSection.from_dict(self.head)
        if isinstance(self.quality, dict):
            self.quality = QualitySection.from_dict(self.quality)
        if isinstance(self.display, dict):
            self.display = DisplaySettings.from_dict(self.display)
        if isinstance(self.guarantees, dict):
            self.guarantees = GuaranteeSection.from_dict(self.guarantees)
        if isinstance(self.recalibration, dict):
            self.recalibration = RecalibrationSection.from_dict(self.recalibration)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data["inference"] = self.inference.to_dict()
        data["target_spacing_mm"] = list(self.target_spacing_mm)
        data["patch_size"] = list(self.patch_size)
        data["head"] = self.head.to_dict() if self.head is not None else {}
        for name in ("quality", "guarantees", "recalibration", "display"):
            section = getattr(self, name)
            if section is None:
                del data[name]
            else:
                data[name] = section.to_dict()
        return {"format": CARD_FORMAT, **data, **extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> ModelCard:
        data = dict(data)
        fmt = data.pop("format", None)
        if fmt != CARD_FORMAT:
            raise ModelError(f"{source}: unsupported format {fmt!r} (expected {CARD_FORMAT!r})")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        optional = {
            "description",
            "licence",
            "inference",
            "taps",
            "files",
            "training",
            "head",
            "quality",
            "guarantees",
            "recalibration",
            "display",
        }
        missing = sorted(known - set(data) - optional)
        if missing:
            raise ModelError(f"{source}: missing field(s) {', '.join(missing)}")
        extra = {k: data.pop(k) for k in list(data) if k not in known}
        try:
            card = cls(
                **{**data, "normalization": Normalization(**data["normalization"])},
                extra=extra,
            )
            card.target_spacing_mm = tuple(float(s) for s in card.target_spacing_mm)
            card.patch_size = tuple(int(s) for s in card.patch_size)
        except (TypeError, ValueError, ModelError) as exc:
            raise ModelError(f"{source}: malformed model card ({exc})") from None
        if len(card.target_spacing_mm) != 3 or len(card.patch_size) != 3 or min(card.target_spacing_mm) <= 0:
            raise ModelError(f"{source}: target_spacing_mm and patch_size need three positive values")
        if card.num_classes < 2 or card.in_channels < 1:
            raise ModelError(f"{source}: a model needs at least 2 classes and 1 input channel")
        return card


@dataclass
class ModelPackage:
    """A model package on disk: its folder and its card."""

    path: Path
    card: ModelCard

    def file(self, name: str) -> Path:
        return self.path / name
