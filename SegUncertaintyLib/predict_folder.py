"""A predict output folder: the one place that names its files, writes them, and reads them back.

``predict`` writes a folder with :func:`write_outputs` and a :class:`PredictSummary` (its
``summary.json``); the case report, the CLI's printed summary, the Slicer results and triage read
it with :meth:`PredictFolder.read`, which checks the summary once and refuses a damaged one with a
one-line :class:`~.errors.InputError`. The JSON is the contract; these classes are its only
writer and parser.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .fsutil import loads_strict
from .io import read_volume, write_volume
from .outputs import SUMMARY_FILE
from .prediction import ClassVolume, Prediction, risk_map
from .progress import Progress
from .review.regions import DEFAULT_MERGE_MM, DEFAULT_THRESHOLD, Region, find_regions
from .volume import Volume

REGIONS_FILE = "regions.json"
NUMBER = (int, float)


def safe_name(text: str) -> str:
    """A class name as a file-name part: letters, digits, ``-`` and ``_`` only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "class"


class _Fields:
    """Reads typed fields of a JSON object; a missing or ill-typed one raises ``KeyError(dotted name)``."""

    def __init__(self, data: Any, prefix: str = ""):
        if not isinstance(data, dict):
            raise KeyError(prefix.rstrip(".") or "top-level object")
        self.data, self.prefix = data, prefix

    def get(self, key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        value = self.data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, kind) or (kind is NUMBER and isinstance(value, bool)):
            raise KeyError(self.prefix + key)
        return value

    def section(self, key: str, optional: bool = False) -> _Fields | None:
        value = self.data.get(key)
        if not value and optional:
            return None
        return _Fields(value, f"{self.prefix}{key}.")

    def interval(self, key: str) -> tuple[float, float]:
        """A ``[low, high]`` pair of numbers."""
        value = self.get(key, list)
        if len(value) != 2 or not all(isinstance(v, NUMBER) and not isinstance(v, bool) for v in value):
            raise KeyError(self.prefix + key)
        return value[0], value[1]

    def names(self, key: str, optional: bool = False) -> dict[str, str] | None:
        """A ``{name: file name}`` section."""
        value = self.get(key, dict, optional)
        if value is not None and not all(isinstance(v, str) for v in value.values()):
            raise KeyError(self.prefix + key)
        return value


@dataclass(frozen=True)
class OutputFiles:
    """The file names of a result set (plain names in the folder), as ``summary.json``'s ``outputs``.

    Attributes:
        segmentation: the uint8 label map.
        probabilities: foreground class name -> its float32 probability map.
        calibrated_probabilities: the same, tempered by the head (None without one).
        maps: map name (a method's, the search's) -> its file.
        region_labels: the uint16 map of the review regions (n = rank n).
        regions: the regions' JSON (:data:`REGIONS_FILE`).
    """

    segmentation: str
    probabilities: dict[str, str]
    calibrated_probabilities: dict[str, str] | None = None
    maps: dict[str, str] = field(default_factory=dict)
    region_labels: str | None = None
    regions: str | None = None

    @classmethod
    def named(cls, classes: list[str], extension: str, calibrated: bool, maps: list[str]) -> OutputFiles:
        """The names a prediction's files get (``classes`` with the background first; ``extension`` with its dot)."""
        foreground = classes[1:]
        return cls(
            segmentation=f"segmentation{extension}",
            probabilities={name: f"probability_{safe_name(name)}{extension}" for name in foreground},
            calibrated_probabilities=(
                {name: f"calibrated_probability_{safe_name(name)}{extension}" for name in foreground}
                if calibrated
                else None
            ),
            maps={name: f"{name}{extension}" for name in maps},
            region_labels=f"regions{extension}",
            regions=REGIONS_FILE,
        )

    @property
    def shown_probabilities(self) -> dict[str, str]:
        """The probabilities to show: the calibrated ones when the head made them."""
        return self.calibrated_probabilities or self.probabilities

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"segmentation": self.segmentation, "probabilities": dict(self.probabilities)}
        if self.calibrated_probabilities is not None:
            data["calibrated_probabilities"] = dict(self.calibrated_probabilities)
        if self.maps:
            data["maps"] = dict(self.maps)
        if self.region_labels is not None:
            data["region_labels"] = self.region_labels
        if self.regions is not None:
            data["regions"] = self.regions
        return data

    @classmethod
    def from_dict(cls, fields: _Fields) -> OutputFiles:
        return cls(
            segmentation=fields.get("segmentation", str),
            probabilities=fields.names("probabilities"),
            calibrated_probabilities=fields.names("calibrated_probabilities", optional=True),
            maps=fields.names("maps", optional=True) or {},
            region_labels=fields.get("region_labels", str, optional=True),
            regions=fields.get("regions", str, optional=True),
        )


