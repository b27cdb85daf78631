"""``report.html``: one case's review page, self-contained (pictures inline), from a predict output folder.

It shows the estimated Dice and whether the case needs review, each class's volume with its
interval, orthogonal slices through the worst regions (heatmap, contour, fragile outline), the
region table and the estimated risk-coverage curve.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..fsutil import FolderLock, atomic_write, loads_strict
from ..io import read_volume
from ..quality.features import regions as outline_band
from ..volume import Geometry, Volume
from . import figures

REPORT_FILE = "report.html"
SLICED_REGIONS = 3


@dataclass
class RunView:
    """A predict output folder read back, every array ``(k, j, i)`` on the input grid.

    Attributes:
        risk_name: ``error_probability`` (the head's) or ``1 - max probability``.
        fragile: bool, when the fragility search ran.
        regions: the entries of ``regions.json``, worst first.
    """

    run_dir: Path
    summary: dict[str, Any]
    image: Volume
    labels: np.ndarray
    risk: np.ndarray
    risk_name: str
    fragile: np.ndarray | None
    regions: list[dict[str, Any]]


# a grid read back from a file is the input's when within this (NIfTI stores its geometry in float32)
GRID_ATOL = 1e-6  # mm for spacing and origin; plain for the direction cosines
GRID_RTOL = 1e-6  # of the spacing's and origin's magnitude (float32 holds about 7 digits)


def grid_mismatch(a: Geometry, b: Geometry) -> str | None:
    """How two grids differ, or None when they are the same within :data:`GRID_ATOL` / :data:`GRID_RTOL`.

    Grids are compared with a tolerance, never exactly: a file round trip moves an oblique grid's
    spacing and direction by about 1e-16, NIfTI's float32 storage its origin by about 1e-5 mm.
    """
    if a.shape != b.shape:
        return f"size {a.shape[::-1]} against {b.shape[::-1]} voxels (i, j, k)"
    for name, x, y, rtol in (
        ("spacing", a.spacing, b.spacing, GRID_RTOL),
        ("origin", a.origin, b.origin, GRID_RTOL),
        ("direction", a.direction, b.direction, 0.0),
    ):
        if not np.allclose(x, y, atol=GRID_ATOL, rtol=rtol):
            unit = "" if name == "direction" else " mm"
            return f"{name} differs by up to {np.max(np.abs(np.subtract(x, y))):.3g}{unit}"
    return None


def _field(data: Any, dotted: str, kind: type | tuple[type, ...]) -> Any:
    value = data
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, kind):
        raise KeyError(dotted)
    return value


SUMMARY_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("version", str),
    ("uncertainty", str),
    ("input.path", str),
    ("model.name", str),
    ("outputs.segmentation", str),
    ("outputs.probabilities", dict),
    ("classes", list),
)
NUMBER = (int, float)
CLASS_FIELDS = (("name", str), ("volume_ml", NUMBER), ("expected_volume_ml", NUMBER))
# optional sections: checked when present
SECTION_FIELDS = {
    "quality": (
        ("estimated_dice", NUMBER),
        ("estimated_dice_net", NUMBER),
        ("needs_review", bool),
        ("bad_dice", NUMBER),
    ),
    "fragility": (("fragile_voxels", int), ("fragile_volume_ml", NUMBER)),
}


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``summary.json`` of a finished predict folder, checked for what the report and the worklist read.

    Raises:
        InputError: it is missing, damaged (not strict JSON), or not a predict summary; the message
            is one line.
    """
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    if not path.is_file():
        raise InputError(f"{run_dir} has no summary.json: not a finished seguncertainty predict output folder")
    try:
        summary = loads_strict(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise InputError(f"cannot read {path}: {reason}; run predict into {run_dir} again") from None
    try:
        if not isinstance(summary, dict):
            raise KeyError("top-level object")
        for dotted, kind in SUMMARY_FIELDS:
            _field(summary, dotted, kind)
        for row in summary["classes"]:
            for dotted, kind in CLASS_FIELDS:
                _field(row, dotted, kind)
            interval = row.get("volume_interval_ml")
            if not (isinstance(interval, list) and len(interval) == 2):
                raise KeyError("classes[].volume_interval_ml")
        for section, fields in SECTION_FIELDS.items():
            if summary.get(section):
                for dotted, kind in fields:
                    _field(summary, f"{section}.{dotted}", kind)
    except KeyError as exc:
        raise InputError(
            f"{path} is not a summary seguncertainty predict wrote ({exc.args[0]} missing or not valid); "
            f"run predict into {run_dir} again"
        ) from None
    return summary


def _output(run_dir: Path, name: Any) -> Path:
    if not isinstance(name, str) or Path(name).name != name:
        raise InputError(f"{run_dir}/summary.json names an output file {name!r} that is not a plain file name")
    path = run_dir / name
    if not path.is_file():
        raise InputError(f"{path} is listed in summary.json but missing; run predict into {run_dir} again")
    return path


def read_regions(run_dir: str | os.PathLike, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of a predict folder's ``regions.json``, worst first (none when the summary lists no such file).

    Raises:
        InputError: the file is missing or damaged.
    """
    run_dir = Path(run_dir)
    if "regions" not in summary["outputs"]:
        return []
    path = _output(run_dir, summary["outputs"]["regions"])
    try:
        regions = loads_strict(path.read_text(encoding="utf-8"))["regions"]
        if not isinstance(regions, list) or not all(isinstance(r, dict) for r in regions):
            raise TypeError("regions is not a list of regions")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read {path}: {exc}; run predict into {run_dir} again") from None
    return regions


def read_run(run_dir: str | os.PathLike, input_path: str | os.PathLike | None = None) -> RunView:
    """Read a folder ``predict`` wrote, and its input image (``input_path``, else the one ``summary.json`` names).

    Raises:
        InputError: not a finished predict folder (or a damaged one), the input is gone, or it is not
            on the outputs' grid (compared within :func:`grid_mismatch`'s tolerance).
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    source = Path(input_path) if input_path is not None else Path(summary["input"]["path"])
    if not source.exists():
        raise InputError(f"the input volume {source} is not there any more; pass it with --input")
    series = (summary.get("input") or {}).get("series") if source.is_dir() else None  # the one predict read
    image = read_volume(source, series=series)
    outputs = summary["outputs"]
    labels = read_volume(_output(run_dir, outputs["segmentation"]), allow_constant=True)
    mismatch = grid_mismatch(image.geometry, labels.geometry)
    if mismatch is not None:
        raise InputError(
            f"{source} is not on the grid of the outputs in {run_dir} ({mismatch}); pass the input predict read"
        )
    maps = outputs.get("maps") or {}
    if not isinstance(maps, dict):
        raise InputError(f"{run_dir}/summary.json is not a summary seguncertainty predict wrote (no valid maps)")
    if "error_probability" in maps:
        risk_name, risk = (
            "error_probability",
            read_volume(_output(run_dir, maps["error_probability"]), allow_constant=True).array,
        )
    else:
        files = outputs.get("calibrated_probabilities") or outputs["probabilities"]
        foreground = np.stack(
            [read_volume(_output(run_dir, name), allow_constant=True).array for name in files.values()]
        )
        every = np.concatenate([1.0 - foreground.sum(axis=0, keepdims=True), foreground])
        risk_name, risk = "1 - max probability", (1.0 - every.max(axis=0)).astype(np.float32)
    fragile = None
    if "fragile" in maps:
        fragile = read_volume(_output(run_dir, maps["fragile"]), allow_constant=True).array > 0
    regions = read_regions(run_dir, summary)
    for name, array in (("the risk map", risk), ("the fragile map", fragile)):
        if array is not None and array.shape != labels.array.shape:
            raise InputError(f"{name} in {run_dir} is not on the segmentation's grid; run predict again")
    return RunView(run_dir, summary, image, labels.array, risk, risk_name, fragile, regions)


def focus_points(view: RunView, count: int = SLICED_REGIONS) -> list[tuple[str, tuple[int, int, int]]]:
    """Where to slice: the centres of the worst ``count`` regions' boxes, else the segmentation's centre of
    mass, else the volume's centre; each with a caption."""
    points = []
    for region in view.regions[:count]:
        centre = tuple(int((low + high - 1) // 2) for low, high in region["box_kji"])
        caption = (
            f"region {region['rank']}: {region['volume_ml']:.3f} mL, "
            f"{region['expected_errors']:.0f} expected wrong voxels, max risk {region['max_risk']:.2f}"
        )
        points.append((caption, centre))
    if points:
        return points
    if (view.labels > 0).any():
        centre = tuple(round(c) for c in ndimage.center_of_mass(view.labels > 0))
        return [("the segmentation (no high-risk region)", centre)]
    return [("the volume's centre (nothing segmented, no high-risk region)", tuple(n // 2 for n in view.labels.shape))]


def layers(view: RunView) -> figures.Layers:
    """What the pictures of a run show, windowed by the model's modality (and its card's window)."""
    model = view.summary["model"]
    window = figures.display_window(view.image.array, model.get("modality"), model.get("display_window"))
    return figures.Layers(view.image.array, view.labels, view.risk, view.fragile, view.image.geometry, window)


def case_thumbnail(view: RunView) -> bytes:
    """PNG of the axial view through the worst region (see :func:`focus_points`)."""
    return figures.thumbnail(layers(view), focus_points(view, 1)[0][1])


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _quality_block(summary: dict[str, Any]) -> str:
    applicability = summary.get("applicability") or {}
    outside = ""
    if applicability.get("within") is False:  # in place of any verdict of the estimate
        reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in applicability.get("reasons", []))
        outside = (
            "<p class='estimate'><span class='badge bad'>outside what this model was trained on</span> "
            "Review the whole segmentation: no estimate is a verdict on a scan the model was not made for.</p>"
            f"<ul class='muted'>{reasons}</ul>"
        )
    quality = summary.get("quality")
    if outside:
        if not quality:
            return outside
        return outside + (
            f"<p class='muted'>Estimated Dice {quality['estimated_dice']:.2f} (not a verdict here: "
            "estimated without ground truth, on a scan outside the model's training world).</p>"
        )
    if not quality:
        return (
            "<p class='muted'>No estimated Dice: the model package has no quality predictor, "
            "or the case was not run with its uncertainty head.</p>"
        )
    verdict = "needs review" if quality["needs_review"] else "likely acceptable"
    css = "bad" if quality["needs_review"] else "good"
    below = quality.get("review_below", quality["bad_dice"])
    return (
        f"<p class='estimate'>Estimated Dice <b>{quality['estimated_dice']:.2f}</b> "
        f"(image network: {quality['estimated_dice_net']:.2f}) <span class='badge {css}'>{verdict}</span> "
        f"<span class='muted'>(flagged below {below:.2f}, chosen to find the cases with Dice below "
        f"{quality['bad_dice']:.2f}; estimated without ground truth from the uncertainty maps)</span></p>"
    )


def _volume_rows(summary: dict[str, Any]) -> str:
    forecast = (summary.get("quality") or {}).get("volume_forecast_ml")
    rows = []
    for row in summary["classes"]:
        interval = row["volume_interval_ml"]
        cells = [
            html.escape(row["name"]),
            f"{row['volume_ml']:.3f}",
            f"{row.get('calibrated_expected_volume_ml', row['expected_volume_ml']):.3f}",
            f"{interval[0]:.3f} – {interval[1]:.3f}",
        ]
        if forecast is not None and len(summary["classes"]) == 1:
            low, high = forecast["interval_90"]
            cells.append(f"{low:.3f} – {high:.3f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = ["class", "segmented (mL)", "expected (mL)", "p ≥ 0.75 – p ≥ 0.25 (mL)"]
    if forecast is not None and len(summary["classes"]) == 1:
        header.append("90 % forecast interval (mL)")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>" + "".join(rows) + "</table>"


def _region_rows(view: RunView) -> str:
    if not view.regions:
        return "<p class='muted'>No voxel reaches the region threshold.</p>"
    header = [
        "rank",
        "voxels",
        "mL",
        "mean risk",
        "max risk",
        "expected wrong voxels",
        "fragile share",
        "centre RAS (mm)",
    ]
    rows = []
    for r in view.regions:
        cells = [
            r["rank"],
            r["voxels"],
            f"{r['volume_ml']:.3f}",
            f"{r['mean_risk']:.3f}",
            f"{r['max_risk']:.3f}",
            f"{r['expected_errors']:.1f}",
            f"{r['fragile_fraction']:.2f}",
            ", ".join(f"{c:.1f}" for c in r["centroid_ras"]),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>" + "".join(rows) + "</table>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1d1d1f; max-width: 1100px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f1f1f4; } .muted { color: #6b6b72; font-size: 13px; }
.estimate { font-size: 17px; } .badge { padding: 2px 8px; border-radius: 10px; font-size: 13px; color: white; }
.bad { background: #c0392b; } .good { background: #2e8b57; } figure { margin: 10px 0; }
figcaption { font-size: 13px; color: #444; } img { max-width: 100%; }
"""


def report_html(view: RunView) -> str:
    """The report page of a run (see the module docstring)."""
    summary = view.summary
    shown, classes = layers(view), summary["model"]["classes"]
    slices = []
    for caption, centre in focus_points(view):
        png = figures.slice_panel(shown, centre, classes)
        slices.append(f"<figure><img alt='{html.escape(caption)}' src='{data_uri(png)}'>"
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    fg, band = outline_band(view.labels)
    curve = figures.estimated_risk_coverage(view.risk[fg | band])
    fragility = summary.get("fragility")
    fragile_line = (
        f"<p>Fragile voxels: {fragility['fragile_voxels']} ({fragility['fragile_volume_ml']:.3f} mL).</p>"
        if fragility
        else "<p class='muted'>Fragility search not run (predict --fragility).</p>"
    )
    name = html.escape(Path(summary["input"]["path"]).name)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>SegUncertainty report: {name}</title><style>{STYLE}</style></head>
<body>
<h1>{name}</h1>
<p class="muted">model {html.escape(summary["model"]["name"])}, uncertainty {html.escape(summary["uncertainty"])},
seguncertainty {html.escape(summary["version"])}; heatmap: {html.escape(view.risk_name)}
(the colour bar under each figure gives its scale; the same colours as in Slicer)</p>
{_quality_block(summary)}
<h2>Volume</h2>
{_volume_rows(summary)}
{fragile_line}
<h2>Where it is most likely wrong</h2>
<p class="muted">Views by anatomy in radiological convention, as Slicer shows them: the patient's right on the
image's left (axial, coronal), anterior on the left (sagittal); the letters mark the patient's sides, the titles
give each slice's position in RAS mm (the frame of the regions' centres below).</p>
{"".join(slices)}
<h2>High-risk regions</h2>
{_region_rows(view)}
<h2>Estimated risk-coverage</h2>
<figure><img alt="estimated risk-coverage curve" src="{data_uri(curve)}">
<figcaption>Voxels of the segmentation and its margin accepted from the safest; the curve is the model's own
estimate of the error rate among those accepted (no ground truth).</figcaption></figure>
</body></html>
"""


def write_report(run_dir: str | os.PathLike, input_path: str | os.PathLike | None = None) -> Path:
    """Write ``report.html`` into a predict output folder (atomically) and return its path.

    The folder's lock is held meanwhile, so a report is never written beside a run that is replacing
    the folder's results.

    Raises:
        InputError: see :func:`read_run`.
        OutputError: another run is writing into the folder, or it cannot be written.
    """
    read_summary(run_dir)  # a folder that is no predict folder gets that message, not one about its lock
    with FolderLock(run_dir):
        return save_report(read_run(run_dir, input_path))


def save_report(view: RunView) -> Path:
    """Write the report of a run already read into its folder (atomically) and return its path."""
    target = view.run_dir / REPORT_FILE
    with atomic_write(target) as staging:
        staging.write_text(report_html(view), encoding="utf-8")
    return target
