"""The uncertainty methods, named once: how each runs, what it needs from a model package, what it writes.

Every front end takes its method names from here (the CLI's choices, the evaluation harness, the
Slicer module's menu), so they agree by construction. Plain Python, no torch: ``--help`` and the
Slicer module read it without loading the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ModelError


@dataclass(frozen=True)
class Method:
    """One uncertainty method.

    Attributes:
        name: the name users type (``--uncertainty``, ``--methods``).
        runs: ``"single"``: from the one backbone pass every single-pass method shares;
            ``"sampling"``: M whole-volume passes, summarised; ``"search"``: the fragility search, on
            top of a plain pass.
        needs: what the package must carry: ``"head"``, ``"dropout"`` (a dropout-trained backbone),
            ``"members"`` (an ensemble), ``"replay"`` (a replay set), ``"recalibration"`` (fitted
            temperature and vector scaling), or None.
        maps: the ``(k, j, i)`` maps it writes, by file stem (``error_probability`` only when the
            card gives the head's scale).
        scores: the maps evaluation scores for error detection (higher = more likely wrong).
        decomposition: role (``epistemic``, ``aleatoric``, ``total``) -> the map that plays it.
        summary: what it is, in a few words, for help texts.
    """

    name: str
    runs: str
    needs: str | None
    maps: tuple[str, ...]
    scores: tuple[str, ...]
    decomposition: dict[str, str] = field(default_factory=dict)
    summary: str = ""


_SAMPLE_MAPS = ("entropy", "expected_entropy", "mutual_information", "epkl")
_SAMPLED = {"epistemic": "mutual_information", "aleatoric": "expected_entropy", "total": "entropy"}
_SAMPLE_SCORES = ("entropy", "mutual_information", "epkl")

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "segwithu",
            "single",
            "head",
            ("calibration", "ranking", "epistemic", "aleatoric", "error_probability"),
            ("ranking",),
            {"epistemic": "epistemic", "aleatoric": "aleatoric"},
            "calibration and ranking maps from the model's head, same pass",
        ),
        Method("msp", "single", None, ("max_softmax",), ("max_softmax",), {}, "1 - max probability"),
        Method("entropy", "single", None, ("entropy",), ("entropy",), {"total": "entropy"}, "predictive entropy"),
        Method(
            "temperature",
            "single",
            "recalibration",
            ("max_softmax", "entropy"),
            ("max_softmax",),
            {},
            "temperature scaling fitted on held-out cases",
        ),
        Method(
            "vector-scaling",
            "single",
            "recalibration",
            ("max_softmax", "entropy"),
            ("max_softmax",),
            {},
            "vector (Platt) scaling fitted on held-out cases",
        ),
        Method("mc-dropout", "sampling", "dropout", _SAMPLE_MAPS, _SAMPLE_SCORES, _SAMPLED, "Monte Carlo dropout"),
        Method("tta", "sampling", None, _SAMPLE_MAPS, _SAMPLE_SCORES, _SAMPLED, "test-time flips"),
        Method("ensemble", "sampling", "members", _SAMPLE_MAPS, _SAMPLE_SCORES, _SAMPLED, "deep ensemble"),
        Method(
            "fragility",
            "search",
            "replay",
            ("fragility_total", "fragility_aleatoric", "fragility_epistemic", "flip_mass", "first_flip", "fragile"),
            ("flip_mass", "fragility_epistemic", "fragility_total"),
            {"epistemic": "fragility_epistemic", "aleatoric": "fragility_aleatoric", "total": "fragility_total"},
            "adversarial fragility search",
        ),
    )
}

SINGLE_PASS_METHODS = tuple(name for name, m in METHODS.items() if m.runs == "single" and m.needs is None)
SAMPLING_METHODS = tuple(name for name, m in METHODS.items() if m.runs == "sampling")
# what --uncertainty takes: the search is asked for with --fragility, on top of any of these
PREDICT_CHOICES = ("auto", *(name for name, m in METHODS.items() if m.runs != "search"), "none")
EVALUATION_METHODS = tuple(METHODS)


def method(name: str) -> Method:
    """The method called ``name``.

    Raises:
        ModelError: no method has that name.
    """
    if name not in METHODS:
        raise ModelError(f"unknown uncertainty method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[name]