def _class_volume(fields: _Fields) -> ClassVolume:
    return ClassVolume(
        index=fields.get("index", int),
        name=fields.get("name", str),
        voxels=fields.get("voxels", int),
        volume_ml=fields.get("volume_ml", NUMBER),
        expected_volume_ml=fields.get("expected_volume_ml", NUMBER),
        volume_interval_ml=fields.interval("volume_interval_ml"),
        calibrated_expected_volume_ml=fields.get("calibrated_expected_volume_ml", NUMBER, optional=True),
    )


@dataclass(frozen=True)
class Applicability:
    """Whether the scan lies within what the model was made for (:func:`.applicability.assess`).

    ``details`` holds the rest of the verdict (novelty score, threshold, note), as written.
    """

    within: bool
    reasons: list[str]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"within": self.within, "reasons": list(self.reasons), **self.details}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Applicability:
        fields = _Fields(dict(data), "applicability.")
        reasons = fields.get("reasons", list)
        if not all(isinstance(r, str) for r in reasons):
            raise KeyError("applicability.reasons")
        details = {k: v for k, v in data.items() if k not in ("within", "reasons")}
        return cls(fields.get("within", bool), reasons, details)


@dataclass(frozen=True)
class QualityEstimate:
    """The case's estimated quality (:func:`.quality.estimate.estimate_quality`), from the head's prediction.

    Attributes:
        estimated_dice: the linear predictor's estimate, [0, 1].
        estimated_dice_net: the small network's estimate, [0, 1].
        needs_review: the estimate is below ``review_below``, or the scan is outside the model's world.
        review_below: the threshold chosen on the calibration split.
        bad_dice: the Dice below which a case counts as bad.
        volume_forecast_ml: the foreground's volume forecast: ``mean``, ``sd``, ``interval_90`` (mL,
            Gaussian, its spread fitted for CRPS) and, when the package has the guarantee,
            ``interval_90_conformal`` (mL, holds 90 % of the raters' volumes on average).
        features: the case features the estimate was made from.
        review_bound: when ``review_below`` is the triage bound (:func:`.conformal.bound_accepted_risk`):
            ``delta``, ``epsilon`` and ``calibration_cases``: among the cases accepted (not flagged),
            at most ``delta`` have a Dice below ``bad_dice``, with probability at least ``1 - epsilon``.
    """

    estimated_dice: float
    estimated_dice_net: float
    needs_review: bool
    review_below: float
    bad_dice: float
    volume_forecast_ml: dict[str, Any] | None = None
    features: dict[str, float] = field(default_factory=dict)
    review_bound: dict[str, Any] | None = None

    @property
    def interval_90_ml(self) -> tuple[float, float] | None:
        """The volume forecast's 90 % interval (mL), or None without a forecast."""
        if self.volume_forecast_ml is None:
            return None
        low, high = self.volume_forecast_ml["interval_90"]
        return low, high

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "estimated_dice": self.estimated_dice,
            "estimated_dice_net": self.estimated_dice_net,
            "needs_review": self.needs_review,
            "review_below": self.review_below,
            "bad_dice": self.bad_dice,
        }
        if self.review_bound is not None:
            data["review_bound"] = self.review_bound
        if self.volume_forecast_ml is not None:
            data["volume_forecast_ml"] = self.volume_forecast_ml
        data["features"] = dict(self.features)
        return data

    @classmethod
    def from_dict(cls, fields: _Fields) -> QualityEstimate:
        forecast = fields.section("volume_forecast_ml", optional=True)
        if forecast is not None:
            forecast.interval("interval_90")  # checked here, read by interval_90_ml
            if "interval_90_conformal" in forecast.data:
                forecast.interval("interval_90_conformal")
        return cls(
            estimated_dice=fields.get("estimated_dice", NUMBER),
            estimated_dice_net=fields.get("estimated_dice_net", NUMBER),
            needs_review=fields.get("needs_review", bool),
            review_below=fields.get("review_below", NUMBER),
            bad_dice=fields.get("bad_dice", NUMBER),
            volume_forecast_ml=forecast.data if forecast is not None else None,
            features=fields.get("features", dict, optional=True) or {},
            review_bound=fields.get("review_bound", dict, optional=True),
        )


