"""The guarantees on the LIDC test split: realised risk against alpha, workload, triage, volume coverage.

    seguncertainty prepare-data lidc
    python benchmarks/conformal_guarantees.py [--limit N] [--resplits 100] [--cache FILE]

Every case of the head-calibration split and of the test split is predicted once with the bundled
model and its head (:func:`SegUncertaintyLib.quality.training.record_of` gives each case's loss
curves, volume evidence and features); for each test case the review workload (regions, mL) is
measured at every candidate threshold with the regions predict writes. ``--cache`` keeps these
figures, so the tables can be rerun without predicting again.

Two evaluations:

1. **On the head's own training cases**: the guarantees fitted on the head-calibration split,
   realised on the 178 test cases. The head was trained on those calibration cases, so their
   error probabilities are in-sample: this row shows what that costs.
2. **The package's fit**, as ``train-quality`` stores it: fitted on the test split's
   ``conformal_half``, realised on its other half; the triage bound from the calibration split's
   cross-validated estimates.
3. **Re-splits**: the test split's patients drawn at random into two halves, 100 times; the
   guarantees fitted on one half (whose cases neither the backbone nor the head saw), realised on
   the other. The guarantee is on the mean over new cases, so the mean over re-splits is what must
   stay at or below alpha.

The triage bound is fitted on the estimated Dice of the bundled ridge (cross-validated estimates on
the calibration split for rows 1 and 2; the ridge's own, out-of-sample, estimates on the test split
for the re-splits).
"""

import argparse
import time
from pathlib import Path

import numpy as np

from SegUncertaintyLib.conformal import RiskCurve, conformal_scale
from SegUncertaintyLib.data.datasets import load_dataset_cases
from SegUncertaintyLib.guarantees import RISK_THRESHOLDS, VOLUME_COVERAGE, conformal_half, volume_scores
from SegUncertaintyLib.model.package import load_package
from SegUncertaintyLib.predict_folder import review_regions
from SegUncertaintyLib.predictor import Predictor
from SegUncertaintyLib.quality.package import load_quality
from SegUncertaintyLib.quality.training import BAD_DICE, cross_validated_estimates, record_of, triage_rule
from SegUncertaintyLib.quality.volume import VolumeEvidence, share_inside
from SegUncertaintyLib.review.regions import DEFAULT_THRESHOLD

ALPHAS = (0.05, 0.1, 0.2)
DELTAS = (0.03, 0.05, 0.1)
EPSILON = 0.1
# the workload is measured at every candidate threshold, and at today's fixed one
WORKLOAD = np.array(sorted({*RISK_THRESHOLDS.tolist(), DEFAULT_THRESHOLD}))


def collect(split: str, limit: int | None, predictor: Predictor, package) -> dict[str, np.ndarray]:
    cases = load_dataset_cases("lidc", split, None, limit)
    rows: dict[str, list] = {k: [] for k in ("patient", "dice", "missed_errors", "missed_structure",
                                             "volume", "raters", "features", "regions", "region_ml")}  # fmt: skip
    for n, case in enumerate(cases):
        volume = case.volume
        prediction = predictor.predict(volume, "segwithu")
        record = record_of(case, prediction, package, normalised=predictor.normalised(volume))
        rows["patient"].append(case.patient_id)
        rows["dice"].append(record.dice)
        rows["missed_errors"].append(record.missed_errors)
        rows["missed_structure"].append(record.missed_structure)
        v = record.volume
        rows["volume"].append([v.mean_ml, v.half_width_ml, v.poisson_sd_ml, v.voxel_ml])
        rows["raters"].append(record.rater_volumes_ml)
        rows["features"].append(record.features)
        if split == "test":
            found = [review_regions(prediction, float(t))[1]["regions"] for t in WORKLOAD]
            rows["regions"].append([len(r) for r in found])
            rows["region_ml"].append([sum(x["volume_ml"] for x in r) for r in found])
        print(f"\r{split} {n + 1}/{len(cases)}", end="", flush=True)
    print()
    return {k: np.asarray(v) if k != "features" else np.asarray(v, dtype=object) for k, v in rows.items()}


def evidence(row: np.ndarray) -> VolumeEvidence:
    return VolumeEvidence(*map(float, row))


