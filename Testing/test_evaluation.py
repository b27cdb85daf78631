"""seguncertainty evaluate on real LIDC cases with the bundled model: every method, every table and plot."""

import csv
import json

import numpy as np
import pytest

from SegUncertaintyLib.cli import main
from SegUncertaintyLib.data.lidc_dataset import load_cases
from SegUncertaintyLib.evaluation.harness import DECOMPOSITION, EVALUATION_METHODS, SCORES, score_case
from SegUncertaintyLib.inference import predict_volume

SMOKE_METHODS = ("segwithu", "fragility")  # the head (one pass) and the search (its own cost row)


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, lidc_cache):
    out = tmp_path_factory.mktemp("evaluation") / "results"
    args = ["evaluate", "--cache-dir", str(lidc_cache), "--limit", "2", "--samples", "2", "--output-dir", str(out)]
    assert main([*args, "--device", "cpu", "--progress", "none"]) == 0
    return out


def test_every_method_and_score_is_in_every_table(evaluation):
    summary = json.loads((evaluation / "summary.json").read_text())
    assert [row["method"] for row in summary["methods"]] == list(EVALUATION_METHODS)
    expected_scores = [(m, s) for m in EVALUATION_METHODS for s in SCORES[m]]
    assert [(row["method"], row["score"]) for row in summary["scores"]] == expected_scores
    for row in summary["methods"]:
        assert 0.5 < row["dice_majority"] <= 1 and 0 <= row["ece"] < 0.5 and row["volume_crps_ml"] >= 0
        assert 0 <= row["ace"] < 0.5 and 0 <= row["curvas_ece"] < row["ece"]  # every voxel: the easy background
        assert row["curvas_volume_crps_ml"] >= 0
        assert row["forward_passes"] == {"mc-dropout": 2, "tta": 2, "ensemble": 3}.get(row["method"], 1)
    for row in summary["scores"]:
        assert 0 <= row["eaurc_roi_pooled_x1000"] <= row["aurc_roi_pooled_x1000"]
        assert 0 < row["augrc_roi_pooled_x1000"] <= row["aurc_roi_pooled_x1000"]
        # flip mass is a sparse mask (zero off the few fragile voxels): only the dense maps must beat chance here
        assert 0.5 < row["auroc_roi_pooled"] <= 1 or (row["score"] == "flip_mass" and 0 <= row["auroc_roi_pooled"] <= 1)
    with open(evaluation / "per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(EVALUATION_METHODS)
    with open(evaluation / "scores.csv") as f:
        assert len(list(csv.DictReader(f))) == len(expected_scores)
    markdown = (evaluation / "results.md").read_text()
    assert all(f"| {m} |" in markdown for m in EVALUATION_METHODS)
    assert "| CURVAS ECE |" in markdown and "AUGRC×1000 roi (pooled)" in markdown
    # temperature scaling keeps the backbone's segmentation and recalibrates its probabilities
    rows = {row["method"]: row for row in summary["methods"]}
    assert rows["temperature"]["dice_majority"] == rows["msp"]["dice_majority"]
    assert rows["temperature"]["nll"] != rows["msp"]["nll"]


def test_variability_table_follows_each_decomposition(evaluation):
    summary = json.loads((evaluation / "summary.json").read_text())
    expected = [(m, role, name) for m in EVALUATION_METHODS for role, name in DECOMPOSITION.get(m, {}).items()]
    assert [(r["method"], r["role"], r["map"]) for r in summary["variability"]] == expected
    for row in summary["variability"]:
        for where in ("all", "roi"):
            assert -1 <= row[f"pcc_{where}"] <= 1 and row[f"r2_{where}"] <= 1 and 0 <= row[f"sdice_{where}"] <= 1
    # total = aleatoric + epistemic, so the total map tracks the raters at least as well as the epistemic one here
    fragility = {r["role"]: r for r in summary["variability"] if r["method"] == "fragility"}
    assert fragility["total"]["pcc_roi"] > fragility["epistemic"]["pcc_roi"] > 0
    assert "QUAM-SM protocol" in (evaluation / "results.md").read_text()
    with open(evaluation / "variability.csv") as f:
        assert len(list(csv.DictReader(f))) == len(expected)


def test_plots_are_real_png_images(evaluation):
    from matplotlib.image import imread

    for name in ("risk_coverage.png", "reliability.png"):
        image = imread(evaluation / name)
        assert image.shape[0] > 300 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_an_oracle_score_ranks_perfectly_and_a_constant_one_does_not(lidc_cache, bundled_package):
    case = load_cases("test", lidc_cache, limit=1)[0]
    prediction = predict_volume(case.volume, bundled_package, device="cpu")
    errors = (prediction.labels != case.majority).astype(np.float32)
    maps = {"oracle": errors, "constant": np.zeros_like(errors)}
    row, pooled, _ = score_case(
        case, prediction.labels, prediction.probabilities, maps, prediction.labels[None], ("oracle", "constant"), 3.0
    )
    assert errors.sum() > 0
    assert row["oracle/auroc_roi"] == 1.0 and row["oracle/auprc_roi"] == 1.0
    assert row["oracle/eaurc_roi"] == pytest.approx(0.0, abs=1e-12)
    assert row["constant/auroc_roi"] == 0.5
    assert row["constant/aurc_roi"] == pytest.approx(row["roi_error_rate"])
    assert row["sample_diversity"] == 0.0  # one deterministic segmentation
    assert pooled["oracle"][1].sum() == errors.sum()  # the roi keeps every error


def test_unknown_method_is_refused_before_any_work(tmp_path, capsys, lidc_cache):
    out = tmp_path / "out"
    args = ["evaluate", "--cache-dir", str(lidc_cache), "--methods", "msp,dropout", "--output-dir", str(out)]
    assert main([*args, "--progress", "none"]) == 1
    assert "unknown method 'dropout'" in capsys.readouterr().err
    assert not out.exists()


def test_compare_methods_quick_smoke_run(tmp_path, lidc_cache):
    """The benchmark's --quick mode runs end to end: both tables and the plot, in one process.

    Two methods on one case keep it small (each cost row is a fresh ``predict`` process);
    every method in every table is :func:`test_every_method_and_score_is_in_every_table`'s job.
    """
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = [
        sys.executable,
        "benchmarks/compare_methods.py",
        "--quick",
        "--limit",
        "1",
        "--methods",
        ",".join(SMOKE_METHODS),
        "--cache-dir",
        str(lidc_cache),
    ]
    result = subprocess.run(
        [*command, "--output-dir", str(tmp_path / "out")], cwd=root, capture_output=True, text=True
    )  # no timeout: a loaded machine may take many times longer, and no test depends on wall time
    assert result.returncode == 0, result.stderr[-2000:]
    assert "## Error detection by each uncertainty map" in result.stdout
    assert "### Cost per volume" in result.stdout
    cost_rows = [line for line in result.stdout.splitlines() if line.startswith("| demo ")]
    assert [row.split("|")[2].strip() for row in cost_rows] == ["none", *SMOKE_METHODS]
    assert (tmp_path / "out" / "risk_coverage.png").is_file()