@dataclass(frozen=True)
class FragilityFigures:
    """The fragility search's figures (:meth:`.fragility.search.FragilitySearch.run`): ``record`` as written."""

    fragile_voxels: int
    fragile_volume_ml: float
    snapshots: int
    admissible_snapshots: int
    record: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FragilityFigures:
        fields = _Fields(dict(data), "fragility.")
        return cls(
            fragile_voxels=fields.get("fragile_voxels", int),
            fragile_volume_ml=fields.get("fragile_volume_ml", NUMBER),
            snapshots=fields.get("snapshots", int, optional=True) or 0,
            admissible_snapshots=fields.get("admissible_snapshots", int, optional=True) or 0,
            record=dict(data),
        )


@dataclass(frozen=True)
class ModelRecord:
    """Which model made the result: its name, folder, classes (background first), modality and display window."""

    name: str
    path: str
    classes: list[str]
    modality: str
    display_window: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "classes": list(self.classes),
            "modality": self.modality,
            "display_window": self.display_window,
        }

    @classmethod
    def from_dict(cls, fields: _Fields) -> ModelRecord:
        classes = fields.get("classes", list)
        if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise KeyError("model.classes")
        return cls(
            name=fields.get("name", str),
            path=fields.get("path", str),
            classes=classes,
            modality=fields.get("modality", str),
            display_window=fields.get("display_window", list, optional=True),
        )


