"""Render the review view of the bundled model on the demo volume: the README's and the extension's screenshots.

    python docs/screenshots.py [--output-dir Resources/Screenshots]

Runs ``predict --fragility`` on the bundled demo chest CT, loads the outputs into an MRML scene
exactly as the Slicer module does (``SegUncertaintyLib.mrml.results.load_results``), and renders
the axial, sagittal and coronal slice views through MRML's slice pipeline (``slicer-core`` wheel):
background CT, the risk heatmap (:mod:`SegUncertaintyLib.palette`, voxels below 0.1 transparent), the segmentation's
outline and the fragile voxels' outline, centred on the worst region. Writes ``review.png`` (the
three views, a colour bar and the region table), one PNG per view, and the Sample Data thumbnail
of the demo volume (``SegUncertainty/Resources/Icons/LIDCNoduleDemo.png``, the plain axial view).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from SegUncertaintyLib import palette
from SegUncertaintyLib.fragility.config import FragilityConfig
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.mrml import display, headless, nodes, results, snapshot
from SegUncertaintyLib.pipeline import predict_to_files
from SegUncertaintyLib.resources import sample_path

VIEWS = {"Red": "axial", "Yellow": "sagittal", "Green": "coronal"}
THUMBNAIL = Path(__file__).resolve().parents[1] / "SegUncertainty" / "Resources" / "Icons" / "LIDCNoduleDemo.png"


def reference_centre(image) -> tuple[float, float, float]:
    """RAS centre of a volume's grid."""
    centre = (np.array(image.geometry.shape[::-1]) - 1) / 2
    return tuple(image.geometry.ijk_to_physical(centre, frame="RAS"))


def render(output_dir: Path, field_of_view_mm: float = 40.0, size: int = 400) -> list[Path]:
    with tempfile.TemporaryDirectory() as work:
        sample = sample_path("lidc-nodule-demo.nrrd")
        predict_to_files(sample, work, device="cpu", fragility=FragilityConfig())
        scene = headless.new_scene()
        image = read_volume(sample)
        reference = nodes.add_volume(scene, image.array, image.geometry, "lidc-nodule-demo")
        reference.GetDisplayNode().AutoWindowLevelOff()
        reference.GetDisplayNode().SetWindowLevel(1400, -500)  # lung window
        display.set_layers(scene, background=reference)
        thumbnail = snapshot.render_slice(scene, "Red", reference_centre(image), 70.0, 128)
        loaded = results.load_results(scene, work, reference)
        grid = image.geometry
        segmentation = nodes.segment_mask(loaded.segmentation, loaded.segment_ids[1], reference)
        fragile = nodes.segment_mask(loaded.segmentation, loaded.fragile_segment_id, reference)
        snapshot.add_outline_layer(
            scene, [segmentation, fragile], [palette.class_colour(1), palette.FRAGILE_COLOUR], grid, "outlines"
        )
        worst = loaded.regions[0]
        pictures = {
            view: snapshot.render_slice(scene, view, worst.centroid_ras, field_of_view_mm, size) for view in VIEWS
        }
        volume = loaded.volumes[0]

    output_dir.mkdir(parents=True, exist_ok=True)
    plt.imsave(THUMBNAIL, thumbnail)
    written = [THUMBNAIL]
    for view, picture in pictures.items():
        path = output_dir / f"review_{VIEWS[view]}.png"
        plt.imsave(path, picture)
        written.append(path)

    figure = plt.figure(figsize=(12, 4.6), dpi=110)
    for column, (view, picture) in enumerate(pictures.items()):
        axes = figure.add_axes([0.01 + column * 0.25, 0.24, 0.24, 0.7])
        axes.imshow(picture)
        axes.set_title(f"{VIEWS[view]} ({field_of_view_mm:.0f} mm)", fontsize=10)
        axes.axis("off")
    colour_bar = figure.add_axes([0.77, 0.8, 0.2, 0.06])
    risks = np.linspace(0.0, palette.RISK_MAX, 256)
    scale = np.stack([palette.blend_risk(np.full_like(risks, level), risks) for level in (0.0, 1.0)])
    colour_bar.imshow(scale, aspect="auto", extent=(0, palette.RISK_MAX, 0, 1), interpolation="nearest")
    colour_bar.set_yticks([0.25, 0.75], ["on white", "on black"], fontsize=7)
    colour_bar.set_xticks([0.1, 0.3, 0.5], ["0.1", "0.3", ">= 0.5"], fontsize=8)
    colour_bar.set_title("estimated probability of error\n(below 0.1 not shown)", fontsize=9)
    legend = (
        f"blue outline: segmentation ({volume['name']}, {volume['volume_ml']:.2f} mL, "
        f"interval {volume['volume_interval_ml'][0]:.2f}-{volume['volume_interval_ml'][1]:.2f} mL)\n"
        "magenta: fragile voxels (an equally good adversarial model labels them differently)"
    )
    figure.text(0.77, 0.66, legend, fontsize=8, va="top", wrap=True)
    table = figure.add_axes([0.02, 0.01, 0.96, 0.17])
    table.axis("off")
    rows = [
        [
            r.rank,
            "pending",
            f"{r.expected_errors:.1f}",
            f"{r.volume_ml:.3f}",
            f"{r.max_risk:.2f}",
            f"{100 * r.fragile_fraction:.0f}",
            ", ".join(f"{c:.1f}" for c in r.centroid_ras),
        ]
        for r in loaded.regions[:4]
    ]
    header = ["rank", "status", "expected wrong voxels", "volume (mL)", "max risk", "fragile (%)", "centre (RAS mm)"]
    table.table(cellText=rows, colLabels=header, loc="upper center", cellLoc="center").scale(1, 1.3)
    table.set_title("high-risk regions, worst first (selecting a row centres the views on it)", fontsize=9)
    path = output_dir / "review.png"
    figure.savefig(path)
    written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("Resources/Screenshots"))
    args = parser.parse_args()
    for path in render(args.output_dir):
        print(path)


if __name__ == "__main__":
    main()
