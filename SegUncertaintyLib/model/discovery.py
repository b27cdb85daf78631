"""Models found where they are installed: nnU-Net v2 results folders, TotalSegmentator's weights and
MONAI bundles, named so that ``--model`` takes them.

Where each tool keeps its models (read from the tools' own code and documentation):

* nnU-Net v2: ``$nnUNet_results/DatasetNNN_Name/Trainer__Plans__configuration/fold_N/checkpoint_final.pth``.
* TotalSegmentator: the same layout under ``$TOTALSEG_WEIGHTS_PATH``, else
  ``$TOTALSEG_HOME_DIR/nnunet/results``, else ``~/.totalsegmentator/nnunet/results``.
* MONAI bundles: ``<torch hub>/bundle/<name>/configs/metadata.json``, the torch hub folder being
  ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``.

A found model is named ``SOURCE:NAME``: ``nnunet:DatasetNNN_Name/Trainer__Plans__configuration``
(``nnunet:DatasetNNN_Name`` where the dataset has one trained model), ``totalsegmentator:...``
likewise (and ``totalsegmentator:<task>`` for a task of one network, see :mod:`.totalsegmentator`),
and ``monai:<bundle>``. Nothing is loaded to list or find them (no torch import: the commands'
checks before any work use them); :func:`.catalog.installed_problem` says why one cannot be run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from . import totalsegmentator
from .card import CARD_NAME

SOURCES = ("nnunet", "totalsegmentator", "monai")
CHECKPOINT = "checkpoint_final.pth"  # each fold's final weights in an nnU-Net v2 trained-model folder


@dataclass(frozen=True)
class FoundModel:
    """A model found on disk.

    Attributes:
        name: what ``--model`` takes (``SOURCE:NAME``).
        source: ``nnunet``, ``totalsegmentator`` or ``monai``.
        path: its folder.
        problem: why it cannot be run here, or None.
        aliases: shorter names that also take it (the dataset alone, a TotalSegmentator task).
    """

    name: str
    source: str
    path: Path
    problem: str | None = None
    aliases: tuple[str, ...] = ()


def _environment(environ: Mapping[str, str] | None, home: Path | None) -> tuple[Mapping[str, str], Path]:
    return (os.environ if environ is None else environ), (Path.home() if home is None else home)


def nnunet_results(environ: Mapping[str, str] | None = None) -> Path | None:
    """nnU-Net v2's results folder (``$nnUNet_results``), or None when the variable is not set."""
    environ, _ = _environment(environ, None)
    value = environ.get("nnUNet_results")
    return Path(value) if value else None


def totalsegmentator_weights(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where TotalSegmentator keeps its nnU-Net weights (see the module docstring)."""
    environ, home = _environment(environ, home)
    if environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(environ["TOTALSEG_WEIGHTS_PATH"])
    root = Path(environ["TOTALSEG_HOME_DIR"]) if environ.get("TOTALSEG_HOME_DIR") else home / ".totalsegmentator"
    return root / "nnunet" / "results"


def monai_bundles(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where MONAI downloads bundles by default (``torch.hub``'s folder, ``bundle``)."""
    environ, home = _environment(environ, home)
    if environ.get("TORCH_HOME"):
        hub = Path(environ["TORCH_HOME"]) / "hub"
    else:
        cache = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME") else home / ".cache"
        hub = cache / "torch" / "hub"
    return hub / "bundle"


def is_nnunet_folder(folder: Path) -> bool:
    """True for an nnU-Net v2 trained-model folder (plans, dataset and at least one fold's final checkpoint)."""
    return (
        (folder / "plans.json").is_file()
        and (folder / "dataset.json").is_file()
        and any(folder.glob(f"fold_*/{CHECKPOINT}"))
    )


def trained_folders(results: Path) -> Iterator[tuple[str, Path]]:
    """``(DatasetNNN_Name, trained-model folder)`` of every nnU-Net v2 trained model under ``results``."""
    if not results.is_dir():
        return
    for dataset in sorted(p for p in results.iterdir() if p.is_dir() and p.name.startswith("Dataset")):
        for trained in sorted(p for p in dataset.iterdir() if p.is_dir() and p.name.count("__") == 2):
            if is_nnunet_folder(trained):
                yield dataset.name, trained


def _found_nnunet(source: str, results: Path | None) -> list[FoundModel]:
    if results is None:
        return []
    folders = list(trained_folders(results))
    per_dataset: dict[str, int] = {}
    for dataset, _ in folders:
        per_dataset[dataset] = per_dataset.get(dataset, 0) + 1
    found = []
    for dataset, folder in folders:
        aliases: tuple[str, ...] = ()
        if per_dataset[dataset] == 1:
            aliases = (f"{source}:{dataset}",)
            task = totalsegmentator.task_of(dataset) if source == "totalsegmentator" else None
            if task is not None and totalsegmentator.TASK_DATASETS[task] == (dataset,):
                aliases += (f"{source}:{task}",)  # a task of this one network: its name takes it
        problem = totalsegmentator.network_problem(dataset) if source == "totalsegmentator" else None
        found.append(FoundModel(f"{source}:{dataset}/{folder.name}", source, folder, problem, aliases))
    return found


def _found_bundles(root: Path) -> list[FoundModel]:
    if not root.is_dir():
        return []
    found = []
    for bundle in sorted(p for p in root.iterdir() if (p / "configs" / "metadata.json").is_file()):
        problem = None
        if not (bundle / CARD_NAME).is_file():
            problem = (
                f"a MONAI bundle's network is built by MONAI from its configs, which run Python expressions; "
                f"SegUncertainty runs none: export the network as TorchScript (python -m monai.bundle ckpt_export) "
                f"and write a {CARD_NAME} beside it in {bundle} (see the README's 'Bring your own network')"
            )
        found.append(FoundModel(f"monai:{bundle.name}", "monai", bundle, problem))
    return found


def discover(environ: Mapping[str, str] | None = None, home: Path | None = None) -> list[FoundModel]:
    """Every model installed where nnU-Net, TotalSegmentator and MONAI keep theirs, in that order."""
    return [
        *_found_nnunet("nnunet", nnunet_results(environ)),
        *_found_nnunet("totalsegmentator", totalsegmentator_weights(environ, home)),
        *_found_bundles(monai_bundles(environ, home)),
    ]


def is_discovered_name(name: str) -> bool:
    """Whether ``name`` asks for a found model (``SOURCE:NAME``)."""
    source, colon, rest = str(name).partition(":")
    return bool(colon and rest) and source in SOURCES


def find(name: str, environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """The folder of the found model ``name`` (its full name or an alias).

    Raises:
        ModelError: nothing of that name is installed (the message lists what is), or it cannot be
            run here (the message says why).
    """
    source, _, rest = str(name).partition(":")
    if source == "totalsegmentator" and totalsegmentator.task_problem(rest):
        raise ModelError(f"{name}: {totalsegmentator.task_problem(rest)}")
    found = discover(environ, home)
    for model in found:
        if name == model.name or name in model.aliases:
            if model.problem is not None:
                raise ModelError(f"{name}: {model.problem}")
            return model.path
    names = [m.name for m in found if m.source == source]
    listed = ", ".join(names) if names else "none"
    raise ModelError(
        f"no installed model {name!r} (found for {source}: {listed}; see seguncertainty models --discover)"
    )