@dataclass(frozen=True)
class PredictSummary:
    """``summary.json`` of a predict output folder, typed.

    Attributes:
        version: the seguncertainty version that wrote it.
        input_path: the input volume (file or DICOM folder), absolute.
        input_geometry: the input grid (:meth:`.volume.Geometry.to_dict`); every output lies on it.
        series: the SeriesInstanceUID read from a DICOM folder holding several, else None.
        model: the model that made it.
        model_grid: the grid the network ran on.
        uncertainty: the uncertainty method (:mod:`.methods`).
        forward_passes: backbone passes made.
        device: where it ran (``cpu``, ``cuda:0``).
        outputs: the files.
        classes: one row per foreground class.
        timings_s: stage -> seconds (``total`` among them).
        peak_memory_mb: the process's peak resident memory, MiB.
        peak_gpu_memory_mb: on CUDA, the peak allocated GPU memory, MiB.
        fragility: the search's figures, when it ran.
        applicability: the verdict on the scan.
        quality: the estimated quality, with the head and a package that has quality predictors.
        guarantees: what the package's calibration guarantees for this prediction
            (:func:`.guarantees.guarantee_record`): ``review`` always, ``structure`` when fitted.
    """

    version: str
    input_path: str
    input_geometry: dict[str, Any]
    model: ModelRecord
    model_grid: dict[str, Any]
    uncertainty: str
    forward_passes: int
    device: str
    outputs: OutputFiles
    classes: list[ClassVolume]
    timings_s: dict[str, float]
    peak_memory_mb: float
    applicability: Applicability
    series: str | None = None
    peak_gpu_memory_mb: float | None = None
    fragility: FragilityFigures | None = None
    quality: QualityEstimate | None = None
    guarantees: dict[str, Any] | None = None

    @property
    def total_volume_ml(self) -> float:
        """The foreground's label-map volume, all classes together (mL)."""
        return round(sum(row.volume_ml for row in self.classes), 4)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``summary.json`` (strict JSON: no NaN anywhere)."""
        data: dict[str, Any] = {
            "tool": "seguncertainty",
            "version": self.version,
            "input": {
                "path": self.input_path,
                "geometry": self.input_geometry,
                **({"series": self.series} if self.series else {}),
            },
            "model": self.model.to_dict(),
            "model_grid": self.model_grid,
            "uncertainty": self.uncertainty,
            "forward_passes": self.forward_passes,
            "device": self.device,
            "outputs": self.outputs.to_dict(),
            "classes": [row.to_dict() for row in self.classes],
            "timings_s": dict(self.timings_s),
            "peak_memory_mb": self.peak_memory_mb,
        }
        if self.peak_gpu_memory_mb is not None:
            data["peak_gpu_memory_mb"] = self.peak_gpu_memory_mb
        if self.fragility is not None:
            data["fragility"] = self.fragility.record
        data["applicability"] = self.applicability.to_dict()
        if self.quality is not None:
            data["quality"] = self.quality.to_dict()
        if self.guarantees is not None:
            data["guarantees"] = self.guarantees
        return data

    @classmethod
    def from_dict(cls, data: Any) -> PredictSummary:
        """Parse ``summary.json``'s object.

        Raises:
            KeyError: with the dotted name of the first field that is missing or not valid.
        """
        top = _Fields(data)
        given = top.section("input")
        rows = top.get("classes", list)
        fragility = top.get("fragility", dict, optional=True)
        quality = top.section("quality", optional=True)
        guarantees = top.section("guarantees", optional=True)
        if guarantees is not None:
            guarantees.section("review").get("available", bool)
        return cls(
            version=top.get("version", str),
            input_path=given.get("path", str),
            input_geometry=given.get("geometry", dict, optional=True) or {},
            series=given.get("series", str, optional=True),
            model=ModelRecord.from_dict(top.section("model")),
            model_grid=top.get("model_grid", dict, optional=True) or {},
            uncertainty=top.get("uncertainty", str),
            forward_passes=top.get("forward_passes", int, optional=True) or 0,
            device=top.get("device", str, optional=True) or "",
            outputs=OutputFiles.from_dict(top.section("outputs")),
            classes=[_class_volume(_Fields(row, "classes[].")) for row in rows],
            timings_s=top.get("timings_s", dict, optional=True) or {},
            peak_memory_mb=top.get("peak_memory_mb", NUMBER, optional=True) or 0.0,
            peak_gpu_memory_mb=top.get("peak_gpu_memory_mb", NUMBER, optional=True),
            applicability=Applicability.from_dict(
                top.get("applicability", dict, optional=True) or {"within": True, "reasons": []}
            ),
            fragility=FragilityFigures.from_dict(fragility) if fragility else None,
            quality=QualityEstimate.from_dict(quality) if quality is not None else None,
            guarantees=guarantees.data if guarantees is not None else None,
        )


def review_regions(prediction: Prediction, threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, dict[str, Any]]:
    """The high-risk regions of a prediction (see :mod:`.review.regions`), fragile voxels included.

    Returns:
        ``(k, j, i)`` uint16 region label map and the content of ``regions.json``.
    """
    source, risk = risk_map(prediction)
    fragile = prediction.maps.get("fragile")
    labels, regions = find_regions(risk, prediction.geometry, threshold, fragile=fragile, merge_mm=DEFAULT_MERGE_MM)
    record = {
        "risk_map": source,
        "threshold": threshold,
        "merge_mm": DEFAULT_MERGE_MM,
        "fragile_included": fragile is not None,
        "regions": [region.to_dict() for region in regions],
    }
    return labels.astype(np.uint16), record


def write_outputs(
    prediction: Prediction,
    classes: list[str],
    extension: str,
    path_for: Callable[[str], Path],
    progress: Progress,
    region_threshold: float = DEFAULT_THRESHOLD,
) -> tuple[OutputFiles, dict[str, Any]]:
    """Write every output of a prediction to ``path_for(file_name)``, on the prediction's input grid.

    Args:
        prediction: what the predictor gave (its maps include the search's when it ran).
        classes: the model's classes, background first.
        extension: the files' extension with its dot (``.nrrd``, ``.nii.gz``).
        path_for: where a file of that name goes (the staging folder of :class:`.outputs.StagedOutput`).
        progress: receives stage ``"write"``.
        region_threshold: the estimated probability of error from which voxels form review regions.

    Returns:
        The names written (the summary's ``outputs``) and the content of ``regions.json``.
    """
    calibrated = prediction.calibrated_probabilities
    files = OutputFiles.named(classes, extension, calibrated is not None, list(prediction.maps))
    jobs: list[tuple[str, np.ndarray]] = [(files.segmentation, prediction.labels)]
    for index, name in enumerate(classes[1:], start=1):
        jobs.append((files.probabilities[name], prediction.probabilities[index]))
        if files.calibrated_probabilities is not None:
            jobs.append((files.calibrated_probabilities[name], calibrated[index]))
    jobs += [(files.maps[name], array) for name, array in prediction.maps.items()]
    region_labels, regions = review_regions(prediction, region_threshold)
    regions["labels"] = files.region_labels
    jobs.append((files.region_labels, region_labels))
    path_for(REGIONS_FILE).write_text(json.dumps(regions, indent=2, allow_nan=False) + "\n")
    for done, (file_name, array) in enumerate(jobs, start=1):
        write_volume(array, prediction.geometry, path_for(file_name))
        progress("write", done / len(jobs))
    return files, regions


@dataclass(frozen=True)
class PredictFolder:
    """A finished predict output folder, read back: its summary, and its files on request.

    Attributes:
        directory: the folder.
        summary: its ``summary.json``, checked.
        replaced_files: when just written, the files of an earlier run that this one removed.
    """

    directory: Path
    summary: PredictSummary
    replaced_files: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, directory: str | os.PathLike) -> PredictFolder:
        """Read and check a folder's ``summary.json``.

        Raises:
            InputError: there is none, or it is damaged (not strict JSON, a field missing or of the
                wrong kind); the message is one line and says what to do.
        """
        directory = Path(directory)
        path = directory / SUMMARY_FILE
        if not path.is_file():
            raise InputError(f"{directory} holds no finished seguncertainty predict result (no {SUMMARY_FILE})")
        try:
            data = loads_strict(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise InputError(f"cannot read {path}: {reason}; run predict into {directory} again") from None
        try:
            summary = PredictSummary.from_dict(data)
        except KeyError as exc:
            raise InputError(
                f"{path} is not a summary seguncertainty predict wrote ({exc.args[0]} missing or not valid); "
                f"run predict into {directory} again"
            ) from None
        return cls(directory, summary)

    def path(self, name: str) -> Path:
        """The file ``name`` of the result set (a plain name the summary lists).

        Raises:
            InputError: the name is not a plain file name, or the file is missing.
        """
        if Path(name).name != name or name.startswith("."):
            raise InputError(f"{self.directory}/{SUMMARY_FILE} names an output file {name!r}, not a plain file name")
        path = self.directory / name
        if not path.is_file():
            raise InputError(f"{path} is listed in {SUMMARY_FILE} but missing; run predict into {self.directory} again")
        return path

    def read_volume(self, name: str) -> Volume:
        """An output volume, by file name (an all-zero map is a result too)."""
        return read_volume(self.path(name), allow_constant=True)

    def regions(self) -> list[Region]:
        """The review regions, worst first (none when the result set has no ``regions.json``).

        Raises:
            InputError: the file is missing or damaged.
        """
        if self.summary.outputs.regions is None:
            return []
        path = self.path(self.summary.outputs.regions)
        try:
            return [Region.from_dict(r) for r in loads_strict(path.read_text(encoding="utf-8"))["regions"]]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"cannot read {path}: {exc}; run predict into {self.directory} again") from None

    def risk(self, read: Callable[[str], Volume] | None = None) -> tuple[str, np.ndarray]:
        """The map the heatmap shows, on a probability-of-error scale: ``(its name, (k, j, i) float32 array)``.

        The head's ``error_probability`` when there is one, else one minus the top (calibrated when
        available) probability. ``read`` reads a file by name (default :meth:`read_volume`).
        """
        read = read or self.read_volume
        maps = self.summary.outputs.maps
        if "error_probability" in maps:
            return "error_probability", read(maps["error_probability"]).array.astype(np.float32, copy=False)
        foreground = np.stack([read(name).array for name in self.summary.outputs.shown_probabilities.values()])
        best = np.maximum(foreground.max(axis=0), 1.0 - foreground.sum(axis=0))
        return "1 - max probability", (1.0 - best).astype(np.float32)

    def fragile(self, read: Callable[[str], Volume] | None = None) -> np.ndarray | None:
        """The fragile voxels, ``(k, j, i)`` bool, when the search ran (else None)."""
        name = self.summary.outputs.maps.get("fragile")
        if name is None:
            return None
        return (read or self.read_volume)(name).array > 0
