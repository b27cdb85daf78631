"""``python -m SegUncertaintyLib ...`` is ``seguncertainty ...`` (how Slicer's module runs it in a child process)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
