"""`deeprlm doctor`: one command to run when something is wrong.

    deeprlm doctor [--json]

Checks, in order: Python, the packages, the CPU, the llama.cpp build (does it suit this
CPU?), the embedded model (assembled, hash checked), the sandbox (namespaces, Landlock,
rlimits, and the fallbacks a run would take) and chromium for the viewer's tests. Each line
says OK, or WARN/FAIL and a one-line fix. Exit status 0 when everything `make run` needs
works, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from deeprlm.doctor.checks import (
    FAIL,
    Findings,
    Section,
    cpu_section,
    llama_section,
    model_section,
    packages_section,
    python_section,
    viewer_section,
)
from deeprlm.doctor.sandbox import sandbox_section

LABELS = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}


def examine() -> list[Section]:
    findings = Findings()
    steps: list[Callable[[], Section]] = [
        python_section,
        packages_section,
        lambda: cpu_section(findings),
        lambda: llama_section(findings),
        model_section,
        sandbox_section,
        viewer_section,
    ]
    return [step() for step in steps]


def healthy(sections: list[Section]) -> bool:
    return all(check.status != FAIL for section in sections for check in section.checks)


def render(sections: list[Section]) -> str:
    lines = []
    for section in sections:
        lines.append(section.title)
        for check in section.checks:
            line = f"  {LABELS[check.status]}  {check.name}: {check.detail}"
            if check.fix:
                line += f"\n        fix: {check.fix}"
            lines.append(line)
    if healthy(sections):
        lines.append("everything `make run` needs works")
    else:
        lines.append("`make run` will not work until the FAIL lines are fixed")
    return "\n".join(lines)


def _doctor(args: argparse.Namespace) -> int:
    sections = examine()
    if args.json:
        report = {"ok": healthy(sections), "sections": [s.to_dict() for s in sections]}
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(render(sections))
    return 0 if healthy(sections) else 1


def register(subparsers: Any) -> None:
    doctor = subparsers.add_parser(
        "doctor", help="check that this machine can run deeprlm, and say how to fix what not"
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.set_defaults(handler=_doctor)
