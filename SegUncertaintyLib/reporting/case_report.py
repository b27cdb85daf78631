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

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..fsutil import FolderLock, atomic_write
from ..guarantees import review_sentence
from ..io import read_volume
from ..predict_folder import PredictFolder, PredictSummary
from ..quality.features import regions as outline_band
from ..review.regions import Region
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
        regions: the review regions (``regions.json``), worst first.
    """

    run_dir: Path
    summary: PredictSummary
    image: Volume
    labels: np.ndarray
    risk: np.ndarray
    risk_name: str
    fragile: np.ndarray | None
    regions: list[Region]


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


def read_run(run_dir: str | os.PathLike, input_path: str | os.PathLike | None = None) -> RunView:
    """Read a folder ``predict`` wrote, and its input image (``input_path``, else the one ``summary.json`` names).

    Raises:
        InputError: not a finished predict folder (or a damaged one), the input is gone, or it is not
            on the outputs' grid (compared within :func:`grid_mismatch`'s tolerance).
    """
    folder = PredictFolder.read(run_dir)
    summary = folder.summary
    source = Path(input_path) if input_path is not None else Path(summary.input_path)
    if not source.exists():
        raise InputError(f"the input volume {source} is not there any more; pass it with --input")
    image = read_volume(source, series=summary.series if source.is_dir() else None)  # the series predict read
    labels = folder.read_volume(summary.outputs.segmentation)
    mismatch = grid_mismatch(image.geometry, labels.geometry)
    if mismatch is not None:
        raise InputError(
            f"{source} is not on the grid of the outputs in {run_dir} ({mismatch}); pass the input predict read"
        )
    risk_name, risk = folder.risk()
    fragile = folder.fragile()
    for name, array in (("the risk map", risk), ("the fragile map", fragile)):
        if array is not None and array.shape != labels.array.shape:
            raise InputError(f"{name} in {folder.directory} is not on the segmentation's grid; run predict again")
    return RunView(folder.directory, summary, image, labels.array, risk, risk_name, fragile, folder.regions())


def focus_points(view: RunView, count: int = SLICED_REGIONS) -> list[tuple[str, tuple[int, int, int]]]:
    """Where to slice: the centres of the worst ``count`` regions' boxes, else the segmentation's centre of
    mass, else the volume's centre; each with a caption."""
    points = []
    for region in view.regions[:count]:
        centre = tuple(int((low + high - 1) // 2) for low, high in region.box_kji)
        caption = (
            f"region {region.rank}: {region.volume_ml:.3f} mL, "
            f"{region.expected_errors:.0f} expected wrong voxels, max risk {region.max_risk:.2f}"
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
    model = view.summary.model
    window = figures.display_window(view.image.array, model.modality, model.display_window)
    return figures.Layers(view.image.array, view.labels, view.risk, view.fragile, view.image.geometry, window)


def case_thumbnail(view: RunView) -> bytes:
    """PNG of the axial view through the worst region (see :func:`focus_points`)."""
    return figures.thumbnail(layers(view), focus_points(view, 1)[0][1])


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _quality_block(summary: PredictSummary) -> str:
    applicability, quality = summary.applicability, summary.quality
    if not applicability.within:  # in place of any verdict of the estimate
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in applicability.reasons)
        outside = (
            "<p class='estimate'><span class='badge bad'>outside what this model was trained on</span> "
            "Review the whole segmentation: no estimate is a verdict on a scan the model was not made for.</p>"
            f"<ul class='muted'>{reasons}</ul>"
        )
        if quality is None:
            return outside
        return outside + (
            f"<p class='muted'>Estimated Dice {quality.estimated_dice:.2f} (not a verdict here: "
            "estimated without ground truth, on a scan outside the model's training world).</p>"
        )
    if quality is None:
        return (
            "<p class='muted'>No estimated Dice: the model package has no quality predictor, "
            "or the case was not run with its uncertainty head.</p>"
        )
    verdict = "needs review" if quality.needs_review else "likely acceptable"
    css = "bad" if quality.needs_review else "good"
    bound = quality.review_bound
    kept = (
        f"; of the cases not flagged, at most {bound['delta']:.0%} have a Dice below {quality.bad_dice:.2f}, "
        f"with probability {1 - bound['epsilon']:.0%} (from {bound['calibration_cases']} calibration cases)"
        if bound
        else ""
    )
    return (
        f"<p class='estimate'>Estimated Dice <b>{quality.estimated_dice:.2f}</b> "
        f"(image network: {quality.estimated_dice_net:.2f}) <span class='badge {css}'>{verdict}</span> "
        f"<span class='muted'>(flagged below {quality.review_below:.2f}, chosen to find the cases with Dice below "
        f"{quality.bad_dice:.2f}{kept}; estimated without ground truth from the uncertainty maps)</span></p>"
    )


def _guarantee_block(summary: PredictSummary) -> str:
    """The review guarantee, and the outline that holds the structure, in words."""
    if summary.guarantees is None:
        return ""
    review = summary.guarantees["review"]
    lines = [html.escape(review_sentence(review))]
    if review.get("available"):
        lines[0] += (
            f" <span class='muted'>(alpha {review['alpha']:g}: regions drawn where the estimated probability "
            f"of error is at least {review['threshold']:.3g})</span>"
        )
    outline = summary.guarantees.get("structure")
    if outline is not None:
        lines.append(
            f"The outline p &ge; {outline['threshold']:.3g} ({outline['volume_ml']:.2f} mL) misses at most "
            f"{outline['alpha']:.0%} of the structure on average "
            f"(from {outline['calibration_cases']} calibration cases)."
        )
    return "".join(f"<p class='guarantee'>{line}</p>" for line in lines)


def _volume_rows(summary: PredictSummary) -> str:
    forecast = summary.quality.interval_90_ml if summary.quality is not None else None
    single = forecast is not None and len(summary.classes) == 1
    conformal = summary.quality.volume_forecast_ml.get("interval_90_conformal") if single else None
    rows = []
    for row in summary.classes:
        expected = row.calibrated_expected_volume_ml
        cells = [
            html.escape(row.name),
            f"{row.volume_ml:.3f}",
            f"{row.expected_volume_ml if expected is None else expected:.3f}",
            f"{row.volume_interval_ml[0]:.3f} – {row.volume_interval_ml[1]:.3f}",
        ]
        if single:
            cells.append(f"{forecast[0]:.3f} – {forecast[1]:.3f}")
        if conformal is not None:
            cells.append(f"{conformal[0]:.3f} – {conformal[1]:.3f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = ["class", "segmented (mL)", "expected (mL)", "p ≥ 0.75 – p ≥ 0.25 (mL)"]
    if single:
        header.append("90 % forecast interval, fitted for CRPS (mL)")
    if conformal is not None:
        header.append("90 % conformal interval: holds 90 % of raters' volumes (mL)")
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
            r.rank,
            r.voxels,
            f"{r.volume_ml:.3f}",
            f"{r.mean_risk:.3f}",
            f"{r.max_risk:.3f}",
            f"{r.expected_errors:.1f}",
            f"{r.fragile_fraction:.2f}",
            ", ".join(f"{c:.1f}" for c in r.centroid_ras),
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
    shown, classes = layers(view), summary.model.classes
    slices = []
    for caption, centre in focus_points(view):
        png = figures.slice_panel(shown, centre, classes)
        slices.append(f"<figure><img alt='{html.escape(caption)}' src='{data_uri(png)}'>"
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    fg, band = outline_band(view.labels)
    curve = figures.estimated_risk_coverage(view.risk[fg | band])
    fragility = summary.fragility
    fragile_line = (
        f"<p>Fragile voxels: {fragility.fragile_voxels} ({fragility.fragile_volume_ml:.3f} mL).</p>"
        if fragility
        else "<p class='muted'>Fragility search not run (predict --fragility).</p>"
    )
    name = html.escape(Path(summary.input_path).name)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>SegUncertainty report: {name}</title><style>{STYLE}</style></head>
<body>
<h1>{name}</h1>
<p class="muted">model {html.escape(summary.model.name)}, uncertainty {html.escape(summary.uncertainty)},
seguncertainty {html.escape(summary.version)}; heatmap: {html.escape(view.risk_name)}
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
{_guarantee_block(summary)}
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
    PredictFolder.read(run_dir)  # a folder that is no predict folder gets that message, not one about its lock
    with FolderLock(run_dir):
        return save_report(read_run(run_dir, input_path))


def save_report(view: RunView) -> Path:
    """Write the report of a run already read into its folder (atomically) and return its path."""
    target = view.run_dir / REPORT_FILE
    with atomic_write(target) as staging:
        staging.write_text(report_html(view), encoding="utf-8")
    return target
