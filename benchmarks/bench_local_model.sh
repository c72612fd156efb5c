#!/usr/bin/env bash
# The measured comparison with the embedded model (2 CPU cores): base vs rlm vs rlm-nosub
# on niah, aggregate (labelled and not) and pairs where the base model's window still holds
# the input (8k, 16k), and on niah and aggregate where it does not (128k). Steps are ordered
# so that the contrast between a fitting and a non-fitting input arrives first. Each step
# adds to the same folder, so the script can be stopped and run again: finished examples
# are kept.
#
#   bash benchmarks/bench_local_model.sh [OUT_DIR]
set -euo pipefail
out="${1:-bench-local}"
common=(--methods base,rlm,rlm-nosub --model local --n 3 --seed 0 --out "$out"
        --max-iterations 6 --timeout 240 --max-reply-tokens 512 --repl inprocess --traces)
deeprlm bench run --tasks niah --lengths 8k,128k "${common[@]}"
deeprlm bench run --tasks aggregate --lengths 8k,128k "${common[@]}"
deeprlm bench run --tasks aggregate-labelled,pairs --lengths 8k "${common[@]}"
deeprlm bench run --tasks niah,aggregate,aggregate-labelled,pairs --lengths 16k "${common[@]}"
deeprlm bench report "$out"
