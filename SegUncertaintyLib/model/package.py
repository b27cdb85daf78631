"""Model packages: a folder with a model card (``model.json``) and safetensors weights.

The card says everything inference needs (architecture, classes, input channels, spacing,
intensity normalisation, patch size) and how the model was made (command, time, held-out
metrics, licence). Weights are only ever read with safetensors: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..fsutil import atomic_write
from ..resources import bundled_models

CARD_NAME = "model.json"
BACKBONE_FILE = "backbone.safetensors"
REPLAY_FILE = "replay.safetensors"  # the fragility search's replay set (see fragility.replay)
HEAD_FILE = "head.safetensors"  # the SegWithU head (see segwithu.package)
QUALITY_NET_FILE = "quality_net.safetensors"  # the quality network (see quality.package)
# Card sections that name a file of the package: where the name is, and the name a section that names none has.
SECTION_FILES = {
    "head": (("head",), HEAD_FILE),
    "quality": (("quality", "net"), QUALITY_NET_FILE),
    "replay": (("fragility", "replay"), REPLAY_FILE),
}
CARD_FORMAT = "seguncertainty-model/1"
DEFAULT_MODEL = "lidc-nodule"


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
    inference: dict[str, Any] = field(default_factory=lambda: {"overlap": 0.5, "sw_batch_size": 2})
    taps: list[dict[str, Any]] = field(default_factory=list)  # [{"name": submodule, "channels": n}] the head reads
    files: dict[str, str] = field(default_factory=dict)  # weights file name -> SHA-256
    training: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)  # the uncertainty head, when the package has one
    extra: dict[str, Any] = field(default_factory=dict)  # sections added by later stages (head, ...)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
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
        except (TypeError, ValueError) as exc:
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


NETWORK_SUFFIXES = (".pt", ".pth", ".ts", ".jit")


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """Folder of a model package from a bundled name (``"lidc-nodule"``) or a path; None gives the default."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    candidate = Path(name_or_path)
    if candidate.is_dir():
        return candidate
    if candidate.name == CARD_NAME and candidate.is_file():
        return candidate.parent
    if candidate.is_file() and candidate.suffix in NETWORK_SUFFIXES:
        raise ModelError(
            f"{candidate} is a network file, not a model package: write its card beside it as "
            f"{candidate.with_suffix('.json').name} (architecture TorchScript, classes, spacing, normalisation, "
            "patch size; see the README's 'Bring your own network'), or put both in a folder with a model.json"
        )
    bundled = bundled_models()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    known = ", ".join(bundled) or "none"
    raise ModelError(f"model {str(name_or_path)!r} is neither a model package folder nor a bundled model ({known})")


def section_file(card: ModelCard, section: str) -> str | None:
    """The file a card's section names (``head``, ``quality``, ``replay``: :data:`SECTION_FILES`), None without it.

    The card's own name is the one used: a section that names ``my_head.safetensors`` loads that file.
    """
    keys, default = SECTION_FILES[section]
    entry: Any = card.head if keys[0] == "head" else card.extra.get(keys[0])
    if not entry:
        return None
    for key in keys[1:]:
        entry = entry.get(key, {}) if isinstance(entry, dict) else {}
    return str(entry.get("file", default)) if isinstance(entry, dict) else default


def replay_file(card: ModelCard) -> str | None:
    """The replay set's file (the card's ``fragility.replay`` section names it), None without a replay set."""
    return section_file(card, "replay")


def check_card_files(package: ModelPackage) -> None:
    """Every file the card names, in ``files`` or in a section, is there (a section's with its SHA-256).

    Run before a prediction's work starts (commands that make a file anew, such as train-head or
    prepare-replay, load a package whose file is missing), so that a missing file is an error, never
    a run without the head or the replay set.

    Raises:
        ModelError: naming the missing file.
    """
    card, card_path = package.card, package.path / CARD_NAME
    shipped = {args.get("path") for args in _architecture_args(card) if "distribution" in args}
    sections = [name for name in (section_file(card, section) for section in SECTION_FILES) if name is not None]
    for name in [name for name in card.files if name not in shipped] + sections:
        if not package.file(name).is_file():
            raise ModelError(
                f"{package.file(name)} is missing: the model card {card_path} names it; reinstall the model"
            )
    for name in sections:  # written by this project's own commands, always with their SHA-256
        if name not in card.files:
            raise ModelError(f"the model card {card_path} names {name} but gives no SHA-256 for it in its files")


