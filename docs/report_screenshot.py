"""The README's picture of a case report: the bundled model on the demo volume, rendered by headless Chromium.

    apt-get install chromium
    python docs/report_screenshot.py [--output docs/report.png]

Runs ``predict --fragility --report`` on the bundled demo chest CT into a temporary folder and takes
a screenshot of ``report.html`` with Chromium's headless mode (the same way the test does).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from SegUncertaintyLib.cli import main as seguncertainty
from SegUncertaintyLib.resources import sample_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "report.png")
    parser.add_argument("--height", type=int, default=1150, help="window height in pixels")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as work:
        run = Path(work) / "demo"
        command = ["predict", "--input", str(sample_path("lidc-nodule-demo.nrrd")), "--output-dir", str(run)]
        if seguncertainty([*command, "--fragility", "--report", "--device", "cpu", "--progress", "none"]) != 0:
            raise SystemExit("predict failed")
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size=1100,{args.height}",
        ]
        subprocess.run([browser, *flags, f"--screenshot={args.output}", (run / "report.html").as_uri()], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
