#!/usr/bin/env bash
# The digits tables of docs/results.md: every preset and ablation over seeds 0, 1, 2 (about 25 min
# on 2 cores; stages shared between rows train once), then the Markdown the docs include.
set -euo pipefail
PYTHON=${PYTHON:-python}
SWEEP=${SWEEP:-multirun_outputs/results/digits}
OUT=${OUT:-docs/results/digits}
run() { "$PYTHON" -m ood_nolabels.train -m "$@" seed=0,1,2 logger=csv; }
run +experiment=digits,dn2_digits,scan_features_digits hydra.sweep.dir="$SWEEP/main"
run +experiment=digits pseudo_labels=kmeans,ground_truth hydra.sweep.dir="$SWEEP/labels"
run +experiment=digits stage1=frozen_features hydra.sweep.dir="$SWEEP/frozen"
"$PYTHON" -m ood_nolabels.results "$SWEEP"/main "$SWEEP"/labels "$SWEEP"/frozen --over seed \
    --output "$OUT"
"$PYTHON" -m ood_nolabels.results "$SWEEP"/main "$SWEEP"/labels "$SWEEP"/frozen \
    --output "$OUT/per_seed"
