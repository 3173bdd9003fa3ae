#!/usr/bin/env bash
# The Fashion-MNIST protocol of docs/fashion-mnist.md: the three reported class splits (the first
# six classes of numpy.random.default_rng(s).permutation(10), s = 1, 2, 3; never used to choose a
# setting), seeds 0, 1, 2, all 36,000 normal training images: the method, DN2, the SCAN-features
# baseline and ground-truth-label finetuning, then one table per split (mean ± std over seeds)
# and the targets of every split in $OUT/targets.md, targets_mahalanobis.md
# (scripts/fashion_mnist_targets.py).
#
# Seed-major: seed 0 on every split first, so an unfinished run already covers every split. About
# 30 min per (seed, split) on 2 cores, 4.5 hours in all. Stages shared between presets train
# once. Interrupted: run the same command again; a (seed, split) whose four runs finished with
# the same package code and arguments is skipped (its .complete file says so), any other is run
# again from the cached stages. The tables are rewritten after each (seed, split).
# SPLITS="1" / SEEDS="0" restrict it; PER_CLASS=500 is the small variant (about 25 min a split);
# arguments are more overrides for every run.
set -euo pipefail
PYTHON=${PYTHON:-python}
SWEEP=${SWEEP:-multirun_outputs/results/fashion_mnist}
OUT=${OUT:-docs/results/fashion_mnist}
SPLITS=${SPLITS:-1 2 3}
SEEDS=${SEEDS:-0 1 2}
PER_CLASS=${PER_CLASS:-null}
if [[ ! -d ood_nolabels ]]; then
    echo "error: no ood_nolabels/ in $PWD; run this script from the repository root" >&2
    exit 2
fi
# every step imports this checkout's package (the code the stamp hashes), not whichever
# checkout pip's editable install points at
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
declare -A CLASSES=([1]="[0,1,2,4,7,8]" [2]="[0,2,5,6,7,9]" [3]="[0,1,2,4,6,9]")
# the package's code and configs, committed or not (no git needed: a tarball works too)
code=$(find ood_nolabels -type f \( -name '*.py' -o -name '*.yaml' \) -print0 | LC_ALL=C sort -z |
    xargs -0 sha1sum | sha1sum | cut -c1-40)
mkdir -p "$OUT"
for seed in $SEEDS; do
    for split in $SPLITS; do
        dir="$SWEEP/split$split/seed$seed"
        stamp="$code classes=${CLASSES[$split]} per_class=$PER_CLASS seed=$seed $*"
        if [[ -f "$dir/.complete" && "$(cat "$dir/.complete")" == "$stamp" ]]; then
            echo "split $split seed $seed: done with this code, skipped ($dir)"
            continue
        fi
        rm -rf "$dir"  # results of other code or arguments would be stale
        "$PYTHON" -m ood_nolabels.train -m \
            +experiment=fmnist_dn2,fmnist,fmnist_ground_truth,fmnist_scan_features \
            "++dataset.classes=${CLASSES[$split]}" "++dataset.train_per_class=$PER_CLASS" \
            seed="$seed" logger=csv hydra.sweep.dir="$dir" "$@"
        echo "$stamp" > "$dir/.complete"
        "$PYTHON" -m ood_nolabels.results "$SWEEP/split$split" --over seed \
            --output "$OUT/split$split"
        "$PYTHON" scripts/fashion_mnist_targets.py "$SWEEP" > "$OUT/targets.md"
        "$PYTHON" scripts/fashion_mnist_targets.py "$SWEEP" --scorer mahalanobis \
            > "$OUT/targets_mahalanobis.md"
    done
done
