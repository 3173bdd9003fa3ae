#!/usr/bin/env bash
# One-command GPU check: on a machine with NVIDIA GPUs, runs in under 8 minutes and writes
# benchmarks/GPU_CHECK.md, one section per step. What a green report proves:
#  - Environment: the torch / CUDA / faiss build sees the GPU and bf16.
#  - Digits demo: the whole method (4 stages, finetune, both scorers) runs on trainer=gpu in
#    bf16-mixed with no dtype or device error; its AUROCs are shown next to the fp32 CPU run's.
#  - ViT-B/16 finetune and ResNet-18 SimCLR steps: GPU throughput (both augmentation paths, the
#    batched kornia one on the GPU), projected to the paper's CIFAR-10 schedule.
#  - Exact kNN 50,000 x 10,000 x 768: faiss on the GPU returns the CPU's neighbours, and how fast.
#  - 1-GPU trainer=ddp: NCCL initialises, the DDP feature gathers and SimCLR's gathered negatives
#    work on CUDA tensors.
#  - Frozen-feature clustering on CLIP ViT-B/16 at CIFAR-10 scale: its time and memory on a GPU.
#  - kNN scorer on the GPU: the detector's own search path (faiss-gpu or torch) equals its CPU
#    result.
# What it cannot prove: more than one GPU or node (see scripts/multinode_rehearsal.py for the
# CPU rehearsal), real datasets and pretrained weights (the GPU machine has no internet).
#   scripts/gpu_check.sh                 # on the GPU machine; commit the report it writes
#   scripts/gpu_check.sh --dry-run       # the same control flow on a CPU, tiny sizes (CI)
# Extra arguments go to benchmarks/gpu_check.py (--report PATH, --work-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE="${WANDB_MODE:-offline}"
exec "${PYTHON:-python3}" -m benchmarks.gpu_check "$@"
