"""What the benchmark scripts share: the repository on the import path, and the common options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def add_model_and_data_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--split``, ``--cache-dir``, ``--limit`` and ``--device``."""
    parser.add_argument("--model", default="lidc-nodule", help="bundled model name or package folder")
    parser.add_argument("--split", default="test", help="LIDC split to evaluate on")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where prepare-data wrote the data set")
    parser.add_argument("--limit", type=int, default=None, help="only this many cases")
    parser.add_argument("--device", default="cpu")
