"""Tables (Markdown, CSV, JSON) and plots (risk-coverage curves, reliability diagrams) of an :class:`Evaluation`."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cluster import ClusterSettings
from ..data.datasets import load_dataset_cases
from ..fragility.config import FragilityConfig, SearchConfig
from ..metrics import adaptive_calibration_error, augrc, aurc, auroc, average_precision, e_aurc, risk_coverage
from ..model.package import load_package
from ..outputs import StagedOutput
from ..progress import Progress
from .harness import DECOMPOSITION, EVALUATION_METHODS, SCORES, Evaluation, check_methods, evaluate_methods

# Per-method columns: (key, header, how the per-case values become one number)
METHOD_COLUMNS = [
    ("dice_majority", "Dice vs majority", "mean"),
    ("dice_raters", "Dice vs each rater", "mean"),
    ("dice_consensus", "Dice vs consensus", "mean"),
    ("soft_dice", "soft Dice", "mean"),
    ("ged", "GED²", "mean"),
    ("hm_iou", "HM-IoU", "mean"),
    ("volume_crps_ml", "volume CRPS (mL)", "mean"),
    ("curvas_volume_crps_ml", "CURVAS volume CRPS (mL)", "mean"),
    ("ece", "ECE roi", "pooled"),
    ("ace", "adaptive ECE roi", "pooled"),
    ("curvas_ece", "CURVAS ECE", "mean"),
    ("brier", "Brier roi", "roi-weighted"),
    ("nll", "NLL roi", "roi-weighted"),
]
SCORE_COLUMNS = [
    ("auroc_all", "AUROC all (per case)"),
    ("auprc_all", "AUPRC all (per case)"),
    ("auroc_roi", "AUROC roi (per case)"),
    ("auroc_roi_pooled", "AUROC roi (pooled)"),
    ("auprc_roi_pooled", "AUPRC roi (pooled)"),
    ("aurc_roi_pooled_x1000", "AURC×1000 roi (pooled)"),
    ("eaurc_roi_pooled_x1000", "E-AURC×1000 roi (pooled)"),
    ("augrc_roi_pooled_x1000", "AUGRC×1000 roi (pooled)"),
    ("ncc_roi", "NCC with rater disagreement"),
]


def _rows_of(evaluation: Evaluation, method: str) -> list[dict[str, Any]]:
    return [row for row in evaluation.case_rows if row["method"] == method]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def method_table(evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per method: the :data:`METHOD_COLUMNS`, forward passes and seconds per case."""
    table = []
    for method in evaluation.methods:
        rows = _rows_of(evaluation, method)
        with_roi = [r for r in rows if r["roi_voxels"] > 0]  # a case with nothing predicted or marked has no roi
        entry: dict[str, Any] = {"method": method}
        for key, _, how in METHOD_COLUMNS:
            if key == "ace":
                confidence, errors = evaluation.confidence[method].arrays()
                entry[key] = adaptive_calibration_error(confidence, ~errors)
            elif how == "pooled":
                entry[key] = evaluation.calibration[method].ece()
            elif how == "roi-weighted" and with_roi:
                entry[key] = float(np.average([r[key] for r in with_roi], weights=[r["roi_voxels"] for r in with_roi]))
            elif how == "roi-weighted":
                entry[key] = float("nan")
            else:
                entry[key] = _mean([r[key] for r in rows])
        entry["forward_passes"] = evaluation.forward_passes.get(method)
        entry["seconds_per_case"] = evaluation.seconds[method] / max(evaluation.cases, 1)
        table.append(entry)
    return table


