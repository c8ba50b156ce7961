#!/usr/bin/env bash
# Kiln on an NVIDIA GPU in one go (see bench/gpu_check.py and docs/gpu.md):
#
#   scripts/gpu-check.sh                      # a GPU machine with network: install, build, run
#   scripts/gpu-check.sh --build-only --arch sm_90 --out gpu-artifacts     # build host, no GPU
#   scripts/gpu-check.sh --artifacts gpu-artifacts                         # offline GPU machine
#
# It makes .venv-gpu (with the system's packages visible, so a preinstalled PyTorch and ONNX
# Runtime are used), installs Kiln with its cuda extra and what the check needs with pip, and
# runs bench/gpu_check.py. Each step reports its own failure and the check goes on; results go
# to bench/results/<date>-gpu-<arch>.json. Environment: PYTHON (default python3),
# KILN_GPU_VENV (default .venv-gpu), KILN_GPU_INSTALL_TORCH=1 to pip install torch if missing,
# KILN_GPU_TUNE_SECONDS (default 300; 0 = none): MetaSchedule tuning of ResNet-50 float16 on the
# GPU, then untuned vs tuned latency in the JSON. Tuning needs the compiler on the GPU host, so
# an offline run (--artifacts) skips it with a note.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${KILN_GPU_VENV:-.venv-gpu}

step() { echo "== $*" >&2; }
warn() { echo "!! $*" >&2; }

step "GPU"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv || warn "nvidia-smi failed"
else
  warn "nvidia-smi not found: no NVIDIA driver here (fine with --build-only)"
fi

step "virtualenv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV" || { warn "cannot create $VENV"; exit 3; }
fi
PY="$VENV/bin/python"
"$PY" -m pip --version >/dev/null 2>&1 || { warn "no pip in $VENV"; exit 3; }

offline=0
for a in "$@"; do [ "$a" = "--artifacts" ] && offline=1; done
if [ "$offline" = 1 ]; then
  # running artifacts needs only numpy (and onnx/onnxruntime for the comparison): the
  # artifacts carry their runtime; Kiln's sources are used in place (bench/gpu_check.py)
  step "offline run: no Kiln install"
  "$PY" -c "import numpy, onnx, onnxruntime" 2>/dev/null || \
    "$PY" -m pip install numpy onnx onnxruntime || warn "numpy/onnx/onnxruntime missing"
else
  extras="cuda"
  [ "${KILN_GPU_TUNE_SECONDS:-300}" != 0 ] && extras="cuda,tune"   # tuning: xgboost & co
  step "pip install -e .[$extras] onnx"
  "$PY" -m pip install -q -e ".[$extras]" onnx || warn "installing Kiln failed"
  if ! "$PY" -c "import onnxruntime" 2>/dev/null; then
    step "onnxruntime (GPU build if pip has one, else CPU)"
    "$PY" -m pip install -q onnxruntime-gpu || "$PY" -m pip install -q onnxruntime || \
      warn "no onnxruntime: the comparison stages will fail"
  fi
  if ! "$PY" -c "import torch" 2>/dev/null; then
    if [ "${KILN_GPU_INSTALL_TORCH:-0}" = 1 ]; then
      "$PY" -m pip install -q torch || warn "installing torch failed"
    else
      warn "no torch: the PyTorch eager column is skipped (KILN_GPU_INSTALL_TORCH=1 installs it)"
    fi
  fi
fi

step "bench/gpu_check.py $*"
"$PY" bench/gpu_check.py "$@"
status=$?
step "done (exit status $status)"
exit $status
