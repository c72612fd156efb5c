"""The check of a llama.cpp build against the CPU: system-info strings and CPU flags in, a
verdict and one line out. Also the portable flags the wheel script builds with."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deeprlm.local import build

ROOT = Path(__file__).resolve().parent.parent

# What llama_print_system_info() says for the three kinds of build.
PORTABLE = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
AVX512 = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | "
    "OPENMP = 1 | REPACK = 1 | "
)
# `-march=native` on a Sapphire Rapids Xeon: the build of the issue.
NATIVE_AMX = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)

BASE_FLAGS = ["fpu", "sse", "sse2", "pni", "ssse3", "sse4_1", "sse4_2", "avx", "f16c", "fma",
              "bmi1", "bmi2", "avx2"]  # fmt: skip
AVX512_FLAGS = [*BASE_FLAGS, "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
                "avx512vbmi", "avx512_vnni", "avx512_bf16", "avx_vnni"]  # fmt: skip
AMX_CPU = [*AVX512_FLAGS, "amx_tile", "amx_int8", "amx_bf16"]
AVX2_CPU = BASE_FLAGS


def test_an_amx_build_on_a_cpu_with_amx_is_refused_for_its_known_crash():
    verdict = build.check_build(NATIVE_AMX, AMX_CPU)
    assert not verdict.ok
    assert verdict.crashing == ("AMX_INT8",)
    assert verdict.missing == ()
    assert "ggml_backend_amx_mul_mat" in verdict.message
    assert "\n" not in verdict.message
    # The line ends with the command that fixes it.
    assert verdict.message.endswith(verdict.fix)
    assert "-DGGML_AMX_INT8=OFF" in verdict.fix and "-DGGML_NATIVE=OFF" in verdict.fix
    assert "--no-cache-dir" in verdict.fix and "--no-binary llama-cpp-python" in verdict.fix


def test_an_amx_build_on_a_cpu_without_amx_lacks_the_instructions():
    verdict = build.check_build(NATIVE_AMX, AVX512_FLAGS)
    assert not verdict.ok
    assert verdict.missing == ("AMX_INT8",)
    assert verdict.crashing == ()
    assert "which this CPU lacks" in verdict.message


def test_an_avx512_build_on_a_cpu_without_avx512_would_stop_on_an_illegal_instruction():
    verdict = build.check_build(AVX512, AVX2_CPU)
    assert not verdict.ok
    assert verdict.missing == ("AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16")
    assert "AVX512, AVX512_VBMI, AVX512_VNNI and AVX512_BF16" in verdict.message
    assert "illegal instruction" in verdict.message


def test_an_avx512_build_without_amx_suits_a_cpu_with_avx512_and_amx():
    assert build.check_build(AVX512, AMX_CPU).ok


@pytest.mark.parametrize("cpu", [AMX_CPU, AVX512_FLAGS, AVX2_CPU])
def test_the_portable_build_suits_every_cpu_of_this_kind(cpu: list[str]):
    verdict = build.check_build(PORTABLE, cpu)
    assert verdict.ok
    assert verdict.message == ""
    assert verdict.compiled == ("SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2")


def test_a_cpu_whose_features_are_unknown_refuses_only_known_crashes():
    assert build.check_build(AVX512, None).ok
    assert not build.check_build(AVX512, None).checked
    assert not build.check_build(NATIVE_AMX, None).ok


def test_an_arm_build_is_checked_against_the_features_line():
    arm_cpuinfo = (
        "processor\t: 0\nBogoMIPS\t: 50.00\n"
        "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp\n"
    )
    flags = build.parse_cpu_flags(arm_cpuinfo)
    info = "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | OPENMP = 1 | "
    assert build.check_build(info, flags).ok
    sve = build.check_build(info + "SVE = 1 | ", flags)
    assert sve.missing == ("SVE",)


def test_cpu_flags_are_read_from_the_first_processor():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu avx2 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert build.parse_cpu_flags(cpuinfo) == frozenset({"fpu", "avx2", "amx_tile"})
    assert build.parse_cpu_flags("nothing here") == frozenset()


def test_every_backend_section_of_the_system_info_is_read():
    info = b"CPU : AVX2 = 1 | AMX_INT8 = 0 | Metal : EMBED_LIBRARY = 1 | "
    assert build.parse_system_info(info) == {"AVX2": "1", "AMX_INT8": "0", "EMBED_LIBRARY": "1"}
    assert build.compiled_features(info) == ("AVX2",)  # AMX_INT8 = 0 is not compiled in


def test_the_best_level_needs_every_avx512_extension_it_builds_with():
    assert build.best_level(AMX_CPU) == "avx512"
    assert build.best_level([*BASE_FLAGS, "avx512f", "avx512bw"]) == "avx2"


def test_the_wheel_script_takes_its_flags_and_version_from_the_module():
    """scripts/llama_wheel.sh runs build.py as a plain script, before deeprlm is installed."""
    script = str(ROOT / "src/deeprlm/local/build.py")
    for level, flags in build.LEVELS.items():
        done = subprocess.run(
            [sys.executable, "-I", script, "cmake-args", level],
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.strip() == flags
        assert "-DGGML_NATIVE=OFF" in flags and "-DGGML_AMX_INT8=OFF" in flags
    assert "-DGGML_AVX512=OFF" in build.LEVELS["avx2"]
    assert "-DGGML_AVX512=ON" in build.LEVELS["avx512"]
    version = subprocess.run(
        [sys.executable, "-I", script, "version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == build.LLAMA_CPP_VERSION
    wheel_script = (ROOT / "scripts/llama_wheel.sh").read_text()
    assert '"$BUILD" cmake-args "$LEVEL"' in wheel_script and '"$BUILD" version' in wheel_script
    # The extra pins the same version.
    with open(ROOT / "pyproject.toml", "rb") as f:
        local = tomllib.load(f)["project"]["optional-dependencies"]["local"]
    assert f"llama-cpp-python=={build.LLAMA_CPP_VERSION}" in local


@pytest.mark.local_extra
def test_the_installed_build_suits_this_cpu():
    """The build `make setup` installed, asked in a child process as doctor asks it."""
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm.local.worker", "--probe"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    hello = json.loads(done.stdout)
    flags = build.read_cpu_flags()
    verdict = build.check_build(hello["system_info"], flags)
    assert verdict.ok, verdict.message
    assert "AMX_INT8" not in verdict.compiled
    assert hello["version"] == build.LLAMA_CPP_VERSION


def test_the_readme_gives_pip_users_the_same_flags():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("CMAKE_ARGS=") : readme.index("pip install 'deeprlm[local]'")]
    assert block.replace("\\\n", " ").split('"')[1].split() == build.LEVELS["avx2"].split()
    assert "--no-cache-dir --no-binary llama-cpp-python" in block
    assert f"llama-cpp-python=={build.LLAMA_CPP_VERSION}" in block
