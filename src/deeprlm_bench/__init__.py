"""Benchmarks and baselines: the paper's task families, generated offline at any length,
and the methods they compare.

A package beside the library, not inside it: it uses `deeprlm` and `deeprlm` never imports
it, so answering a question loads none of it. `deeprlm bench` loads it when run.

Tasks (`deeprlm_bench.tasks`), each deterministic from (seed, length in tokens):
`niah` / `niah-distract` (a needle: constant work), `aggregate` / `aggregate-labelled`
(OOLONG: linear), `pairs` / `pairs-labelled` (OOLONG-Pairs: quadratic), `multihop`
(BrowseComp-Plus style chains over documents) and `codeqa` (multiple choice over a generated
Python repository). Methods (`deeprlm_bench.methods`): `base`, `summary`, `codeact` (with
BM25), `rlm`, `rlm-nosub`, and `oracle`, a scripted check that scores 1.0 at any length.

    deeprlm bench run --tasks niah,aggregate --lengths 8k,32k --methods base,rlm \\
        --model SPEC --n 3 --out DIR
    deeprlm bench report DIR

Lengths count four characters as a token (`deeprlm_bench.tokens`). BM25 and the plot need
the `bench` extra (`pip install 'deeprlm[bench]'`), which `bench run` checks before it
starts (`deeprlm_bench.extra`).
"""
