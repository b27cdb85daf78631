"""Case-level quality prediction on the LIDC test split: predicted Dice, per-case uncertainty scores, volume intervals.

    seguncertainty prepare-data lidc
    python benchmarks/quality_prediction.py [--limit N] [--sources ensemble,fragility] [--net-epochs 150]

Every case of the head-calibration split (fit) and of the test split (scored) is predicted once with
the bundled model and its head; the test cases with ``--sources`` also with the deep ensemble
(mutual information) and the fragility search. Targets: each case's Dice against the raters'
majority vote.

Tables: (1) the Dice predictors, fitted on the calibration split (R^2, Pearson r, Spearman rho, MAE,
AUROC for finding the cases with Dice < 0.7): the bundled ridge regression on single-pass features,
a random forest on the same features (not bundled: scikit-learn forests only serialise by
pickling), and the small network on (image, probability, error probability); (2) each per-case
uncertainty score alone and their rank average (no fitting); (3) the volume forecast of the
foreground, CRPS and 90 % interval coverage against the four raters' volumes. The ridge
regression, the network and the volume scale are the package's own (``train-quality`` fitted them
on the same calibration split) when it has them, else they are fitted here.
"""

import argparse
import time

import numpy as np
import torch

from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.quality.features import SOURCE_SCORES
from SegUncertaintyLib.quality.package import has_quality, load_quality
from SegUncertaintyLib.quality.predictor import LINEAR_FEATURES, feature_matrix, fit_linear, fit_net, predict_net
from SegUncertaintyLib.quality.training import (
    BAD_DICE,
    collect_records,
    prediction_scores,
    rank_aggregate,
    score_scores,
)
from SegUncertaintyLib.quality.volume import coverage, fit_scale, mean_crps


def row(name: str, scores: dict) -> str:
    cells = [scores.get(k, float("nan")) for k in ("r2", "pearson", "spearman", "mae", "auroc_bad")]
    return f"| {name} | " + " | ".join(f"{v:.3f}" for v in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="at most this many cases per split")
    parser.add_argument("--sources", default="ensemble,fragility", help="extra sources: ensemble, fragility")
    parser.add_argument("--net-epochs", type=int, default=150, help="when the package has no predictors yet")
    args = parser.parse_args()
    sources = [s for s in args.sources.split(",") if s]
    package = load_package("lidc-nodule")
    start = time.perf_counter()
    fit = collect_records(load_dataset_cases("lidc", "calibration", None, args.limit), package, "cpu")
    test = collect_records(load_dataset_cases("lidc", "test", None, args.limit), package, "cpu", sources)
    seconds = time.perf_counter() - start
    y_fit, y_test = np.array([r.dice for r in fit]), np.array([r.dice for r in test])
    print(f"{len(fit)} calibration / {len(test)} test cases; test Dice mean {y_test.mean():.3f}, "
          f"{(y_test < BAD_DICE).sum()} below {BAD_DICE}; collecting took {seconds:.0f} s\n")  # fmt: skip

    rows_fit, rows_test = [r.features for r in fit], [r.features for r in test]
    print("| predictor | R^2 | Pearson r | Spearman rho | MAE | AUROC (Dice < 0.7) |")
    print("|---|---|---|---|---|---|")
    if has_quality(package):  # the bundled predictors, fitted by train-quality on this calibration split
        linear, net, scale = load_quality(package)
        origin = "bundled"
    else:
        linear, scale = fit_linear(rows_fit, y_fit), None
        net = fit_net(torch.stack([r.net_input for r in fit]), y_fit, args.net_epochs)
        origin = f"fitted here, {args.net_epochs} epochs"
    predicted = linear.predict(rows_test)
    print(row(f"ridge on {len(LINEAR_FEATURES)} single-pass features ({origin})", prediction_scores(predicted, y_test)))
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(n_estimators=300, min_samples_leaf=3, random_state=0)
    forest.fit(feature_matrix(rows_fit, LINEAR_FEATURES), y_fit)
    predicted = forest.predict(feature_matrix(rows_test, LINEAR_FEATURES))
    print(row("random forest on the same features", prediction_scores(predicted, y_test)))
    predicted = predict_net(net, torch.stack([r.net_input for r in test]))
    print(row(f"network on image + probability + error probability ({origin})", prediction_scores(predicted, y_test)))
    print()

    print("| per-case score (higher = worse) | Spearman rho with Dice | AUROC (Dice < 0.7) |")
    print("|---|---|---|")
    columns = {}
    for name, feature in SOURCE_SCORES.items():
        if feature in test[0].features:
            columns[name] = np.array([r.features[feature] for r in test])
            s = score_scores(columns[name], y_test)
            print(f"| {name}: `{feature}` | {s['spearman']:.3f} | {s['auroc_bad']:.3f} |")
    single = [c for n, c in columns.items() if n not in ("ensemble MI", "fragility")]
    for label, chosen in (
        ("rank average, single-pass scores", single),
        ("rank average, every score", list(columns.values())),
    ):
        s = score_scores(rank_aggregate(chosen), y_test)
        print(f"| {label} ({len(chosen)}) | {s['spearman']:.3f} | {s['auroc_bad']:.3f} |")

    raters_fit, raters_test = [r.rater_volumes_ml for r in fit], [r.rater_volumes_ml for r in test]
    if scale is None:
        scale = fit_scale([r.volume for r in fit], raters_fit)
    print("\n| volume forecast (foreground) | CRPS vs raters (mL) | 90 % interval coverage of rater volumes |")
    print("|---|---|---|")
    for label, s in (("Poisson-binomial (independent voxels)", None), ("level-set half-width, scale 1", 1.0),
                     (f"level-set, scale fitted on calibration ({scale:.2f}; {origin})", scale)):  # fmt: skip
        forecasts = [r.volume.forecast(s) for r in test]
        print(f"| {label} | {mean_crps(forecasts, raters_test):.4f} | {coverage(forecasts, raters_test):.3f} |")


if __name__ == "__main__":
    main()
