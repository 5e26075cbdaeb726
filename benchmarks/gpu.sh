#!/usr/bin/env bash
# GPU packing benchmark (docs/performance.md, "GPU packing"): trials/hour of N = 1, 2, 4, 8 concurrent trials of
# one configuration on one NVIDIA GPU (how resources.gpu: 1/N packs a sweep), bf16 autocast off and on, with mean
# GPU utilisation and memory; about 6.5 minutes, killed at 470 s (the JSON keeps every cell finished by then).
# Needs torch with CUDA, NumPy, pydantic, PyYAML and packaging; no Ray, Optuna or MLflow, nothing downloaded.
#
# On a lent device machine (the project's `run` tool), from the repository root:
#   1. here, once (needs the registry; ~12 MiB, git-ignored):  python -m benchmarks._wheels download
#   2. run  command: bash benchmarks/gpu.sh
#           carry:   ["benchmarks/wheels"]
#           timeout_s: 540
#   The table is in the output; $OUT/gpu_benchmark.json and $OUT/gpu_benchmark.txt come back with the files.
# Arguments go to `python -m benchmarks.gpu` (e.g. --window-s 30, --concurrency 1,2,4, --amp bf16).
# Without a GPU, a smoke run: bash benchmarks/gpu.sh --device cpu --tiny --concurrency 1,2 --amp off
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3 || command -v python)}
DEVICE=cuda
case " $* " in *" --device cpu "* | *" --device=cpu "*) DEVICE=cpu ;; esac

if [[ $DEVICE == cuda ]] && ! command -v nvidia-smi >/dev/null; then
    echo "gpu.sh: no nvidia-smi: this benchmark needs a machine with an NVIDIA GPU." >&2
    echo "        For a smoke run on the CPU: bash benchmarks/gpu.sh --device cpu --tiny --concurrency 1,2 --amp off" >&2
    exit 2
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "gpu.sh: $("$PY" --version 2>&1) is too old: kdtune needs Python 3.11 or newer (set PYTHON=...)" >&2
    exit 2
}
if compgen -G "benchmarks/wheels/*.whl" >/dev/null; then
    SITE=$(mktemp -d)
    trap 'rm -rf "$SITE"' EXIT
    "$PY" -m benchmarks._wheels install benchmarks/wheels "$SITE"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" - "$DEVICE" <<'EOF' || exit 3
import importlib, sys

missing = []
for module in ("torch", "numpy", "yaml", "pydantic", "packaging"):
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - each problem named below
        missing.append(f"{module} ({type(err).__name__}: {err})")
if missing:
    print("gpu.sh: cannot import " + "; ".join(missing), file=sys.stderr)
    print("        torch and numpy must be installed; the others are carried: on a machine with the registry run\n"
          "        `python -m benchmarks._wheels download`, then carry benchmarks/wheels (run's carry option)",
          file=sys.stderr)
    sys.exit(1)
import torch

print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    print("gpu.sh: torch sees no CUDA device (a CPU-only torch build, or no driver)", file=sys.stderr)
    sys.exit(1)
EOF
OUTDIR=${OUT:-reports}
mkdir -p "$OUTDIR"
timeout 470 "$PY" -m benchmarks.gpu --out "$OUTDIR/gpu_benchmark.json" "$@" | tee "$OUTDIR/gpu_benchmark.txt"
