"""How well `follow_chain` answers on its own: multihop examples, no root model.

Each example's question goes to `follow_chain` over its context, with the embedded model
answering the links (held to the names the documents write, as in a run). Prints one row
per example (the links asked, the answer, the gold) and a table per seed and length:
score, links per question, seconds per question.

    python benchmarks/chain_links.py [--seeds 0,1,2] [--lengths 32k] [--n 6] [--as-text]

`--as-text` joins each example's documents into one text, blank lines between them, as a
corpus often comes.

It separates the primitive's accuracy from the root's: in a run, the root must also call
it and copy its answer into FINAL.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import defaultdict
from typing import Any

from deeprlm.local.models import local_lm
from deeprlm.primitives.chain import follow_chain
from deeprlm_bench.example import example_seed
from deeprlm_bench.tasks import get_task
from deeprlm_bench.tokens import parse_length

REPLY_TOKENS = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lengths", default="32k")
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--as-text", action="store_true")
    args = parser.parse_args()
    lm = local_lm(progress=False)

    async def ask(prompt: str, schema: dict[str, Any]) -> str:
        reply = await lm.acomplete(
            [{"role": "user", "content": prompt}], schema=schema, max_tokens=REPLY_TOKENS
        )
        return reply.text

    task = get_task("multihop")
    rows: dict[tuple[int, str], list[tuple[float, int, float]]] = defaultdict(list)
    for seed in (int(s) for s in args.seeds.split(",")):
        for length_text in args.lengths.split(","):
            length = parse_length(length_text)
            for index in range(args.n):
                example = task.generate(example_seed(seed, "multihop", length, index), length)
                context = example.context
                if args.as_text and isinstance(context, list):
                    context = "\n\n".join(context)
                start = time.perf_counter()
                try:
                    result = asyncio.run(follow_chain(example.query, context, ask))
                    answer, links = result.answer, [link.question for link in result.links]
                except (LookupError, ValueError) as err:
                    answer, links = f"Error: {err}", []
                seconds = time.perf_counter() - start
                score = task.score(example, answer)
                rows[(seed, length_text)].append((score, len(links), seconds))
                print(
                    f"seed {seed} {length_text} #{index}: {answer!r} (gold {example.gold!r}) "
                    f"{score:.0f}, {seconds:.0f} s; links: {' -> '.join(links)}",
                    flush=True,
                )
    print("\n| seed | length | n | score | links per question | median s |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for (seed, length_text), results in rows.items():
        scores = [score for score, _, _ in results]
        counts = [count for _, count, _ in results]
        times = [seconds for _, _, seconds in results]
        print(
            f"| {seed} | {length_text} | {len(results)} | {statistics.mean(scores):.2f} | "
            f"{statistics.mean(counts):.1f} | {statistics.median(times):.0f} |"
        )


if __name__ == "__main__":
    main()
