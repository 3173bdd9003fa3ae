#!/usr/bin/env bash
# The feature-drift signals against the kNN AUROC of each epoch, on the Fashion-MNIST development
# split only (classes 0-5 normal, 6-9 OOD; 1,000 training images per class, true labels): recipes
# that make the features worse and recipes that make them better, so that a label-free guard can
# be chosen without touching the OOD sets of the reported splits. About 30 minutes on 2 cores.
# Usage: scripts/fmnist_guard_dev.sh [output folder]   (then: python -m benchmarks.drift_table <folder>)
set -euo pipefail
out=${1:-multirun_outputs/fmnist_guard_dev}
base=(dataset=fashion_mnist ood=fashion_mnist dataset.train_per_class=1000 logger=none
      plots.retrieval=false plots.embedding=false "paths.artifact_dir=$out/artifacts")
run() {  # name, overrides...
  local name=$1; shift
  python -m ood_nolabels.train "${base[@]}" "hydra.run.dir=$out/$name" "$@" > /dev/null
}
run dn2 +experiment=dn2_digits
ft=(+experiment=digits pseudo_labels=ground_truth)
run digits_recipe "${ft[@]}"
run fmnist_recipe "${ft[@]}" finetune=fashion_mnist
run fmnist_no_distill "${ft[@]}" finetune=fashion_mnist finetune.distill_weight=0
run fmnist_lr1e-3 "${ft[@]}" finetune=fashion_mnist finetune.optimizer.lr=1e-3
run lr5e-5 "${ft[@]}" finetune.optimizer.lr=5e-5 finetune.epochs=3
