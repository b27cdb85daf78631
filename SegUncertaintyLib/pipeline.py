"""From a volume file to output files: what ``seguncertainty predict`` does, callable from Python.

Outputs (in the output folder, all on the input's exact grid):

* ``segmentation.<ext>``: uint8 label map (0 = background, n = ``classes[n]``);
* ``probability_<class>.<ext>``: float32 probability of each foreground class (the background's
  is one minus their sum);
* with ``uncertainty="segwithu"`` (the default when the model has a head), from the same backbone
  pass: ``calibrated_probability_<class>.<ext>`` (tempered; same argmax), ``ranking.<ext>`` (higher =
  more likely wrong), ``error_probability.<ext>`` (the ranking map scaled to an estimated
  probability of error in [0, 1], for display), ``calibration.<ext>``, ``epistemic.<ext>`` and
  ``aleatoric.<ext>``;
* with a baseline: ``max_softmax.<ext>`` (``msp``), ``entropy.<ext>`` (``entropy``), or, for
  ``mc-dropout``, ``tta`` and ``ensemble``, ``entropy``, ``expected_entropy``, ``mutual_information``
  and ``epkl`` (the segmentation and probabilities are then the mean over the samples);
* with ``fragility``, from the adversarial search (see :mod:`.fragility.search`): ``fragile.<ext>``
  (uint8 mask of the voxels an equally good adversarial model labels differently), ``flip_mass``,
  ``first_flip``, ``fragility_total``, ``fragility_aleatoric`` and ``fragility_epistemic``;
* ``regions.<ext>`` and ``regions.json``: the high-risk regions for review (see
  :func:`.predict_folder.review_regions`), as a uint16 label map (n = the region of rank n) and
  their sizes, RAS centres, boxes, risks and expected wrong voxels, worst first;
* ``summary.json``: the files, the input geometry, the model, class volumes, timings, peak memory
  (on CUDA also ``peak_gpu_memory_mb``; with ``fragility``, the fragile-voxel count and volume and
  the search's figures; with the head and a package that has quality predictors, ``quality``: the
  estimated Dice and the volume forecast, see :func:`.quality.estimate.estimate_quality`).

Files appear whole or not at all (see :class:`StagedOutput`); their names, the typed summary and
their reader are :mod:`.predict_folder`'s.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import __version__
from .applicability import assess
from .fragility.config import SearchConfig
from .guarantees import ReviewSettings, guarantee_record
from .inference import whole_volume
from .io import check_usable_size, check_writable_suffix, read_volume
from .model.package import ModelPackage, check_card_files
from .network_grid import NetworkGrid
from .output_checks import check_prediction
from .outputs import StagedOutput
from .predict_folder import Applicability, FragilityFigures, ModelRecord, PredictFolder, PredictSummary, write_outputs
from .prediction import class_volumes
from .predictor import Predictor
from .progress import Progress
from .quality.package import has_quality
from .volume import Volume

PREDICT_STAGES = {"read": 0.05, "preprocess": 0.05, "inference": 0.75, "resample": 0.05, "write": 0.1}


def predict_stages(fragility: bool = False) -> dict[str, float]:
    """Relative weights of the stages of :func:`predict_to_files` (the search costs about one to three inferences)."""
    if not fragility:
        return dict(PREDICT_STAGES)
    stages = dict(PREDICT_STAGES)
    write = stages.pop("write")
    return {**stages, "fragility": 1.5, "write": write}


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``: ``ru_maxrss`` would also count the parent's
    memory at the time it forked this process (it survives ``exec``), so a command launched from a
    large process (Slicer, a benchmark) would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if os.uname().sysname == "Darwin" else 1024), 1)


WHOLE_VOLUME_MINIMUM = 16  # voxels along each axis: fewer cannot hold the anatomy a whole-volume network knows


def minimum_voxels(package: ModelPackage) -> int | tuple[int, int, int]:
    """The fewest voxels the network needs along each axis of its grid (of the input, for whole-volume networks).

    A patch U-Net needs at least one cell of its deepest level: the product of its strides along
    each axis (8 for strides 1, 2, 2, 2; MONAI's DynUNet and nnU-Net's plans give them); a network
    whose strides the card does not give, at least 8.
    """
    if whole_volume(package):
        return WHOLE_VOLUME_MINIMUM
    args = package.card.architecture.get("args", {})
    strides = args.get("strides") or args.get("arch_kwargs", {}).get("strides")
    if not strides:
        return 8
    per_axis = np.ones(3, dtype=np.int64)
    for stride in strides:  # in the network's (D, H, W) = array (k, j, i) order
        per_axis *= np.broadcast_to(np.asarray(stride, dtype=np.int64), (3,))
    return tuple(int(n) for n in per_axis[::-1])  # (i, j, k), as check_usable_size takes them


def check_size(volume: Volume, package: ModelPackage) -> None:
    """Refuse a volume too small for the package's network (:func:`~.io.check_usable_size`), before the work.

    Voxels are counted on the grid the network runs on (:class:`~.network_grid.NetworkGrid`); for a
    whole-volume network, which resizes anything, on the input resampled to the card's spacing.
    """
    spacing = package.card.target_spacing_mm
    if whole_volume(package):
        grid = volume.geometry.resampled(spacing)
    else:
        grid = NetworkGrid.for_input(volume.geometry, package).geometry
    check_usable_size(grid, minimum_voxels(package), package.card.name)


def predict_to_files(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    model: str | os.PathLike | ModelPackage | Predictor | None = None,
    device: str = "auto",
    file_format: str = "nrrd",
    uncertainty: str = "auto",
    progress: Progress | None = None,
    samples: int | None = None,
    fragility: SearchConfig | None = None,
    review: ReviewSettings | None = None,
    series: str | None = None,
) -> PredictFolder:
    """Segment a volume file and write the outputs.

    Args:
        input_path: image file or DICOM folder.
        output_dir: folder for the outputs (created if missing).
        model: a :class:`.predictor.Predictor` (its networks are reused: the way to run many cases),
            or a bundled model name, package folder or loaded package (default model if None).
        device: ``auto``, ``cpu`` or ``cuda`` (a Predictor's own device is used when one is given).
        file_format: ``nrrd``, ``nii.gz``, ``nii`` or ``mha``.
        uncertainty: one of :data:`.methods.PREDICT_CHOICES` (``auto``: ``segwithu`` when the model has a head).
        progress: receives the stages of :data:`PREDICT_STAGES`.
        samples: passes of ``mc-dropout`` (default 10) or ``tta`` (default 8); a Predictor's own when one is given.
        fragility: also run the fragility search with these settings (the package needs a replay
            set); with a Predictor, any value runs the search with the Predictor's settings.
        review: how the high-risk regions (``regions.json``; see
            :func:`.predict_folder.review_regions`) are drawn: by default at the threshold the
            package guarantees to leave at most 10 % of the errors outside them (see
            :mod:`.guarantees`); the summary states the guarantee, or why there is none.
        series: the SeriesInstanceUID to read from a DICOM folder holding several series.

    Returns:
        The folder written: its summary (also written as ``summary.json``) and the files of an
        earlier run there that this one removed.
    """
    report = progress or Progress(predict_stages(fragility is not None))
    extension = "." + file_format.lstrip(".")
    check_writable_suffix(Path("x" + extension))
    review = review or ReviewSettings()
    started = time.perf_counter()
    if isinstance(model, Predictor):
        predictor = model
    else:
        predictor = Predictor(model, device, samples, fragility)
    package = predictor.package
    check_card_files(package)
    method = predictor.resolve(uncertainty)
    if fragility is not None:
        _ = predictor.replay  # loaded and checked before the slow part
    report("read", 0.0)
    t0 = time.perf_counter()
    volume = read_volume(input_path, series=series)
    check_size(volume, package)
    read_seconds = time.perf_counter() - t0
    report("read", 1.0)

    with StagedOutput(output_dir) as out:  # the folder is checked before the slow part
        prediction = predictor.predict(volume, method, progress=report)
        check_prediction(prediction, package, method)  # before the search, the estimates and the files
        search = None
        if fragility is not None:
            search = predictor.search(volume, prediction, progress=report)
            prediction = prediction.with_maps(search.maps, fragility=search.summary["seconds"])
            check_prediction(prediction, package, method)
        report("write", 0.0)
        t0 = time.perf_counter()
        classes = package.card.classes
        threshold = review.resolve(package, prediction)
        outputs, regions = write_outputs(prediction, classes, extension, out.stage, report, threshold)
        guarantees = guarantee_record(package, prediction, review.alpha, threshold, regions["regions"])
        timings = {"read": read_seconds, **prediction.timings, "write": time.perf_counter() - t0}
        t0 = time.perf_counter()
        applicability = Applicability.from_dict(assess(volume, prediction, package))
        quality = None
        if method == "segwithu" and has_quality(package):
            quality = predictor.estimate_quality(volume, prediction)
            if not applicability.within:  # an estimate for a scan it was not made for is no verdict
                quality = replace(quality, needs_review=True)
        timings["estimates"] = time.perf_counter() - t0  # applicability and quality
        timings["total"] = time.perf_counter() - started
        gpu_memory = None
        if prediction.device.startswith("cuda"):
            import torch

            gpu_memory = round(torch.cuda.max_memory_allocated(prediction.device) / 2**20, 1)
        summary = PredictSummary(
            version=__version__,
            input_path=str(Path(input_path).resolve()),
            input_geometry=volume.geometry.to_dict(),
            series=series,
            model=ModelRecord(
                name=package.card.name,
                path=str(package.path.resolve()),
                classes=classes,
                modality=package.card.modality,
                display_window=list(package.card.display.window) if package.card.display else None,
            ),
            model_grid=prediction.model_geometry.to_dict(),
            uncertainty=method,
            forward_passes=prediction.forward_passes,
            device=prediction.device,
            outputs=outputs,
            classes=class_volumes(prediction, classes),
            timings_s={k: round(v, 3) for k, v in timings.items()},
            peak_memory_mb=peak_memory_mb(),
            peak_gpu_memory_mb=gpu_memory,
            fragility=FragilityFigures.from_dict(search.summary) if search is not None else None,
            applicability=applicability,
            quality=quality,
            guarantees=guarantees,
        )
        replaced = out.commit(summary.to_dict())
    report("write", 1.0)
    # an earlier run's files this run's summary does not list were removed: the caller says so
    return PredictFolder(Path(output_dir).resolve(), summary, replaced)
