"""The model card (``model.json``) as typed sections, and the package that holds it.

Each section's defaults are written here once; readers take them from these classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ModelError

CARD_FORMAT = "seguncertainty-model/1"


@dataclass
class InferenceSettings:
    """The card's ``inference`` section: how the network is run over a volume.

    Attributes:
        mode: ``"window"`` (Gaussian-blended sliding windows of the card's ``patch_size``) or
            ``"whole"`` (the whole volume resized to ``shape``, one pass).
        overlap: fraction of a window shared with its neighbour along each axis, in ``[0, 1)``.
        sw_batch_size: windows per forward pass.
        frame: sliding-window models' network frame: ``"LPS"`` (the patient's axes) or ``"voxel"``
            (the stored array's axes, as nnU-Net); see :mod:`..network_grid`.
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
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ModelError(f"unknown inference setting(s) {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The section as ``model.json`` holds it (unset optional settings left out)."""
        data = asdict(self)
        if self.shape is not None:
            data["shape"] = list(self.shape)
        return {key: value for key, value in data.items() if value is not None}


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
    head: dict[str, Any] = field(default_factory=dict)  # the uncertainty head, when the package has one
    extra: dict[str, Any] = field(default_factory=dict)  # sections added by later stages (head, ...)

    def __post_init__(self) -> None:
        if isinstance(self.inference, dict):  # as written in model.json, or by a card's maker
            self.inference = InferenceSettings.from_dict(self.inference)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data["inference"] = self.inference.to_dict()
        data["target_spacing_mm"] = list(self.target_spacing_mm)
        data["patch_size"] = list(self.patch_size)
        return {"format": CARD_FORMAT, **data, **extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> ModelCard:
        data = dict(data)
        fmt = data.pop("format", None)
        if fmt != CARD_FORMAT:
            raise ModelError(f"{source}: unsupported format {fmt!r} (expected {CARD_FORMAT!r})")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        optional = {"description", "licence", "inference", "taps", "files", "training", "head"}
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
