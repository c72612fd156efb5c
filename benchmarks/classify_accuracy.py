"""How well the embedded model labels records through `classify_items`, against gold.

Takes aggregate examples (records whose class must be inferred), labels a sample of their
instances the way a run's `llm_classify` does (packed, held to the labels, with the
question as background) and prints the accuracy, each label's count error and the
confusions, per variant:

    python benchmarks/classify_accuracy.py [--seed 0] [--length 16k] [--sample 160]
        [--variants packed,single,no-background]

  packed         the run's way: packs of 8, the question as background (a model that
                 reads items inline, as the embedded one does, reads each alone before its label)
  packed-listed  packs of 8, the items listed in the prompt and labelled by number
  single         one item per call
  packed16       packs of 16, the question as background
  packed32       packs of 32, the question as background
  no-background  packs of 8, no question: the labels alone
  label-sentence packs of 8, the question's sentence listing the labels as the instruction

`--ask` (repeatable) puts another request in place of the example's own, after the
records' description: a question that names a label sways a small model towards it, which
is what the labels' lean correction (`deeprlm.local.labels`) is measured on.

A count over N records is scored `0.75 ** |error|`: what limits aggregate counts is the
net count error per label, not accuracy alone, so both are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
from collections import Counter
from typing import Any

from deeprlm.lm.base import reads_items_inline
from deeprlm.local.models import local_lm
from deeprlm.primitives.mapping import PackLimits, classify_items
from deeprlm_bench.banks import questions as qbank
from deeprlm_bench.example import example_seed
from deeprlm_bench.tasks import get_task
from deeprlm_bench.tasks import records as rec
from deeprlm_bench.tokens import chars_for, parse_length

VARIANTS = {
    "packed": {"max_items": 8, "background": True},
    "packed-listed": {"max_items": 8, "background": True, "listed": True},
    "packed16": {"max_items": 16, "background": True},
    "packed32": {"max_items": 32, "background": True},
    "single": {"max_items": 1, "background": True},
    "no-background": {"max_items": 8, "background": False},
    # The question's sentence that lists the labels as the instruction, no background.
    "label-sentence": {"max_items": 8, "background": False, "instruction": True},
}


def label_sentence(query: str) -> str:
    """The question's sentence that lists the labels."""
    sentences = re.split(r"(?<=\.)\s+", query)
    return next((s for s in sentences if "one of" in s), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", default="16k")
    parser.add_argument("--sample", type=int, default=160)
    parser.add_argument("--variants", default="packed")
    parser.add_argument(
        "--ask", action="append", default=[], help="a request in place of the example's"
    )
    args = parser.parse_args()
    length = parse_length(args.length)
    seed = example_seed(args.seed, "aggregate", length, 0)
    example = get_task("aggregate").generate(seed, length)
    rng = random.Random(seed)
    # The generator's own steps, so the records are the example's, with their gold labels.
    records = rec.generate(rng, chars_for(length), labelled=False)
    rec.separate_label_counts(records, rng)
    picked = random.Random(args.seed).sample(range(len(records)), min(args.sample, len(records)))
    texts = [records.questions[i] for i in picked]
    gold = [records.labels[i] for i in picked]
    lm = local_lm(progress=False)

    async def call(prompt: str, schema: Any, tokens: int | None) -> str:
        reply = await lm.acomplete(
            [{"role": "user", "content": prompt}], schema=schema, max_tokens=tokens
        )
        return reply.text

    # The records' description ends where the request begins.
    description = example.query.rsplit("\n\n", 1)[0]
    backgrounds = [f"{description}\n\n{ask}" for ask in args.ask] or [example.query]
    print("| variant | request | items | accuracy | s per item | worst count error (label) |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    runs = [(name, bg) for bg in backgrounds for name in args.variants.split(",")]
    for name, query in runs:
        variant = VARIANTS[name]
        start = time.perf_counter()
        report = asyncio.run(
            classify_items(
                call,
                texts,
                qbank.LABELS,
                background=query if variant["background"] else "",
                instruction=label_sentence(query) if variant.get("instruction") else "",
                limits=PackLimits(max_items=variant["max_items"], max_reply_tokens=512),
                inline=reads_items_inline(lm) and not variant.get("listed"),
            )
        )
        seconds = time.perf_counter() - start
        right = sum(a == g for a, g in zip(report.answers, gold, strict=True))
        said, true = Counter(report.answers), Counter(gold)
        errors = {label: said[label] - true[label] for label in qbank.LABELS}
        worst = max(errors, key=lambda label: abs(errors[label]))
        print(
            f"| {name} | {query.rsplit(chr(10), 1)[-1][:40]} | {len(texts)} | "
            f"{right / len(texts):.2f} | "
            f"{seconds / len(texts):.2f} | {errors[worst]:+d} ({worst}) |",
            flush=True,
        )
        confusions = Counter((g, a) for a, g in zip(report.answers, gold, strict=True) if a != g)
        for (g, a), count in confusions.most_common(6):
            text = next(
                t for t, s, r in zip(texts, gold, report.answers, strict=True) if (s, r) == (g, a)
            )
            print(f"    {count} x {g} -> {a}, e.g. {text!r}", flush=True)


if __name__ == "__main__":
    main()
