"""From a volume file to output files: what ``seguncertainty predict`` does, callable from Python.

Outputs (in the output folder, all on the input's exact grid):

* ``segmentation.<ext>``: uint8 label map (0 = background, n = ``classes[n]``);
* ``probability_<class>.<ext>``: float32 probability of each foreground class (the background's
  is one minus their sum);
* ``summary.json``: the files, the input geometry, the model, class volumes, timings, peak memory.

Files appear whole or not at all (see :class:`StagedOutput`).
"""

from __future__ import annotations

import os
import re
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .inference import Prediction, predict_volume
from .io import check_writable_suffix, read_volume, write_volume
from .model.package import ModelPackage, load_package
from .outputs import StagedOutput
from .progress import Progress

PREDICT_STAGES = {"read": 0.05, "preprocess": 0.05, "inference": 0.75, "resample": 0.05, "write": 0.1}


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if os.uname().sysname == "Darwin" else 1024), 1)


def safe_name(text: str) -> str:
    """A class name as a file-name part: letters, digits, ``-`` and ``_`` only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "class"


def class_volumes(prediction: Prediction, classes: list[str]) -> list[dict[str, Any]]:
    """Per foreground class: voxel count, volume of the label map and expected volume (sum of probabilities), mL."""
    voxel_ml = prediction.geometry.voxel_volume_ml
    counts = np.bincount(prediction.labels.ravel(), minlength=len(classes))
    rows = []
    for index, name in enumerate(classes[1:], start=1):
        rows.append(
            {
                "index": index,
                "name": name,
                "voxels": int(counts[index]),
                "volume_ml": round(float(counts[index]) * voxel_ml, 4),
                "expected_volume_ml": round(float(prediction.probabilities[index].sum(dtype=np.float64)) * voxel_ml, 4),
            }
        )
    return rows


def predict_to_files(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    model: str | os.PathLike | ModelPackage | None = None,
    device: str = "auto",
    file_format: str = "nrrd",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Segment a volume file and write the outputs.

    Args:
        input_path: image file or DICOM folder.
        output_dir: folder for the outputs (created if missing).
        model: bundled model name, package folder, or an already loaded package (default model if None).
        device: ``auto``, ``cpu`` or ``cuda``.
        file_format: ``nrrd``, ``nii.gz``, ``nii`` or ``mha``.
        progress: receives the stages of :data:`PREDICT_STAGES`.

    Returns:
        The summary (also written as ``summary.json``).
    """
    report = progress or Progress(PREDICT_STAGES)
    extension = "." + file_format.lstrip(".")
    check_writable_suffix(Path("x" + extension))
    started = time.perf_counter()
    package = model if isinstance(model, ModelPackage) else load_package(model)
    report("read", 0.0)
    t0 = time.perf_counter()
    volume = read_volume(input_path)
    read_seconds = time.perf_counter() - t0
    report("read", 1.0)

    with StagedOutput(output_dir) as out:  # the folder is checked before the slow part
        prediction = predict_volume(volume, package, device=device, progress=report)
        report("write", 0.0)
        t0 = time.perf_counter()
        classes = package.card.classes
        outputs: dict[str, Any] = {"segmentation": f"segmentation{extension}", "probabilities": {}}
        write_volume(prediction.labels, volume.geometry, out.stage(outputs["segmentation"]))
        for index, name in enumerate(classes[1:], start=1):
            file_name = f"probability_{safe_name(name)}{extension}"
            write_volume(prediction.probabilities[index], volume.geometry, out.stage(file_name))
            outputs["probabilities"][name] = file_name
            report("write", index / max(len(classes) - 1, 1))
        timings = {"read": read_seconds, **prediction.timings, "write": time.perf_counter() - t0}
        timings["total"] = time.perf_counter() - started
        summary = {
            "tool": "seguncertainty",
            "version": __version__,
            "input": {"path": str(Path(input_path).resolve()), "geometry": volume.geometry.to_dict()},
            "model": {"name": package.card.name, "path": str(package.path.resolve()), "classes": classes},
            "model_grid": prediction.model_geometry.to_dict(),
            "device": prediction.device,
            "outputs": outputs,
            "classes": class_volumes(prediction, classes),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "peak_memory_mb": peak_memory_mb(),
        }
        out.commit(summary)
    report("write", 1.0)
    summary["output_dir"] = str(Path(output_dir).resolve())
    return summary
