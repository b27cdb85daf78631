"""Extra backbones a model package carries for the sampling baselines (deep ensemble, MC dropout).

A package may hold complete model packages in ``members/<name>/``, trained with the same recipe
(``seguncertainty train-backbone --output <package>/members/<name> --seed N`` or ``--dropout P``).
The deep ensemble is the package's own backbone plus every member without dropout; MC dropout
uses the first backbone (the package's own, then the members by name) that was trained with dropout.
"""

from __future__ import annotations

from ..errors import ModelError
from .package import ModelPackage, load_package

MEMBERS_DIR = "members"


def member_packages(package: ModelPackage) -> list[ModelPackage]:
    """The packages in ``<package>/members/``, by folder name, each checked to preprocess like ``package``."""
    root = package.path / MEMBERS_DIR
    if not root.is_dir():
        return []
    members = [load_package(folder) for folder in sorted(root.iterdir()) if (folder / "model.json").is_file()]
    for member in members:
        check_same_preprocessing(package, member)
    return members


def check_same_preprocessing(package: ModelPackage, member: ModelPackage) -> None:
    """Members share one preprocessed image and one output grid, so these must match exactly."""
    a, b = package.card, member.card
    for field in ("classes", "in_channels", "target_spacing_mm", "patch_size", "normalization"):
        if getattr(a, field) != getattr(b, field):
            raise ModelError(
                f"member {b.name!r} of model {a.name!r} differs in {field} "
                f"({getattr(b, field)!r} vs {getattr(a, field)!r}); members must be trained with the same recipe"
            )


def dropout_rate(package: ModelPackage) -> float:
    """The dropout probability the package's backbone was trained with (0 without dropout)."""
    return float(package.card.architecture.get("args", {}).get("dropout") or 0.0)


def ensemble_packages(package: ModelPackage) -> list[ModelPackage]:
    """The deep ensemble: the package itself and its members without dropout; at least two."""
    ensemble = [package] + [m for m in member_packages(package) if dropout_rate(m) == 0.0]
    if len(ensemble) < 2:
        raise ModelError(
            f"model {package.card.name!r} has no ensemble members; train some with "
            f"seguncertainty train-backbone --seed N --output {package.path / MEMBERS_DIR}/seed-N"
        )
    return ensemble


def dropout_package(package: ModelPackage) -> ModelPackage:
    """The backbone MC dropout samples: the package's own if trained with dropout, else the first such member."""
    for candidate in [package, *member_packages(package)]:
        if dropout_rate(candidate) > 0.0:
            return candidate
    raise ModelError(
        f"model {package.card.name!r} has no backbone trained with dropout; train one with "
        f"seguncertainty train-backbone --dropout 0.1 --output {package.path / MEMBERS_DIR}/dropout"
    )
