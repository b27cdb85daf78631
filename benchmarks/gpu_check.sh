#!/usr/bin/env bash
# The GPU check: in one short run on CUDA (well under 8 minutes on one GPU), the demo, the CT-sized
# volume (512 x 512 x 300 at 0.7 x 0.7 x 1.25 mm, benchmarks/volumes.py) with the head, and with the
# fragility search; prints each run's wall time, inference time and peak GPU memory.
#
# Usage (from the repository root, with the project installed):  bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python - <<'EOF'
import json, subprocess, sys, tempfile, time
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
from volumes import write_input

if not torch.cuda.is_available():
    sys.exit("gpu_check: PyTorch sees no CUDA GPU here")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
RUNS = [("demo", "demo", []), ("CT-sized, head", "ct", []), ("CT-sized, head + fragility", "ct", ["--fragility"])]
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for label, volume, extra in RUNS:
        path, out = write_input(volume, Path(tmp)), Path(tmp) / "out"
        command = [sys.executable, "-m", "SegUncertaintyLib.cli", "predict", "--input", str(path),
                   "--output-dir", str(out), "--device", "cuda", "--progress", "none", *extra]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - started
        summary = json.loads((out / "summary.json").read_text())
        rows.append((label, wall, summary["timings_s"], summary.get("peak_gpu_memory_mb")))
        print(rows[-1], flush=True)
print("\n| run | wall (s) | inference (s) | fragility (s) | peak GPU memory (MiB) |\n|---|---|---|---|---|")
for label, wall, timings, gpu in rows:
    print(f"| {label} | {wall:.1f} | {timings.get('inference', 0):.1f} | {timings.get('fragility', 0):.1f} | {gpu} |")
EOF
