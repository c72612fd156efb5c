"""The report of a benchmark folder: `summary.json`, `summary.md` and `score_vs_length.png`,
all rebuilt from `results.jsonl` (so `deeprlm bench report DIR` can redo them any time).
The tables never depend on the plot: without matplotlib they are written all the same, and
the report says the plot is missing and how to get it.

Per task x length x method: the mean score (and its spread), and the mean, standard
deviation and 95th percentile of cost — dollars, tokens and wall-clock seconds — since the
paper's point is that RLM costs vary more than a base call's.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeprlm.errors import InputError
from deeprlm_bench import extra
from deeprlm_bench.methods import MODEL_FREE
from deeprlm_bench.runner import RESULTS, read_results, read_run_info
from deeprlm_bench.tokens import format_length

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
PLOT = "score_vs_length.png"


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def std(values: Sequence[float]) -> float:
    """Sample standard deviation; 0 for fewer than two values."""
    return statistics.stdev(values) if len(values) >= 2 else 0.0


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, interpolated between order statistics."""
    if len(values) < 2:
        return float(values[0]) if values else 0.0
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"mean": mean(values), "std": std(values), "p95": p95(values)}


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["length"], row["method"])].append(row)
    cells = []
    for (task, length, method), group in sorted(groups.items()):
        scores = [float(r["score"]) for r in group]
        cells.append(
            {
                "task": task,
                "length": length,
                "method": method,
                "n": len(group),
                "score": _spread(scores),
                "usd": _spread([float(r["usd"]) for r in group]),
                "tokens": _spread([float(r["tokens_in"] + r["tokens_out"]) for r in group]),
                "wall_s": _spread([float(r["wall_s"]) for r in group]),
                "iterations": mean([float(r["iterations"]) for r in group]),
                "sub_calls": mean([float(r["sub_calls"]) for r in group]),
                "errors": sum(1 for r in group if r.get("error")),
            }
        )
    return cells


def _money(value: float) -> str:
    return f"{value:.4f}" if value else "0"


def _count(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def markdown(cells: Sequence[dict[str, Any]], info: dict[str, Any]) -> str:
    model = info.get("model") or "(none)"
    sub = info.get("sub_model") or model
    models = f"Model: `{model}`; sub-model: `{sub}`"
    if all(c["method"] in MODEL_FREE for c in cells):
        models = "No model (scripted oracle only)"
    lines = [
        "# Benchmark summary",
        "",
        f"{models}; seed {info.get('seed', 0)}. Lengths in tokens "
        "(4 characters each). Score: mean ± sample std over n examples. Cost: mean / std / "
        "p95 per example.",
        "",
        "| task | length | method | n | score | USD mean / std / p95 | tokens mean / std / p95 "
        "| seconds mean / std / p95 | iters | sub-calls | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        usd, tokens, wall = c["usd"], c["tokens"], c["wall_s"]
        lines.append(
            f"| {c['task']} | {format_length(c['length'])} | {c['method']} | {c['n']} | "
            f"{c['score']['mean']:.3f} ± {c['score']['std']:.3f} | "
            f"{_money(usd['mean'])} / {_money(usd['std'])} / {_money(usd['p95'])} | "
            f"{_count(tokens['mean'])} / {_count(tokens['std'])} / {_count(tokens['p95'])} | "
            f"{wall['mean']:.1f} / {wall['std']:.1f} / {wall['p95']:.1f} | "
            f"{c['iterations']:.1f} | {c['sub_calls']:.1f} | {c['errors']} |"
        )
    return "\n".join(lines) + "\n"


def plot(cells: Sequence[dict[str, Any]], path: Path) -> None:
    """Score against length, one panel per task, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(c["task"] for c in cells))
    methods = list(dict.fromkeys(c["method"] for c in cells))
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for method in methods:
            points = sorted(
                (c["length"], c["score"]["mean"])
                for c in cells
                if c["task"] == task and c["method"] == method
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=method)
        ax.set_xscale("log", base=2)
        lengths = sorted({c["length"] for c in cells if c["task"] == task})
        ax.set_xticks(lengths, [format_length(n) for n in lengths])
        ax.minorticks_off()
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(task)
        ax.set_xlabel("input length (tokens)")
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(methods), frameon=False)
    # Room at the bottom for the legend: the same height in inches whatever the rows.
    fig.tight_layout(rect=(0, 0.3 / (3.4 * rows), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass(frozen=True)
class Report:
    cells: list[dict[str, Any]]
    plot: Path | None  # None when none was drawn
    notes: tuple[str, ...] = field(default=())  # what the reader should know (a missing plot)


def write_report(out: Path) -> Report:
    """Rebuilds the report files in `out` from its results."""
    if not (out / RESULTS).exists():
        raise InputError(f"{out} has no {RESULTS}: run `deeprlm bench run --out {out}` first")
    rows = read_results(out)
    info = read_run_info(out)
    cells = summarize(rows)
    notes = []
    if cells and extra.missing(("matplotlib",)):
        notes.append(f"no {PLOT}: matplotlib is not installed ({extra.INSTALL})")
    (out / SUMMARY_JSON).write_text(
        json.dumps({"run": info, "cells": cells, "notes": notes}, indent=2) + "\n",
        encoding="utf-8",
    )
    text = markdown(cells, info) + "".join(f"\nNote: {note}.\n" for note in notes)
    (out / SUMMARY_MD).write_text(text, encoding="utf-8")
    drawn = None
    if cells and not notes:
        plot(cells, out / PLOT)
        drawn = out / PLOT
    return Report(cells, drawn, tuple(notes))
