"""Triage of a folder of real volumes (resumable worklist) and the HTML report, rendered by a real browser."""

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from SegUncertaintyLib import palette
from SegUncertaintyLib.errors import Cancelled, InputError
from SegUncertaintyLib.io import read_volume
from SegUncertaintyLib.reporting.case_report import read_run, write_report
from SegUncertaintyLib.triage import triage

from .helpers import run_quietly


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory, lidc_cache, bundled_package):
    """The bundled model with quality predictors fitted on the small real LIDC cache."""
    folder = tmp_path_factory.mktemp("model") / "lidc-nodule"
    shutil.copytree(bundled_package.path, folder)
    args = ["train-quality", "--model", str(folder), "--cache-dir", str(lidc_cache), "--net-epochs", "3"]
    assert run_quietly(*args) == 0
    return folder


@pytest.fixture(scope="module")
def volumes(tmp_path_factory, lidc_cache):
    """The small cache's test split written as NRRD files, plus one broken file."""
    folder = tmp_path_factory.mktemp("inputs")
    args = ["export-cases", "--split", "test", "--cache-dir", str(lidc_cache), "--output-dir", str(folder)]
    from SegUncertaintyLib.cli import main

    assert main([*args, "--progress", "none"]) == 0
    (folder / "broken.nrrd").write_text("not a volume")
    return folder


