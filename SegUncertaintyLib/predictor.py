"""A model package loaded once on one device, for one case or many: what every front end predicts with.

A :class:`Predictor` is configured once (package, device, sampling passes, the search's settings)
and then called with volumes. Each network (backbone, head, locating network, ensemble members,
dropout backbone) and the fragility search (its replay set's trunk pass included) is built the
first time a method needs it and kept for every later case, so a batch pays each load once.

Entry points by level: :meth:`Predictor.predict` (a volume, one method) and :meth:`Predictor.search`
(the fragility search over a prediction); :func:`.pipeline.predict_to_files` takes a Predictor for
files and output folders; the windows below that are :mod:`.inference`'s.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator
from functools import cached_property

import numpy as np
import torch
from torch import nn

from .applicability import novelty_tap
from .baselines import check_available, sampling_windows, single_pass_map
from .errors import ModelError
from .fragility.config import FragilityConfig, QuamConfig, SearchConfig
from .fragility.quam import QuamSearch
from .fragility.replay import ReplaySet, load_replay
from .fragility.search import FragilityResult, FragilitySearch
from .inference import WindowFunction, predict_sampled, predict_volume, resolve_device
from .methods import PREDICT_CHOICES, SAMPLING_METHODS, SINGLE_PASS_METHODS
from .model.backbones import load_backbone
from .model.package import ModelPackage, load_package
from .predict_folder import QualityEstimate
from .prediction import Prediction
from .preprocess import normalize_intensities
from .progress import Progress
from .quality.estimate import estimate_quality
from .quality.package import load_quality
from .quality.predictor import LinearQuality, QualityNet
from .recalibration import RECALIBRATION_METHODS, recalibrate, scaling_of
from .roi import load_locator
from .segwithu.network import SegWithUHead
from .segwithu.package import has_head, load_head
from .volume import Volume


class Predictor:
    """Segment volumes with one model package on one device, loading each network once.

    Args:
        model: bundled model name, package folder, a loaded package, or None for the default model.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        samples: passes of ``mc-dropout`` (default 10) and ``tta`` (default 8).
        fragility: settings of the fragility search: a :class:`FragilityConfig` (the fast search, its
            defaults if None) or a :class:`QuamConfig` (the faithful QUAM-SM search).
    """

    def __init__(
        self,
        model: str | os.PathLike | ModelPackage | None = None,
        device: str | torch.device = "auto",
        samples: int | None = None,
        fragility: SearchConfig | None = None,
    ):
        self.package = model if isinstance(model, ModelPackage) else load_package(model)
        self.device = resolve_device(device)
        self.samples = samples
        self.fragility = fragility or FragilityConfig()
        self._windows: dict[str, list[WindowFunction]] = {}
        self._normalised: tuple[weakref.ref, weakref.ref, np.ndarray] | None = None

    def normalised(self, volume: Volume) -> np.ndarray:
        """``(k, j, i)`` float32: the volume's intensities normalised for the package, made once per volume.

        The volume's is kept while the volume lives (and no other volume is asked for), so that its
        prediction, search and quality estimate share it: a case is normalised once, not up to four
        times. A volume is the same when it is the same object holding the same array; an array
        changed in place in between is not detected.
        """
        cached = self._normalised
        if cached is not None and cached[0]() is volume and cached[1]() is volume.array:
            return cached[2]
        self._normalised = None  # the previous case's goes before this one's is made
        array = normalize_intensities(volume.array, self.package.card.normalization)

        def forget(_: weakref.ref) -> None:  # the volume is gone: so is its normalised image
            if self._normalised is not None and self._normalised[2] is array:
                self._normalised = None

        self._normalised = (weakref.ref(volume, forget), weakref.ref(volume.array), array)
        return array

    @cached_property
    def backbone(self) -> nn.Module:
        """The package's network, in eval mode, on the device."""
        return load_backbone(self.package, self.device).eval()

    @cached_property
    def head(self) -> SegWithUHead:
        """The package's SegWithU head, in eval mode, on the device."""
        return load_head(self.package, self.device)

    @cached_property
    def locator(self) -> nn.Module | None:
        """A two-stage card's locating network (see :mod:`.roi`), or None."""
        return load_locator(self.package, self.device)

    @cached_property
    def replay(self) -> ReplaySet:
        """The package's replay set for the fragility search."""
        return load_replay(self.package)

    @cached_property
    def quality(self) -> tuple[LinearQuality, QualityNet, float]:
        """The package's case-quality predictors (see :func:`.quality.package.load_quality`)."""
        return load_quality(self.package)

    @cached_property
    def searcher(self) -> FragilitySearch | QuamSearch:
        """The fragility search of the configured mode, its replay set's pass done once."""
        if isinstance(self.fragility, QuamConfig):
            return QuamSearch(self.package, self.backbone, self.replay, self.fragility, self.device)
        return FragilitySearch(self.package, self.backbone, self.replay, self.fragility, self.device)

    def windows(self, method: str) -> list[WindowFunction]:
        """One window function per pass of a sampling method, its networks loaded once."""
        if method not in self._windows:
            self._windows[method] = sampling_windows(method, self.package, self.device, self.samples)
        return self._windows[method]

    def resolve(self, uncertainty: str = "auto") -> str:
        """The method to run for a requested one (``auto``: ``segwithu`` when the package has a head, else ``none``).

        Raises:
            ModelError: an unknown method, or one the package cannot serve (no head, no members, ...).
        """
        if uncertainty not in PREDICT_CHOICES:
            raise ModelError(f"unknown uncertainty method {uncertainty!r}; use one of {', '.join(PREDICT_CHOICES)}")
        if uncertainty == "auto":
            return "segwithu" if has_head(self.package) else "none"
        if uncertainty == "segwithu" and not has_head(self.package):
            raise ModelError(
                f"model {self.package.card.name!r} has no uncertainty head; train one with seguncertainty train-head, "
                "or use another --uncertainty method"
            )
        if uncertainty in SAMPLING_METHODS and uncertainty not in self._windows:  # loaded windows passed it
            check_available(uncertainty, self.package, self.samples)
        if uncertainty in RECALIBRATION_METHODS:
            scaling_of(self.package, uncertainty)
        return uncertainty

    def predict(
        self,
        volume: Volume,
        method: str = "auto",
        keep_sample_labels: bool = False,
        progress: Progress | None = None,
    ) -> Prediction:
        """Segment ``volume`` with the uncertainty method ``method`` (see :meth:`resolve`).

        Args:
            volume: the input image, any grid; raw intensities (HU for CT).
            method: a name of :data:`.methods.PREDICT_CHOICES`.
            keep_sample_labels: for sampling methods, also keep every sample's ``(M, k, j, i)`` label map.
            progress: receives stages ``"preprocess"``, ``"inference"``, ``"resample"``.

        Returns:
            A :class:`.inference.Prediction` on the input grid whose ``maps`` are the method's maps.
        """
        method = self.resolve(method)
        if method in SAMPLING_METHODS:
            return predict_sampled(
                volume,
                self.package,
                self.windows(method),
                self.device,
                keep_sample_labels=keep_sample_labels,
                progress=progress,
                locator=self.locator,
                normalised=self.normalised(volume),
            )
        tap = novelty_tap(self.package) if "applicability" in self.package.card.extra else None  # same pass
        prediction = predict_volume(
            volume,
            self.package,
            network=self.backbone,
            head=self.head if method == "segwithu" else None,
            device=self.device,
            taps=[tap] if tap else (),
            progress=progress,
            locator=self.locator,
            normalised=self.normalised(volume),
        )
        if method in SINGLE_PASS_METHODS:
            prediction = prediction.with_maps(single_pass_map(method, prediction.probabilities))
        elif method in RECALIBRATION_METHODS:
            prediction = recalibrate(prediction, scaling_of(self.package, method))
        return prediction

    def predict_many(
        self, volumes: Iterable[Volume], method: str = "auto", progress: Progress | None = None
    ) -> Iterator[Prediction]:
        """:meth:`predict` for each volume in turn, as they come (the networks loaded once)."""
        for volume in volumes:
            yield self.predict(volume, method, progress=progress)

    def search(
        self,
        volume: Volume,
        prediction: Prediction,
        keep_sample_labels: bool = False,
        progress: Progress | None = None,
    ) -> FragilityResult:
        """The fragility search's maps for a prediction of ``volume`` made by any method.

        A prediction without backbone logits (a sampling method's) gets a plain backbone pass for
        the reference first.
        """
        normalised = self.normalised(volume)
        if prediction.logits is None:
            prediction = predict_volume(
                volume,
                self.package,
                network=self.backbone,
                device=self.device,
                locator=self.locator,
                normalised=normalised,
            )
        return self.searcher.run(volume, prediction, keep_sample_labels, progress, normalised)

    def estimate_quality(self, volume: Volume, prediction: Prediction) -> QualityEstimate:
        """The case's estimated quality from a prediction of ``volume`` made with the head
        (:func:`.quality.estimate.estimate_quality`; the package needs quality predictors)."""
        return estimate_quality(volume, prediction, self.package, self.quality, self.normalised(volume))
