"""Which way of teaching the small root works: the same examples under each prompt variant.

Runs the engine with the embedded model on benchmark examples (tuning seeds: pick seeds you
will not report on) under one prompt variant, appends one JSON line per example to
OUT/results.jsonl (resumable: done examples are skipped), and prints the table of every
variant in OUT so far.

    python benchmarks/prompt_ablation.py VARIANT OUT TASK:LENGTH:FIRST-LAST [...]
        [--seed 0] [--threads N] [--no-sub-calls] [--max-iterations 8] [--timeout 1800]

Variants:
  kind     the engine's default: the kind of question is picked from the context's
           structure, and the root sees that kind's functions, steps and example only
  single   no kind: the single worked example (a look-up) the small prompt had before
  menu     no kind picked: every function, every kind's steps, the look-up example
  kind:K   every question taught as kind K (e.g. kind:chain), to compare examples

`--threads` sets llama.cpp's threads. On a machine shared with other busy processes, two
threads wait on each other at llama.cpp's barriers whenever one is descheduled: measured at
a load of 7-8 on 2 cores, 1.4-2.0 s per generated token with 2 threads against 0.36-0.52 s
with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from deeprlm import RLM, guides, prompts
from deeprlm.engine.run import Run
from deeprlm.errors import LimitError
from deeprlm_bench.example import example_seed
from deeprlm_bench.tasks import get_task
from deeprlm_bench.tokens import parse_length


def use_variant(variant: str) -> None:
    """Replaces how a run picks its kind (and, for `menu`, the small prompt)."""
    if variant == "kind":
        return
    if variant.startswith("kind:"):
        forced = variant.split(":", 1)[1]
        if forced not in guides.KINDS:
            raise SystemExit(f"no kind {forced!r}; kinds: {', '.join(guides.KINDS)}")
        Run._pick_kind = lambda self: forced  # type: ignore[method-assign]
        return
    if variant not in ("single", "menu"):
        raise SystemExit(f"unknown variant {variant!r}")
    Run._pick_kind = lambda self: None  # type: ignore[method-assign,assignment,return-value]
    if variant == "menu":
        prompts._small_system_prompt = menu_prompt  # type: ignore[attr-defined]


def menu_prompt(setup: prompts.PromptSetup) -> str:
    names = [
        name
        for name in guides.FUNCTIONS
        if setup.allow_sub_calls or name not in guides.SUB_CALL_FUNCTIONS
    ]
    steps = "\n".join(
        f"- If the question asks for {kind.description}:\n  "
        + guides.steps_of(kind, setup.allow_sub_calls).replace("\n", "\n  ")
        for kind in guides.KINDS.values()
    )
    return prompts._SMALL_KIND.format(  # type: ignore[attr-defined]
        max_output_chars=setup.max_output_chars,
        functions="\n".join(f"- {guides.FUNCTIONS[name]}" for name in names),
        steps=f"First decide which kind of question it is, then follow its steps.\n{steps}",
        example=guides.KINDS[guides.DEFAULT_KIND].example,
    )


def set_threads(threads: int) -> None:
    import deeprlm.lm.llama as llama

    llama.available_cores = lambda: threads  # type: ignore[assignment]


def examples(specs: list[str], seed: int) -> list[tuple[str, str, int, int]]:
    out = []
    for spec in specs:
        task, length, indices = spec.split(":")
        first, _, last = indices.partition("-")
        for index in range(int(first), int(last or first) + 1):
            out.append((task, length, parse_length(length), index))
    return out


def run_one(args: argparse.Namespace, model: Any, task_name: str, length_text: str,
            length: int, index: int) -> dict[str, Any]:  # fmt: skip
    task = get_task(task_name)
    example = task.generate(example_seed(args.seed, task_name, length, index), length)
    name = f"{args.variant}_{task_name}_{length_text}_{index}"
    rlm = RLM(
        model,
        max_iterations=args.max_iterations,
        timeout_s=args.timeout,
        max_reply_tokens=512,
        repl="inprocess",
        allow_sub_calls=not args.no_sub_calls,
        trace_path=args.out / "traces" / f"{name}.jsonl",
    )
    started = time.perf_counter()
    error = None
    try:
        result = rlm.run(example.query, example.context)
    except LimitError as err:
        result, error = err.result, str(err)
    answer = result.answer if result is not None else ""
    return {
        "variant": args.variant,
        "task": task_name,
        "length": length_text,
        "index": index,
        "seed": args.seed,
        "sub_calls_allowed": not args.no_sub_calls,
        "score": task.score(example, answer) if answer else 0.0,
        "wall_s": round(time.perf_counter() - started, 1),
        "iterations": result.iterations if result is not None else 0,
        "sub_calls": result.sub_calls if result is not None else 0,
        "answer": answer[:300],
        "gold": str(example.gold)[:300],
        "error": error,
        "load": round(os.getloadavg()[0], 2),
    }


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cells: dict[tuple[str, str, bool], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        cells[(row["variant"], row["task"], row["sub_calls_allowed"])].append(row)
    lines = [
        "| variant | task | sub-calls | n | score | median s | sub-calls per run | load |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (variant, task, allowed), group in sorted(cells.items()):
        lines.append(
            f"| {variant} | {task} | {'on' if allowed else 'off'} | {len(group)} "
            f"| {statistics.mean(r['score'] for r in group):.2f} "
            f"| {statistics.median(r['wall_s'] for r in group):.0f} "
            f"| {statistics.mean(r['sub_calls'] for r in group):.1f} "
            f"| {statistics.mean(r['load'] for r in group):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("out", type=Path)
    parser.add_argument("examples", nargs="+", help="TASK:LENGTH:FIRST-LAST")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: all)")
    parser.add_argument("--no-sub-calls", action="store_true")
    parser.add_argument("--max-iterations", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    use_variant(args.variant)
    if args.threads:
        set_threads(args.threads)
    from deeprlm.local.models import local_lm

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "traces").mkdir(exist_ok=True)
    results = args.out / "results.jsonl"
    done = set()
    if results.exists():
        for line in results.read_text().splitlines():
            row = json.loads(line)
            done.add((row["variant"], row["task"], row["length"], row["index"], row["seed"],
                      row["sub_calls_allowed"]))  # fmt: skip
    model = local_lm(progress=False)
    for task, length_text, length, index in examples(args.examples, args.seed):
        key = (args.variant, task, length_text, index, args.seed, not args.no_sub_calls)
        if key in done:
            continue
        row = run_one(args, model, task, length_text, length, index)
        with results.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
