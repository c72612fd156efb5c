"""The context of `make run`: a few megabytes of plain prose with one fact hidden in it (the
niah generator's `hidden_fact`), written to a file, and the question that fact answers.

    python -m deeprlm_bench.demo --chars 4000000 --out demo/context.txt   # prints the query
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deeprlm_bench.tasks.niah import hidden_fact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deeprlm_bench.demo",
        description="Write a context of plain prose with one fact hidden in it; print the "
        "question that fact answers.",
    )
    parser.add_argument("--chars", type=int, default=4_000_000, help="context size")
    parser.add_argument("--depth", type=float, default=0.62, help="where the fact goes, 0..1")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True, help="file to write the context to")
    parser.add_argument("--query-out", type=Path, help="also write the query to this file")
    args = parser.parse_args(argv)
    case = hidden_fact(args.chars, args.depth, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(case.text, encoding="utf-8")
    if args.query_out:
        args.query_out.write_text(case.query, encoding="utf-8")
    print(
        f"wrote {len(case.text):,} characters to {args.out}; the fact is at "
        f"{case.needle_at / len(case.text):.0%}: expected answer {case.answer}",
        file=sys.stderr,
    )
    print(case.query)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