def read_worklist(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_triage_ranks_resumes_and_survives_a_bad_file(volumes, quality_model, tmp_path, monkeypatch):
    from SegUncertaintyLib import predictor

    out = tmp_path / "triage"
    stop_after = {"count": 0}

    def stop(stage, fraction=0.0, message=None):
        stop_after["count"] += 1
        if stop_after["count"] == 2:
            raise Cancelled("stopped by the test")

    loads = []
    for name in ("load_backbone", "load_head", "load_quality"):  # the real loaders, counted
        real = getattr(predictor, name)
        monkeypatch.setattr(
            predictor, name, lambda *a, _real=real, _name=name, **k: loads.append(_name) or _real(*a, **k)
        )
    with pytest.raises(Cancelled):
        triage(volumes, out, quality_model, "cpu", progress=stop)
    done = [p.parent.name for p in (out / "cases").glob("*/summary.json")]
    assert len(done) == 2  # the cases finished before the stop are kept whole
    assert sorted(loads) == ["load_backbone", "load_head", "load_quality"]  # once for both cases
    assert not list((out / "cases").glob("*/.*"))  # no staging leftovers
    assert len(read_worklist(out / "worklist.csv")) == 4  # written when stopped too

    result = triage(volumes, out, quality_model, "cpu")
    assert result == {**result, "cases": 4, "ran": 1, "skipped": 2, "failed": 1}
    rows = read_worklist(out / "worklist.csv")
    assert [r["status"] for r in rows] == ["failed", "done", "done", "done"]  # the failed case needs a person first
    estimated = [float(r["estimated_dice"]) for r in rows[1:]]
    assert estimated == sorted(estimated)  # worst first
    assert "cannot read" in rows[0]["error"] and rows[0]["case"] == "broken"
    for row in rows[1:]:
        folder = out / row["report"].rsplit("/", 1)[0]
        summary = json.loads((folder / "summary.json").read_text())
        assert float(row["estimated_dice"]) == summary["quality"]["estimated_dice"]
        # one name, one meaning: the worklist's figure is the regions' sum, not the case feature over the margin
        regions = json.loads((folder / "regions.json").read_text())["regions"]
        in_regions = sum(r["expected_error_ml"] for r in regions)
        assert float(row["expected_wrong_in_regions_ml"]) == pytest.approx(in_regions, abs=1e-4)
        assert "expected_wrong_ml" not in row
        assert float(row["interval_90_low_ml"]) <= float(row["volume_ml"]) + 1e-3 or float(row["volume_ml"]) == 0
        assert (folder / "report.html").is_file() and (folder / "thumbnail.png").read_bytes()[:4] == b"\x89PNG"
        image, labels = read_volume(volumes / f"{row['case']}.nrrd"), read_volume(folder / "segmentation.nrrd")
        assert labels.geometry == image.geometry
    page = (out / "worklist.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3 and "cannot read" in page
    before = (out / "worklist.csv").read_text(encoding="utf-8")
    assert triage(volumes, out, quality_model, "cpu")["ran"] == 0  # nothing left to run
    assert (out / "worklist.csv").read_text(encoding="utf-8") == before


def test_report_content_and_errors(volumes, quality_model, tmp_path, capsys):
    source = sorted(volumes.glob("LIDC*.nrrd"))[0]
    run = tmp_path / "run"
    args = ["predict", "--input", str(source), "--output-dir", str(run), "--model", str(quality_model)]
    assert run_quietly(*args, "--fragility", "--report") == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    summary = json.loads((run / "summary.json").read_text())
    view = read_run(run)
    assert view.risk_name == "error_probability" and view.fragile is not None
    assert f"Estimated Dice <b>{summary['quality']['estimated_dice']:.2f}</b>" in page
    assert page.count("data:image/png;base64,") == min(len(view.regions), 3) + 1  # slices + the curve
    assert "<th>expected wrong voxels</th>" in page and f"{summary['fragility']['fragile_voxels']}" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched

    with pytest.raises(InputError, match=r"no summary\.json"):
        read_run(tmp_path)
    moved = tmp_path / "moved.nrrd"
    shutil.copyfile(source, moved)
    summary["input"]["path"] = str(tmp_path / "gone.nrrd")
    (run / "summary.json").write_text(json.dumps(summary))
    from SegUncertaintyLib.cli import main

    assert main(["report", "--run-dir", str(run), "--progress", "none"]) == 1
    assert "pass it with --input" in capsys.readouterr().err
    assert write_report(run, moved).is_file()
    # nothing segmented, nothing fragile, no region: all-zero outputs are results too
    from SegUncertaintyLib.io import write_volume

    empty = np.zeros(view.labels.shape, np.uint8)
    for name in ("segmentation.nrrd", "fragile.nrrd", "regions.nrrd"):
        write_volume(empty, view.image.geometry, run / name)
    (run / "regions.json").write_text(json.dumps({"regions": []}))
    page = write_report(run, moved).read_text(encoding="utf-8")
    assert "nothing segmented, no high-risk region" in page and "No voxel reaches the region threshold" in page
    other = sorted(volumes.glob("LIDC*.nrrd"))[1]
    if read_volume(other).geometry != read_volume(source).geometry:
        with pytest.raises(InputError, match="not on the grid"):
            write_report(run, other)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_the_report_renders_in_a_headless_browser(volumes, quality_model, tmp_path):
    browser = chromium()
    if browser is None:
        if os.environ.get("SEGUNCERTAINTY_REQUIRE_BROWSER"):
            pytest.fail("no chromium, but SEGUNCERTAINTY_REQUIRE_BROWSER is set (CI installs Debian's chromium)")
        pytest.skip("no chromium here (apt-get install chromium)")
    source = sorted(volumes.glob("LIDC*.nrrd"))[0]
    run = tmp_path / "run"
    args = ["predict", "--input", str(source), "--output-dir", str(run), "--model", str(quality_model), "--report"]
    assert run_quietly(*args) == 0
    shot = tmp_path / "report.png"
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600"]
    subprocess.run([*command, f"--screenshot={shot}", (run / "report.html").as_uri()], check=True,
                   capture_output=True)  # fmt: skip
    pixels = _png_pixels(shot)
    assert pixels.shape[:2] == (1600, 1200)
    # the slices drew: black panels, the segmentation's outline in the palette's (and Slicer's) colour, and the
    # page's white background
    rgb = pixels[..., :3].astype(int)
    assert (rgb.sum(-1) == 0).mean() > 0.02
    outline = np.abs(rgb - np.array(palette.class_colour(1)) * 255).max(-1) < 40
    assert outline.sum() > 20
    assert (rgb.min(-1) > 245).mean() > 0.4


def _png_pixels(path):
    import matplotlib.image

    return (matplotlib.image.imread(path) * 255).round().astype(np.uint8)
