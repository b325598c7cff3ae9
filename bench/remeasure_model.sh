#!/usr/bin/env bash
# Re-measures everything that depends on the bundled model, in the order a model swap needs it:
# the head, the ONNX serving graph, the reports (P1 clean + P2 through the air, both sets, with the
# baselines), P3 live, the drift table, the sessions figures and the custom-sound bench.
#
#   nice -n 19 bash bench/remeasure_model.sh [STEP ...]      # default: every step, in this order
#
# Steps: head export reports p3 drift sessions sounds adapt. Each prints its start time and load average;
# the log of each goes to runs/remeasure/<step>.log. The encoder itself is not touched: a model swap is
# `cp <picked snapshot> models/roomtone.pt` first (bench/checkpoint_curves.py says which).
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread each: torch's intra-op threads wait for each other at every op, so on a busy machine one
# starved thread stalls the whole step (measured: 320 clips embedded in 6.5 min with 2 threads, 7 s with 1).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
PY=.venv/bin/python
MODEL=models/roomtone.pt
CACHE=${ROOMTONE_EVAL_CACHE_DIR:-/tmp/eval-cache}
LOGS=runs/remeasure
mkdir -p "$LOGS"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(head export reports p3 drift sessions sounds adapt)

run() {  # run STEP COMMAND...: log start time and load, tee the output into runs/remeasure/STEP.log
    local name=$1; shift
    echo "== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg): $name: $*"
    local started=$SECONDS
    "$@" 2>&1 | tee "$LOGS/$name.log" | tail -n 25
    echo "== $name took $((SECONDS - started)) s (load after: $(cut -d' ' -f1-3 /proc/loadavg))"
}

for step in "${steps[@]}"; do
    case $step in
        head)     run head $PY -m service.cli.main train-head --model $MODEL --data ../shared/data/homesounds \
                      --augmented-copies 2 --cache "$CACHE" --no-progress ;;
        export)   run export $PY -m service.cli.main export --model $MODEL ;;
        reports)  for set in homesounds music; do
                      run "reports-$set" $PY -m service.cli.main evaluate --model $MODEL --data ../shared/data/$set \
                          --out reports/$set --air --cache "$CACHE" --no-progress
                  done ;;
        p3)       run p3 $PY -m bench.live_accuracy --per-class 2 --cache "$CACHE" --json reports/p3-live.json ;;
        drift)    run drift $PY -m bench.fault_detection --write-docs ;;
        sessions) run sessions $PY -m bench.sessions ;;
        sounds)   run sounds $PY -m bench.custom_sounds --write-docs ;;
        adapt)    run adapt $PY -m bench.adapt --model $MODEL --minutes 1.5 --variants default,fast --shares 0.5,1 \
                      --lr 1e-4 --cache "$CACHE/adapt" --write-docs
                  run adapt-no-corpus $PY -m bench.adapt --model $MODEL --minutes 1.5 --variants default-no-corpus \
                      --lr 1e-4 --no-references --cache "$CACHE/adapt" --section adapt-no-corpus --write-docs
                  run adapt-gentle $PY -m bench.adapt --model $MODEL --minutes 1.5 --variants default-no-corpus \
                      --lr 1e-5 --no-references --cache "$CACHE/adapt" --section adapt-gentle --write-docs ;;
        *) echo "remeasure_model.sh: unknown step $step (head export reports p3 drift sessions sounds adapt)" >&2; exit 2 ;;
    esac
done
