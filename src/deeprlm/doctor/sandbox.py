"""The sandbox, as `deeprlm doctor` sees it: a real sandbox worker is started (in a child
process, isolating itself with `repl/sandbox/isolation.py` and `landlock.py` exactly as in a
run) and asked for the limits it runs under. What it reports is what a run would get: the
namespaces, the Landlock ABI, the rlimits, and each fallback it had to take.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from deeprlm.doctor.checks import FAIL, OK, WARN, Check, Section
from deeprlm.errors import DeepRLMError
from deeprlm.repl.base import REPLSettings
from deeprlm.repl.sandbox import SandboxREPL

USERNS_FIX = (
    "allow unprivileged user namespaces (sysctl -w user.max_user_namespaces=15000, and "
    "kernel.unprivileged_userns_clone=1 where that exists; a container needs its runtime's "
    "permission)"
)
LANDLOCK_FIX = "use a kernel with Landlock enabled (Linux 5.13+, landlock in its lsm= list)"
# The fix for each fallback the worker may report, by how its note begins.
FALLBACK_FIXES = {
    "no user namespace": USERNS_FIX,
    "the user namespace has no id map": USERNS_FIX,
    "no network or pid namespace": USERNS_FIX,
    "no Landlock": LANDLOCK_FIX,
    "the network is open": USERNS_FIX,
    "no network namespace": USERNS_FIX,
    "processes the code starts may outlive their cell": USERNS_FIX,
    "could not allow reading": "check the paths given with --allow-read",
}
# The worker's limits, by resource name, and how to show them.
LIMITS = {
    "RLIMIT_AS": ("memory", "bytes"),
    "RLIMIT_CPU": ("CPU", "s"),
    "RLIMIT_NPROC": ("processes", ""),
    "RLIMIT_FSIZE": ("file size", "bytes"),
    "RLIMIT_NOFILE": ("open files", ""),
    "RLIMIT_CORE": ("core files", "bytes"),
}
PROBE = f"""import json, resource
names = {list(LIMITS)!r}
print(json.dumps({{n: resource.getrlimit(getattr(resource, n))[0] for n in names}}))
"""


class _NoHost:
    """The probe's code makes no sub-calls."""

    async def llm_query(self, prompt: str, model: str | None = None) -> str:
        raise RuntimeError("no sub-calls in the doctor's probe")

    async def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        raise RuntimeError("no sub-calls in the doctor's probe")

    async def llm_map(
        self, instruction: Any, items: Any, model: str | None = None
    ) -> list[str] | dict[str, str]:
        raise RuntimeError("no sub-calls in the doctor's probe")

    async def llm_classify(
        self, items: Any, labels: Any, instruction: Any = "", model: str | None = None
    ) -> list[str] | dict[str, str]:
        raise RuntimeError("no sub-calls in the doctor's probe")

    async def rlm_query(self, query: str, context: Any = None) -> str:
        raise RuntimeError("no sub-calls in the doctor's probe")

    async def rlm_batch(self, pairs: Sequence[Any]) -> list[str]:
        raise RuntimeError("no sub-calls in the doctor's probe")

    async def follow_chain(self, question: Any, where: Any = None) -> str:
        raise RuntimeError("no sub-calls in the doctor's probe")


async def _probe() -> tuple[Any, dict[str, int] | str]:
    repl = SandboxREPL()
    await repl.start("", _NoHost(), REPLSettings())
    try:
        cell = await repl.run(PROBE, timeout=60.0)
    finally:
        await repl.close()
    if cell.error:
        return repl.isolation, cell.error
    return repl.isolation, json.loads(cell.output)


def sandbox_section() -> Section:
    if not sys.platform.startswith("linux"):
        return Section(
            "sandbox",
            (Check("sandbox", WARN, "needs Linux: runs use --repl inprocess here", ""),),
        )
    try:
        isolation, limits = asyncio.run(_probe())
    except (DeepRLMError, OSError) as err:
        return Section(
            "sandbox",
            (
                Check(
                    "sandbox",
                    FAIL,
                    f"the worker cannot start: {err}",
                    "fix the cause above, or run with --repl inprocess (trusted contexts only)",
                ),
            ),
        )
    namespaces = set(isolation.namespaces)
    checks = [Check("worker", OK, f"started as uid {isolation.uid}")]
    checks.append(
        Check("user namespace", OK, "yes")
        if "user" in namespaces
        else Check("user namespace", WARN, "refused by the kernel", USERNS_FIX)
    )
    checks.append(
        Check("network namespace", OK, "yes: no network device but a loopback that is down")
        if "net" in namespaces
        else Check("network namespace", WARN, "refused by the kernel", USERNS_FIX)
    )
    abi = isolation.landlock_abi
    if abi:
        denies = ["files"] + (["TCP"] if abi >= 4 else []) + (["signals"] if abi >= 6 else [])
        checks.append(Check("Landlock", OK, f"ABI {abi}: restricts {', '.join(denies)}"))
    else:
        checks.append(Check("Landlock", WARN, "not available", LANDLOCK_FIX))
    if isinstance(limits, str):
        checks.append(Check("rlimits", FAIL, f"the probe failed: {limits}", ""))
    else:
        checks.append(Check("rlimits", OK, _limits(limits)))
    for note in isolation.notes:
        fix = next((f for start, f in FALLBACK_FIXES.items() if note.startswith(start)), "")
        checks.append(Check("fallback", WARN, note, fix or "see the README's sandbox section"))
    if not isolation.notes:
        checks.append(Check("fallbacks", OK, "none: every layer applied"))
    return Section("sandbox", tuple(checks))


def _limits(values: dict[str, int]) -> str:
    parts = []
    for name, (label, unit) in LIMITS.items():
        value = values.get(name, -1)
        if value < 0:
            shown = "unlimited"
        elif unit == "bytes":
            shown = f"{value / (1 << 20):,.0f} MiB" if value else "0"
        else:
            shown = f"{value:,}{' ' + unit if unit else ''}"
        parts.append(f"{label} {shown}")
    return ", ".join(parts)
