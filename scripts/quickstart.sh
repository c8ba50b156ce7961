#!/usr/bin/env bash
# Install Kiln in .venv, compile the bundled example for a Raspberry Pi 4 (rasp4b, aarch64),
# run the artifact under qemu-aarch64 and compare it with onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-system.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e .
.venv/bin/python -m kiln.examples out
.venv/bin/kiln compile out/example.onnx --target rasp4b -o out/example-rasp4b.tar.gz
.venv/bin/kiln run out/example-rasp4b.tar.gz --input x=out/x.npy --output out/y.npz
.venv/bin/python - <<'PY'
import numpy as np, onnxruntime as ort
y = np.load("out/y.npz")["logits"]
ref = ort.InferenceSession("out/example.onnx").run(None, {"x": np.load("out/x.npy")})[0]
print(f"rasp4b artifact vs onnxruntime: max abs error {np.abs(y - ref).max():.3g}")
PY
