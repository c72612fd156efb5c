#!/usr/bin/env bash
# Recursion with the embedded model: rlm against rlm-nosub on every task family, at the
# lengths where the small root must decompose (aggregate, aggregate-labelled and pairs at
# 16k and 32k; niah, multihop and codeqa at 32k and 128k; niah and multihop at 1M), n=5.
# Report on seeds you did not tune the prompts on (the tuning used seeds 0, 1000 and 2000;
# report on 3000 or later). A cell gets 1500 s: a map over a 16k text of records is 50-60
# packs of 8, 5-100 s each by load. Steps go from
# the short lengths to the long ones; each adds to the same folder, so the script can be
# stopped and run again: finished examples are kept. The load average is logged beside the
# results every minute, since timings on a shared machine mean little without it.
#
#   bash benchmarks/bench_decomposition.sh OUT_DIR [SEED] [THREADS]
#
# THREADS (default: every core) sets llama.cpp's threads. On a machine shared with other
# busy processes use 1: two threads wait on each other at llama.cpp's barriers whenever one
# is descheduled, and run 4-6 times slower than one (see benchmarks/prompt_ablation.py).
set -euo pipefail
out="$1"
seed="${2:-3000}"
threads="${3:-0}"
python="$(dirname "$(command -v deeprlm)")/python"
deeprlm() {
    "$python" - "$threads" "$@" <<'EOF'
import sys

threads = int(sys.argv[1])
if threads:
    import deeprlm.local.llama as llama

    llama.available_cores = lambda: threads
from deeprlm.cli import main

sys.argv = ["deeprlm", *sys.argv[2:]]
sys.exit(main())
EOF
}
common=(--methods rlm,rlm-nosub --model local --n 5 --seed "$seed" --out "$out"
        --max-iterations 8 --timeout 1800 --cell-timeout 1500 --max-reply-tokens 512 --repl inprocess
        --traces)
mkdir -p "$out"
( while true; do uptime >> "$out/load.log"; sleep 60; done ) &
logger=$!
trap 'kill $logger' EXIT
for step in "aggregate,aggregate-labelled,pairs 16k" "niah,multihop,codeqa 32k" \
            "aggregate,aggregate-labelled,pairs 32k" "niah,multihop,codeqa 128k" \
            "niah,multihop 1m"; do
    read -r tasks lengths <<< "$step"
    deeprlm bench run --tasks "$tasks" --lengths "$lengths" "${common[@]}"
done
deeprlm bench report "$out"
