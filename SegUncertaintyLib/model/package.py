"""Model packages: a folder with a model card (``model.json``) and safetensors weights.

The card says everything inference needs (architecture, classes, input channels, spacing,
intensity normalisation, patch size) and how the model was made (command, time, held-out
metrics, licence). Weights are only ever read with safetensors: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..fsutil import atomic_write
from ..resources import bundled_models
from .card import CARD_NAME, ModelCard, ModelPackage

BACKBONE_FILE = "backbone.safetensors"
REPLAY_FILE = "replay.safetensors"  # the fragility search's replay set (see fragility.replay)
SECTION_FILES = ("head", "quality", "replay")  # the card's sections that name a file of the package
DEFAULT_MODEL = "lidc-nodule"


NETWORK_SUFFIXES = (".pt", ".pth", ".ts", ".jit")


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """Folder of a model package from a bundled name (``"lidc-nodule"``), an installed model's name
    (``nnunet:Dataset001_X``, ``totalsegmentator:...``, ``monai:...``, see :mod:`.discovery`) or a
    path; None gives the default."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    from .discovery import find, is_discovered_name

    if is_discovered_name(str(name_or_path)):
        return find(str(name_or_path))
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
    if section == "head":
        return card.head.file if card.head is not None else None
    if section == "quality":
        return card.quality.net_file if card.quality is not None else None
    entry: Any = (card.extra.get("fragility") or {}).get("replay")  # typed with the search's rework
    if not entry:
        return None
    return str(entry.get("file", REPLAY_FILE)) if isinstance(entry, dict) else REPLAY_FILE


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
    sections = [card.architecture, (card.inference.crop or {}).get("architecture", {})]
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
        from .discovery import is_nnunet_folder

        if is_nnunet_folder(folder):  # read as is; train-head adds a model.json beside it
            from .nnunet import nnunet_card  # here: it imports torch, reading a card does not

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