def score_table(evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per (method, score): the :data:`SCORE_COLUMNS`."""
    table = []
    for method in evaluation.methods:
        rows = _rows_of(evaluation, method)
        for name in SCORES[method]:
            scores, errors = evaluation.pooled[(method, name)].arrays()
            table.append(
                {
                    "method": method,
                    "score": name,
                    "auroc_all": _mean([r[f"{name}/auroc_all"] for r in rows]),
                    "auprc_all": _mean([r[f"{name}/auprc_all"] for r in rows]),
                    "auroc_roi": _mean([r[f"{name}/auroc_roi"] for r in rows]),
                    "auroc_roi_pooled": auroc(scores, errors),
                    "auprc_roi_pooled": average_precision(scores, errors),
                    "aurc_roi_pooled_x1000": 1000 * aurc(scores, errors),
                    "eaurc_roi_pooled_x1000": 1000 * e_aurc(scores, errors),
                    "augrc_roi_pooled_x1000": 1000 * augrc(scores, errors),
                    "ncc_roi": _mean([r[f"{name}/ncc_roi"] for r in rows]),
                    "roi_error_rate": float(errors.mean()),
                }
            )
    return table


VARIABILITY_METRICS = [("pcc", "PCC"), ("r2", "R²"), ("sdice", "SDice")]


def variability_table(evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per (method, role) of :data:`DECOMPOSITION`: mean and std over cases of PCC, R², SDice (all, roi)."""
    table = []
    for method in evaluation.methods:
        rows = _rows_of(evaluation, method)
        for role, name in DECOMPOSITION.get(method, {}).items():
            entry: dict[str, Any] = {"method": method, "role": role, "map": name}
            for where in ("all", "roi"):
                for metric, _ in VARIABILITY_METRICS:
                    values = [r[f"{role}/{metric}_{where}"] for r in rows]
                    finite = [v for v in values if v is not None and not math.isnan(v)]
                    entry[f"{metric}_{where}"] = _mean(finite)
                    entry[f"{metric}_{where}_std"] = float(np.std(finite)) if finite else float("nan")
            table.append(entry)
    return table


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return "–" if value is None else str(value)


def markdown(evaluation: Evaluation, title: str) -> str:
    """Both tables as Markdown, with what the columns mean."""
    lines = [
        f"# {title}",
        "",
        f"{evaluation.cases} cases; reference = majority vote of the raters; roi = voxels within "
        f"{evaluation.margin_mm:g} mm of the method's segmentation or any rater's outline.",
        "",
        "## Segmentation, multi-rater and calibration metrics",
        "",
        "| method | " + " | ".join(h for _, h, _ in METHOD_COLUMNS) + " | forward passes | s/case |",
        "|---" * (len(METHOD_COLUMNS) + 3) + "|",
    ]
    for row in method_table(evaluation):
        cells = [_format(row[k]) for k, _, _ in METHOD_COLUMNS]
        cells += [_format(row["forward_passes"]), f"{row['seconds_per_case']:.2f}"]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Error detection by each uncertainty map (higher = more likely wrong)",
        "",
        "| method | score | " + " | ".join(h for _, h in SCORE_COLUMNS) + " |",
        "|---" * (len(SCORE_COLUMNS) + 2) + "|",
    ]
    for row in score_table(evaluation):
        lines.append(
            f"| {row['method']} | {row['score']} | " + " | ".join(_format(row[k]) for k, _ in SCORE_COLUMNS) + " |"
        )
    variability = variability_table(evaluation)
    if variability:
        headers = [f"{h} {where}" for where in ("all", "roi") for _, h in VARIABILITY_METRICS]
        lines += [
            "",
            "## Agreement with the raters' variability (QUAM-SM protocol, mean ± std over cases)",
            "",
            "| method | role | map | " + " | ".join(headers) + " |",
            "|---" * (len(headers) + 3) + "|",
        ]
        for row in variability:
            cells = [
                f"{_format(row[f'{m}_{where}'])} ± {_format(row[f'{m}_{where}_std'])}"
                for where in ("all", "roi")
                for m, _ in VARIABILITY_METRICS
            ]
            lines.append(f"| {row['method']} | {row['role']} | {row['map']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Variability map: binary entropy of the rater frequency in bits. PCC: Pearson r over voxels; R² = PCC²; "
        "SDice: soft Dice of the min-max normalised map and the variability map.",
        "",
        "Dice vs consensus: scored where all raters agree. GED²: V-statistic with d = 1 − IoU (one sample for "
        "single-pass methods). Volume CRPS: the method's sample volumes against each rater's volume, mean over "
        "raters. ECE: top-label, 15 equal-width bins, pooled roi voxels; adaptive ECE: the same with 15 "
        "equal-mass bins. CURVAS ECE: top-label, 50 bins, every voxel of the case (background included), "
        "against each rater, averaged. CURVAS volume CRPS: the soft volume against a Gaussian fitted to the "
        "raters' volumes, integrated over its mean ± 3 sd only (it saturates; comparison with the challenge "
        "only). AURC/E-AURC/AUGRC in raw units × 1000.",
        "",
    ]
    return "\n".join(lines)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _figure(size: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    return plt.subplots(figsize=size, dpi=120)


def _save(fig: Any, ax: Any, title: str, path: Path) -> None:
    from matplotlib import pyplot as plt

    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _style(evaluation: Evaluation, method: str, score_index: int) -> dict[str, Any]:
    # one colour per method, one line style per score of that method
    return {"color": f"C{evaluation.methods.index(method) % 10}", "linestyle": ("-", "--", ":")[score_index % 3]}


def plot_risk_coverage(evaluation: Evaluation, path: Path, points: int = 400) -> None:
    """Pooled roi risk-coverage curve of every (method, score), with the oracle of the first method."""
    fig, ax = _figure((7, 5))
    for (method, name), pooled in evaluation.pooled.items():
        scores, errors = pooled.arrays()
        coverage, risk = risk_coverage(scores, errors)
        keep = np.unique(np.linspace(0, coverage.size - 1, points).astype(int))
        label = f"{method} · {name} (AURC×1000 {1000 * risk.mean():.2f})"
        ax.plot(coverage[keep], risk[keep], label=label, **_style(evaluation, method, SCORES[method].index(name)))
    ax.set_xlabel("coverage (fraction of roi voxels kept, most certain first)")
    ax.set_ylabel("risk (error rate among kept voxels)")
    _save(fig, ax, f"Risk-coverage, {evaluation.cases} cases, roi {evaluation.margin_mm:g} mm", path)


def plot_reliability(evaluation: Evaluation, path: Path) -> None:
    """Top-label reliability diagram (accuracy vs confidence per bin, pooled roi voxels) of every method."""
    fig, ax = _figure((6, 5.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for method, bins in evaluation.calibration.items():
        confidence, accuracy, _ = bins.curve()
        label = f"{method} (ECE {bins.ece():.4f})"
        ax.plot(confidence, accuracy, marker="o", markersize=3, label=label, **_style(evaluation, method, 0))
    ax.set_xlabel("confidence (probability of the predicted class)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.5 if _binary(evaluation) else 0.0, 1.0)
    _save(fig, ax, f"Reliability, {evaluation.cases} cases, roi voxels", path)


def _binary(evaluation: Evaluation) -> bool:
    # with two classes the top-label confidence is never below 0.5
    return all(bins.count[: bins.bins // 2].sum() == 0 for bins in evaluation.calibration.values())


def plots_available() -> bool:
    """Whether matplotlib is installed (a dependency; a broken install may lack it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_report(
    evaluation: Evaluation, stage: Callable[[str], Path], title: str, plots: bool = True
) -> dict[str, Any]:
    """Write ``results.md``, ``methods.csv``, ``scores.csv``, ``per_case.csv`` and the plots.

    Args:
        evaluation: what :func:`.harness.evaluate_methods` measured.
        stage: file name -> path to write it to (e.g. :meth:`StagedOutput.stage`).
        title: heading of ``results.md``.
        plots: also draw ``risk_coverage.png`` and ``reliability.png``.

    Returns:
        The summary: file names and both tables (JSON-safe: NaN becomes null).
    """
    methods, scores, variability = method_table(evaluation), score_table(evaluation), variability_table(evaluation)
    stage("results.md").write_text(markdown(evaluation, title))
    _write_csv(methods, stage("methods.csv"))
    _write_csv(scores, stage("scores.csv"))
    _write_csv(evaluation.case_rows, stage("per_case.csv"))
    files = {"markdown": "results.md", "methods": "methods.csv", "scores": "scores.csv", "per_case": "per_case.csv"}
    if variability:
        _write_csv(variability, stage("variability.csv"))
        files["variability"] = "variability.csv"
    if plots:
        plot_risk_coverage(evaluation, stage("risk_coverage.png"))
        plot_reliability(evaluation, stage("reliability.png"))
        files.update(risk_coverage="risk_coverage.png", reliability="reliability.png")
    return _json_safe(
        {
            "files": files,
            "cases": evaluation.cases,
            "margin_mm": evaluation.margin_mm,
            "methods": methods,
            "scores": scores,
            "variability": variability,
        }
    )


def evaluate_to_files(
    output_dir: str | Path,
    data: str = "lidc",
    split: str = "test",
    methods: Sequence[str] = EVALUATION_METHODS,
    model: str | Path | None = None,
    cache_dir: Path | None = None,
    limit: int | None = None,
    samples: int | None = None,
    margin_mm: float = 3.0,
    device: str = "auto",
    progress: Progress | None = None,
    fragility: SearchConfig | None = None,
    cluster: ClusterSettings | None = None,
) -> dict[str, Any]:
    """What ``seguncertainty evaluate`` does: run the methods over a split and write the report.

    With ``cluster``, the cases run on Dask (:func:`.harness.evaluate_methods`); the figures are the same.

    The output folder gets ``results.md``, ``methods.csv``, ``scores.csv``, ``per_case.csv``, the
    plots (when matplotlib is installed) and ``summary.json``, all at once or not at all.

    Returns:
        The summary (also written as ``summary.json``), with ``output_dir``.
    """
    package = load_package(model)
    methods = check_methods(methods, package, samples)
    cases = load_dataset_cases(data, split, cache_dir, limit)
    with StagedOutput(output_dir) as out:
        evaluation = evaluate_methods(cases, package, methods, device, samples, margin_mm, progress, fragility, cluster)
        title = f"{package.card.name} on {data} {split}: {', '.join(methods)}"
        plots = plots_available()
        summary = write_report(evaluation, out.stage, title, plots=plots)
        summary.update(model=package.card.name, data=data, split=split, samples=samples)
        if "fragility" in methods:
            summary["fragility"] = (fragility or FragilityConfig()).to_dict()
        if not plots:
            summary["plots_skipped"] = "matplotlib is not installed: pip install matplotlib"
        out.commit(summary)
    summary["output_dir"] = str(Path(output_dir).resolve())
    return summary
