"""Which llama.cpp build suits this CPU: the portable build flags, and the check of a build's
compiled features against the CPU's.

llama.cpp compiles its CPU kernels for a fixed instruction set. A build made with
`-march=native` on one machine stops with an illegal instruction (SIGILL) on a CPU that
lacks one of them (AVX-512, say), and its AMX kernels (`ggml_backend_amx_mul_mat`) crash
even on CPUs that do advertise AMX. `llama_cpp.llama_print_system_info()` lists what a
build was compiled with; /proc/cpuinfo lists what the CPU has. `check_build` compares the
two, with no llama.cpp and no I/O, so the decision is testable on any machine; reading the
two strings is left to the callers (the model's child process reports the build's, since
merely asking a bad build can crash).

`LEVELS` holds the CMake flags of the portable builds; `scripts/llama_wheel.sh` reads them
and the pinned version from here (`python build.py cmake-args LEVEL`, `... version`), before
deeprlm is installed, so this module uses the standard library only and imports no deeprlm.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

LLAMA_CPP_VERSION = "0.3.36"  # the same pin as the `local` extra in pyproject.toml

_COMMON_FLAGS = (
    "-DGGML_NATIVE=OFF -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF "
    "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF "
    "-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_CURL=OFF"
)
# CMake flags per build level. avx2: every x86-64 machine of the last decade (the default);
# avx512: AVX-512 (F, VBMI, VNNI, BF16) without AMX, for machines known to have it.
LEVELS: dict[str, str] = {
    "avx2": _COMMON_FLAGS
    + " -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF",
    "avx512": _COMMON_FLAGS
    + " -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON",
}
DEFAULT_LEVEL = "avx2"
# Other architectures: no -march=native, the compiler's baseline for the target.
OTHER_ARCH_FLAGS = "-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF"

# What each instruction-set feature in llama.cpp's system info needs from the CPU, as
# /proc/cpuinfo spells it (the `flags` line on x86, `Features` on Arm). A feature not in this
# table (LLAMAFILE, OPENMP, REPACK, ...) is not an instruction set and needs nothing.
CPU_NEEDS: dict[str, tuple[str, ...]] = {
    "SSE3": ("pni",),  # /proc/cpuinfo calls SSE3 "pni"
    "SSSE3": ("ssse3",),
    "AVX": ("avx",),
    "AVX_VNNI": ("avx_vnni",),
    "AVX2": ("avx2",),
    "F16C": ("f16c",),
    "FMA": ("fma",),
    "BMI2": ("bmi2",),
    "AVX512": ("avx512f",),
    "AVX512_VBMI": ("avx512vbmi",),
    "AVX512_VNNI": ("avx512_vnni",),
    "AVX512_BF16": ("avx512_bf16",),
    "AMX_INT8": ("amx_tile", "amx_int8"),
    "NEON": ("asimd",),
    "ARM_FMA": ("asimd",),
    "FP16_VA": ("asimdhp",),
    "DOTPROD": ("asimddp",),
    "MATMUL_INT8": ("i8mm",),
    "SVE": ("sve",),
    "SME": ("sme",),
}
# Features whose kernels crash even where the CPU has the instructions, and why.
KNOWN_CRASHES: dict[str, str] = {
    "AMX_INT8": "llama.cpp's AMX kernels (ggml_backend_amx_mul_mat) crash with a segmentation "
    "fault on CPUs with AMX",
}


@dataclass(frozen=True)
class BuildCheck:
    """The verdict on one llama.cpp build for one CPU. `message` is one line, empty when
    the build suits the CPU; `fix` is the command that replaces the build."""

    ok: bool
    compiled: tuple[str, ...]  # instruction-set features the build was compiled with
    missing: tuple[str, ...] = ()  # ... that this CPU lacks (SIGILL)
    crashing: tuple[str, ...] = ()  # ... whose kernels are known to crash
    checked: bool = True  # False when the CPU's features could not be read
    message: str = ""
    fix: str = ""


def parse_system_info(info: str | bytes) -> dict[str, str]:
    """`"CPU : SSE3 = 1 | AVX2 = 1 | ..."` as {"SSE3": "1", "AVX2": "1", ...}; every
    backend's section is read (a GPU build lists its own after the CPU's)."""
    if isinstance(info, bytes):
        info = info.decode("utf-8", "replace")
    features: dict[str, str] = {}
    for piece in info.split("|"):
        if "=" not in piece:
            continue
        name, _, value = piece.rpartition("=")
        # "CPU : SSE3" -> "SSE3": the backend's name opens its first feature.
        name = name.rpartition(":")[2].strip()
        if name:
            features[name] = value.strip()
    return features


def compiled_features(info: str | bytes) -> tuple[str, ...]:
    """The instruction-set features a build was compiled with, in the order it lists them."""
    return tuple(
        name
        for name, value in parse_system_info(info).items()
        if name in CPU_NEEDS and value not in ("", "0")
    )


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU's feature flags from the text of /proc/cpuinfo (its first processor)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def read_cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """This CPU's flags, or None where /proc/cpuinfo cannot be read (not Linux)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            flags = parse_cpu_flags(f.read())
    except OSError:
        return None
    return flags or None


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return ""


