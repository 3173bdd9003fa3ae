#!/usr/bin/env bash
# One-command GPU check: on a machine with NVIDIA GPUs, runs in under 8 minutes and writes
# benchmarks/GPU_CHECK.md (digits demo GPU vs CPU, ViT-B/16 and ResNet-18 SimCLR throughput
# projected to the paper's CIFAR-10 schedule, faiss GPU vs CPU kNN, a 1-GPU DDP run).
#   scripts/gpu_check.sh                 # on the GPU machine; commit the report it writes
#   scripts/gpu_check.sh --dry-run       # the same control flow on a CPU, tiny sizes (CI)
# Extra arguments go to benchmarks/gpu_check.py (--report PATH, --work-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE="${WANDB_MODE:-offline}"
exec "${PYTHON:-python3}" -m benchmarks.gpu_check "$@"