def _architecture_args(card: ModelCard) -> list[dict[str, Any]]:
    """The arguments of the card's networks: the backbone's and, for two-stage models, the locating network's."""
    sections = [card.architecture, card.inference.get("crop", {}).get("architecture", {})]
    return [section.get("args", {}) for section in sections]


def distribution_requirements(card: ModelCard) -> list[str]:
    """The pip requirements of the installed distributions a card's networks are read from, e.g. ``["deepbet==1.0.2"]``.

    Such a distribution is a container of weights (its files are vouched for by the card's SHA-256s,
    never imported), so a front end installs it without its dependencies. ``version`` in the
    architecture's arguments pins the release the card was made with.
    """
    requirements = []
    for args in _architecture_args(card):
        if "distribution" in args:
            version = args.get("version")
            requirement = f"{args['distribution']}=={version}" if version else str(args["distribution"])
            if requirement not in requirements:
                requirements.append(requirement)
    return requirements


def load_package(name_or_path: str | os.PathLike | None = None) -> ModelPackage:
    """Read a model package's card (:func:`..backbones.load_backbone` loads the weights).

    ``name_or_path`` is a bundled name, a package folder, an nnU-Net trained-model folder, or a
    TorchScript file the user chose with its card beside it (``net.pt`` + ``net.json``): that card's
    network is the chosen file, vouched for by its SHA-256 as read now.
    """
    if name_or_path is not None and Path(name_or_path).suffix in NETWORK_SUFFIXES:
        sidecar = Path(name_or_path).with_suffix(".json")
        if Path(name_or_path).is_file() and sidecar.is_file():
            return _chosen_network(Path(name_or_path), sidecar)
    folder = resolve_model(name_or_path)
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        from .nnunet import is_nnunet_folder, nnunet_card

        if is_nnunet_folder(folder):  # read as is; train-head adds a model.json beside it
            return ModelPackage(path=folder, card=nnunet_card(folder))
        raise ModelError(f"{folder} is not a model package: {CARD_NAME} is missing")
    return ModelPackage(path=folder, card=_read_card(card_path))


def _read_card(card_path: Path) -> ModelCard:
    try:
        data = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read model card {card_path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model card {card_path} is not a JSON object")
    return ModelCard.from_dict(data, source=str(card_path))


def _chosen_network(network: Path, card_path: Path) -> ModelPackage:
    """A TorchScript file the user named on the command line, with the card beside it."""
    import hashlib

    card = _read_card(card_path)
    if card.architecture.get("name") != "TorchScript":
        raise ModelError(
            f"{card_path} describes a {card.architecture.get('name')!r} network, not the TorchScript {network.name}"
        )
    args = card.architecture.get("args", {})
    replaced = args.get("path") if "distribution" in args else None
    card.architecture = {**card.architecture, "args": {**args, "file": network.name}}
    card.architecture["args"].pop("distribution", None)
    if replaced:  # the chosen file is the network now, not the distribution's
        card.files = {k: v for k, v in card.files.items() if k != replaced}
    card.files = {**card.files, network.name: hashlib.sha256(network.read_bytes()).hexdigest()}
    return ModelPackage(path=network.parent, card=card)


def write_card(card: ModelCard, folder: str | os.PathLike) -> Path:
    """Write ``model.json`` into ``folder`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / CARD_NAME) as tmp:
        tmp.write_text(json.dumps(card.to_dict(), indent=2, allow_nan=False) + "\n")
    return folder / CARD_NAME