def best_level(cpu_flags: Iterable[str]) -> str:
    """The fastest portable level this CPU runs (see `LEVELS`)."""
    flags = set(cpu_flags)
    needs = [CPU_NEEDS[f] for f in ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16")]
    return "avx512" if all(set(n) <= flags for n in needs) else DEFAULT_LEVEL


def reinstall_command(
    python: str = "python", version: str = LLAMA_CPP_VERSION, machine: str = "x86_64"
) -> str:
    """The one command that replaces llama-cpp-python with a portable build. Every option
    matters: CMAKE_ARGS picks the instructions; --no-binary forces a build from source (a
    prebuilt wheel from an extra index may be native); --no-cache-dir keeps pip from
    reusing a wheel it built earlier, which it caches by source, not by CMAKE_ARGS."""
    flags = LEVELS[DEFAULT_LEVEL] if machine in ("x86_64", "AMD64", "amd64") else OTHER_ARCH_FLAGS
    return (
        f'CMAKE_ARGS="{flags}" {python} -m pip install --force-reinstall --no-deps '
        f"--no-cache-dir --no-binary llama-cpp-python 'llama-cpp-python=={version}'"
    )


def check_build(
    system_info: str | bytes, cpu_flags: Iterable[str] | None, *, fix: str | None = None
) -> BuildCheck:
    """Whether a build with `system_info` runs on a CPU with `cpu_flags` (None: unknown).

    A build is refused when it was compiled with an instruction set the CPU lacks, or with a
    feature in `KNOWN_CRASHES`. An unknown CPU refuses only the known crashes."""
    compiled = compiled_features(system_info)
    fix = fix or reinstall_command()
    flags = None if cpu_flags is None else frozenset(cpu_flags)
    missing = () if flags is None else _missing(compiled, flags)
    crashing = tuple(f for f in compiled if f in KNOWN_CRASHES and f not in missing)
    problems = []
    if missing:
        problems.append(
            f"it was compiled with {_names(missing)}, which this CPU lacks (it would stop with "
            "an illegal instruction)"
        )
    for feature in crashing:
        problems.append(f"it was compiled with {feature}: {KNOWN_CRASHES[feature]}")
    if not problems:
        return BuildCheck(True, compiled, checked=flags is not None)
    message = (
        "the installed llama.cpp build does not suit this CPU: "
        + "; ".join(problems)
        + f". Reinstall it portably: {fix}"
    )
    return BuildCheck(False, compiled, missing, crashing, flags is not None, message, fix)


def _missing(compiled: Iterable[str], flags: frozenset[str]) -> tuple[str, ...]:
    return tuple(f for f in compiled if not set(CPU_NEEDS[f]) <= flags)


def _names(features: tuple[str, ...]) -> str:
    return features[0] if len(features) == 1 else ", ".join(features[:-1]) + f" and {features[-1]}"


def describe_cpu(flags: Iterable[str]) -> str:
    """The CPU's flags that llama.cpp's kernels care about, in `CPU_NEEDS` order."""
    have = set(flags)
    return " ".join(
        name for name, needs in CPU_NEEDS.items() if set(needs) <= have and name != "ARM_FMA"
    )


def _main(argv: list[str]) -> int:
    """`python build.py cmake-args [LEVEL]` prints the CMake flags of a level (for other
    architectures than x86-64, the portable baseline); `version` the llama-cpp-python
    version deeprlm pins; `best-level` the fastest level for this CPU."""
    import platform

    if argv == ["version"]:
        print(LLAMA_CPP_VERSION)
        return 0
    if argv[:1] == ["cmake-args"] and len(argv) <= 2:
        level = argv[1] if len(argv) == 2 else DEFAULT_LEVEL
        if level not in LEVELS:
            print(f"unknown level {level!r}: use {' or '.join(LEVELS)}", file=sys.stderr)
            return 2
        print(LEVELS[level] if platform.machine() in ("x86_64", "AMD64") else OTHER_ARCH_FLAGS)
        return 0
    if argv == ["best-level"]:
        print(best_level(read_cpu_flags() or ()))
        return 0
    print("usage: build.py cmake-args [avx2|avx512] | version | best-level", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
