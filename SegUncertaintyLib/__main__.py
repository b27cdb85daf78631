"""``python -m SegUncertaintyLib ...`` is ``seguncertainty ...`` (how Slicer's module runs it in a child process)."""

from .cli import run

if __name__ == "__main__":
    run()
