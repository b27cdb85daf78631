"""How visible the risk heatmap is over dark lung and bright tissue: Inferno (before) against the palette (now).

    python benchmarks/risk_display.py [--figure docs/risk_display.png]

For each risk and each background grey level (in the lung window: air, lung, soft tissue) it
blends the heatmap's colour over the grey as the slice views do and gives the CIE76 colour
difference (Delta E in CIELAB; about 2.3 is just noticeable, above 10 clearly visible) between the
blend and the bare image, and its lightness part Delta L* (the contrast that makes a small speck
visible: the eye resolves fine detail by lightness, hardly by hue). Before: Inferno from 0 to 0.5,
voxels below 0.1 transparent, opacity 0.6 (the Slicer module's display; the report drew the same
map from 0.05 with opacity 0.65). Now: :mod:`SegUncertaintyLib.palette`. With ``--figure`` it also
draws the demo's worst region both ways, side by side (the README's picture).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT  # first: puts the repository on the import path

from SegUncertaintyLib import palette

RISKS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
# grey levels in the lung window (centre -600, width 1500 HU)
BACKGROUNDS = {"air (-1000 HU)": 0.233, "lung (-850 HU)": 0.333, "soft tissue (40 HU)": 0.927}
INFERNO_FLOOR, INFERNO_OPACITY = 0.1, 0.6


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) to CIELAB (D65)."""
    rgb = np.asarray(rgb, np.float64)
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def inferno_blend(grey: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """The display before: Inferno over [0, 0.5], below the floor transparent, one opacity."""
    from matplotlib import colormaps

    grey3 = np.repeat(np.asarray(grey, np.float64)[..., None], 3, axis=-1)
    colour = np.asarray(colormaps["inferno"](np.clip(np.asarray(risk) / palette.RISK_MAX, 0, 1)))[..., :3]
    shown = (np.asarray(risk) >= INFERNO_FLOOR)[..., None]
    return np.where(shown, INFERNO_OPACITY * colour + (1 - INFERNO_OPACITY) * grey3, grey3)


def contrast(blend, grey: float, risk: float) -> tuple[float, float]:
    """``(Delta L*, Delta E)`` of the blend against the bare grey: lightness contrast (what makes a small
    speck visible) and the whole colour difference."""
    difference = _lab(blend(np.array(grey), np.array(risk))) - _lab(np.full(3, grey))
    return float(difference[0]), float(np.linalg.norm(difference))


def table() -> str:
    lines = [
        "| risk | " + " | ".join(f"{name}: Inferno / now" for name in BACKGROUNDS) + " |",
        "|---|" + "---|" * len(BACKGROUNDS),
    ]
    for risk in RISKS:
        cells = []
        for grey in BACKGROUNDS.values():
            before_l, before_e = contrast(inferno_blend, grey, risk)
            now_l, now_e = contrast(palette.blend_risk, grey, risk)
            cells.append(f"{before_l:+.0f} ({before_e:.0f}) / {now_l:+.0f} ({now_e:.0f})")
        lines.append(f"| {risk:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(path: Path) -> None:
    """The demo's worst region, axial, with the heatmap drawn the old way and the new way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from SegUncertaintyLib.pipeline import predict_to_files
    from SegUncertaintyLib.reporting import case_report, figures
    from SegUncertaintyLib.resources import sample_path

    with tempfile.TemporaryDirectory() as work:
        predict_to_files(sample_path("lidc-nodule-demo.nrrd"), work, device="cpu")
        view = case_report.read_run(work)
        layers = case_report.layers(view)
        shown, centre = layers.in_patient_axes(case_report.focus_points(view, 1)[0][1])
    plane = figures._plane
    low, high = shown.window
    grey = np.clip((plane(shown.image, "axial", centre[0]) - low) / (high - low), 0, 1)
    risk = plane(shown.risk, "axial", centre[0])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.8), dpi=110, facecolor="black")
    extent = figures._extent(shown, "axial")
    displays = (("before: Inferno (dark low end)", inferno_blend), ("now: yellow to red", palette.blend_risk))
    for ax, (title, blend) in zip(axes, displays, strict=True):
        ax.imshow(blend(grey, risk), extent=extent, interpolation="nearest")
        ax.set_title(title, color="white", fontsize=11)
        ax.set_axis_off()
    fig.savefig(path, bbox_inches="tight", facecolor="black")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", type=Path, help="also draw the demo's worst region both ways into this PNG")
    args = parser.parse_args()
    print("Delta L* (Delta E, CIE76) of the heatmap over the bare image, Inferno (before) / the palette (now):\n")
    print(table())
    if args.figure:
        figure(args.figure)


if __name__ == "__main__":
    main()
