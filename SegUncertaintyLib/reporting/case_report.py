"""``report.html``: one case's review page, self-contained (pictures inline), from a predict output folder.

It shows the estimated Dice and whether the case needs review, each class's volume with its
interval, orthogonal slices through the worst regions (heatmap, contour, fragile outline), the
region table and the estimated risk-coverage curve.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..fsutil import atomic_write
from ..io import read_volume
from ..quality.features import regions as outline_band
from ..volume import Volume
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


def read_run(run_dir: str | os.PathLike, input_path: str | os.PathLike | None = None) -> RunView:
    """Read a folder ``predict`` wrote, and its input image (``input_path``, else the one ``summary.json`` names).

    Raises:
        InputError: not a finished predict folder, the input is gone, or it is not on the outputs' grid.
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{run_dir} has no summary.json: not a finished seguncertainty predict output folder")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    source = Path(input_path) if input_path is not None else Path(summary["input"]["path"])
    if not source.exists():
        raise InputError(f"the input volume {source} is not there any more; pass it with --input")
    image = read_volume(source)
    labels = read_volume(run_dir / summary["outputs"]["segmentation"], allow_constant=True)
    if image.geometry != labels.geometry:
        raise InputError(f"{source} is not on the grid of the outputs in {run_dir}; pass the input predict read")
    outputs = summary["outputs"]
    maps = outputs.get("maps", {})
    if "error_probability" in maps:
        risk_name, risk = (
            "error_probability",
            read_volume(run_dir / maps["error_probability"], allow_constant=True).array,
        )
    else:
        files = outputs.get("calibrated_probabilities") or outputs["probabilities"]
        foreground = np.stack([read_volume(run_dir / name, allow_constant=True).array for name in files.values()])
        every = np.concatenate([1.0 - foreground.sum(axis=0, keepdims=True), foreground])
        risk_name, risk = "1 - max probability", (1.0 - every.max(axis=0)).astype(np.float32)
    fragile = read_volume(run_dir / maps["fragile"], allow_constant=True).array > 0 if "fragile" in maps else None
    regions = (
        json.loads((run_dir / outputs["regions"]).read_text(encoding="utf-8"))["regions"]
        if "regions" in outputs
        else []
    )
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


def case_thumbnail(view: RunView) -> bytes:
    """PNG of the axial slice through the worst region (see :func:`focus_points`)."""
    centre = focus_points(view, 1)[0][1]
    spacing = view.image.geometry.spacing
    return figures.thumbnail(view.image.array, view.labels, view.risk, view.fragile, centre, spacing)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _quality_block(summary: dict[str, Any]) -> str:
    quality = summary.get("quality")
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
    spacing = view.image.geometry.spacing
    slices = []
    for caption, centre in focus_points(view):
        png = figures.slice_panel(view.image.array, view.labels, view.risk, view.fragile, centre, spacing)
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
(Inferno, 0 to {figures.RISK_MAX}); cyan: segmentation; green: fragile voxels</p>
{_quality_block(summary)}
<h2>Volume</h2>
{_volume_rows(summary)}
{fragile_line}
<h2>Where it is most likely wrong</h2>
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
    """Write ``report.html`` into a predict output folder (atomically) and return its path."""
    return save_report(read_run(run_dir, input_path))


def save_report(view: RunView) -> Path:
    """Write the report of a run already read into its folder (atomically) and return its path."""
    target = view.run_dir / REPORT_FILE
    with atomic_write(target) as staging:
        staging.write_text(report_html(view), encoding="utf-8")
    return target