def realised(fit: dict, test: dict, fit_estimates: np.ndarray, test_estimates: np.ndarray) -> dict:
    """Fit every guarantee on ``fit``, measure it on ``test``."""
    out = {}
    for alpha in ALPHAS:
        for name in ("missed_errors", "missed_structure"):
            control = RiskCurve.fit(fit[name], RISK_THRESHOLDS).control(alpha)
            if control is None:
                out[(name, alpha)] = None
                continue
            j = int(np.searchsorted(RISK_THRESHOLDS, control.threshold))
            entry = {"threshold": control.threshold, "missed": float(test[name][:, j].mean())}
            if name == "missed_errors" and "regions" in test:
                w = int(np.searchsorted(WORKLOAD, control.threshold))
                assert WORKLOAD[w] == control.threshold, "the workload grid must hold every guaranteed threshold"
                entry["regions"] = float(test["regions"][:, w].mean())
                entry["ml"] = float(test["region_ml"][:, w].mean())
            out[(name, alpha)] = entry
    pairs = zip(fit["volume"], fit["raters"], strict=True)
    scale = conformal_scale(np.stack([volume_scores(evidence(v), r) for v, r in pairs]), VOLUME_COVERAGE)
    out["volume"] = None
    if scale is not None:
        intervals = [evidence(v).conformal_interval(scale) for v in test["volume"]]
        out["volume"] = {"scale": scale, "coverage": share_inside(intervals, test["raters"])}
    for delta in DELTAS:
        _, bound = triage_rule(fit_estimates, fit["dice"], delta, EPSILON)
        if bound is None:
            out[("triage", delta)] = None
            continue
        accepted = test_estimates >= bound.accept_from
        bad = test["dice"] < BAD_DICE
        out[("triage", delta)] = {
            "accept_from": bound.accept_from,
            "review": float((~accepted).mean()),
            "bad_accepted": float(bad[accepted].mean()) if accepted.any() else 0.0,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="at most this many cases per split")
    parser.add_argument("--resplits", type=int, default=100)
    parser.add_argument(
        "--cache", type=Path, default=None, help="an .npz of the collected figures (read, else written)"
    )
    args = parser.parse_args()
    package = load_package("lidc-nodule")
    linear, _, _ = load_quality(package)
    if args.cache is not None and args.cache.is_file():
        data = np.load(args.cache, allow_pickle=False)
        splits = {
            s: {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(s + "/")}
            for s in ("calibration", "test")
        }
    else:
        start = time.perf_counter()
        predictor = Predictor(package, "cpu")
        splits = {s: collect(s, args.limit, predictor, package) for s in ("calibration", "test")}
        print(f"collected in {time.perf_counter() - start:.0f} s")
        calibration, test = splits["calibration"], splits["test"]
        calibration["estimated"] = cross_validated_estimates(
            list(calibration["features"]), calibration["dice"], linear.alpha
        )
        test["estimated"] = linear.predict(list(test["features"]))
        for s in splits.values():
            del s["features"]
        if args.cache is not None:
            np.savez(args.cache, **{f"{s}/{k}": v for s, d in splits.items() for k, v in d.items()})
    calibration, test = splits["calibration"], splits["test"]
    print(f"{len(calibration['dice'])} calibration / {len(test['dice'])} test cases")
    report(
        "fitted on the head-calibration split (the head's own training cases) -> test split",
        [realised(calibration, test, calibration["estimated"], test["estimated"])],
    )
    half = conformal_half(list(test["patient"]))
    a, b = ({k: v[m] for k, v in test.items()} for m in (half, ~half))
    package_fit = realised(a, b, a["estimated"], b["estimated"])
    triage_fit = realised(calibration, b, calibration["estimated"], b["estimated"])  # the package's triage
    package_fit.update({key: value for key, value in triage_fit.items() if key[0] == "triage"})
    report(
        f"the package's fit: the test split's conformal half ({half.sum()} cases) -> its other half "
        f"({(~half).sum()}); triage from the calibration split",
        [package_fit],
    )
    rng = np.random.default_rng(0)
    patients = np.unique(test["patient"])
    runs = []
    for _ in range(args.resplits):
        chosen = set(rng.permutation(patients)[: len(patients) // 2])
        half = np.array([p in chosen for p in test["patient"]])
        a, b = ({k: v[m] for k, v in test.items()} for m in (half, ~half))
        runs.append(realised(a, b, a["estimated"], b["estimated"]))
    report(f"{args.resplits} re-splits of the test split by patient (half / half)", runs)
    fixed = int(np.searchsorted(WORKLOAD, DEFAULT_THRESHOLD))
    print(
        f"\ntoday's fixed threshold {DEFAULT_THRESHOLD}: missed errors "
        f"{test['missed_errors'][:, int(np.argmin(np.abs(RISK_THRESHOLDS - DEFAULT_THRESHOLD)))].mean():.4f}, "
        f"{test['regions'][:, fixed].mean():.2f} regions, {test['region_ml'][:, fixed].mean():.3f} mL per test case"
    )


def _stat(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if values else "–"


def report(title: str, runs: list[dict]) -> None:
    print(f"\n### {title}\n")
    print("| guarantee | alpha | threshold | realised | above alpha | regions / case | mL / case |")
    print("|---|---|---|---|---|---|---|")
    for name, label in (
        ("missed_errors", "errors left unreviewed"),
        ("missed_structure", "structure outside the outline"),
    ):
        for alpha in ALPHAS:
            entries = [r[(name, alpha)] for r in runs if r[(name, alpha)] is not None]
            if not entries:
                print(f"| {label} | {alpha} | none | | | | |")
                continue
            above = np.mean([e["missed"] > alpha for e in entries])
            workload = (
                [_stat([e.get("regions") for e in entries]), _stat([e.get("ml") for e in entries])]
                if name == "missed_errors"
                else ["", ""]
            )
            cells = [label, alpha, _stat([e["threshold"] for e in entries]), _stat([e["missed"] for e in entries])]
            print("| " + " | ".join(map(str, [*cells, f"{above:.0%}", *workload])) + " |")
    volume = [r["volume"] for r in runs if r["volume"] is not None]
    print(
        f"\nvolume interval ({VOLUME_COVERAGE:.0%} conformal): scale {_stat([v['scale'] for v in volume])}, "
        f"coverage of the raters' volumes {_stat([v['coverage'] for v in volume])}"
    )
    print("\n| triage delta | epsilon | accept from | sent to review | bad among accepted | runs above delta |")
    print("|---|---|---|---|---|---|")
    for delta in DELTAS:
        entries = [r[("triage", delta)] for r in runs if r[("triage", delta)] is not None]
        none = len(runs) - len(entries)
        if not entries:
            print(f"| {delta} | {EPSILON} | none | | | |")
            continue
        above = np.mean([e["bad_accepted"] > delta for e in entries])
        cells = [delta, EPSILON, *(_stat([e[k] for e in entries]) for k in ("accept_from", "review", "bad_accepted"))]
        print("| " + " | ".join(map(str, cells)) + f" | {above:.0%}{f' ({none} runs: none)' if none else ''} |")


if __name__ == "__main__":
    main()
