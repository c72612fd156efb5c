"""`deeprlm doctor`: on this machine everything `make run` needs is there (exit 0, every
section present); a missing or damaged model is a FAIL naming its fix (exit 1)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from deeprlm import cli
from deeprlm.doctor import checks
from deeprlm.local import weights

# The doctor asks the installed llama.cpp build about itself.
pytestmark = pytest.mark.local_extra

SECTIONS = ["python", "packages", "cpu", "llama.cpp build", "model", "sandbox", "viewer tests"]


def test_doctor_passes_on_this_machine_and_reports_every_section():
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert [s["title"] for s in report["sections"]] == SECTIONS
    by_title = {s["title"]: s["checks"] for s in report["sections"]}
    for title, found in by_title.items():
        assert found, title
        assert all(c["status"] in ("ok", "warn") for c in found), found
        # A line that is not OK says how to fix it.
        assert all(c["fix"] for c in found if c["status"] != "ok"), found
    build = by_title["llama.cpp build"][0]
    assert build["status"] == "ok" and "AVX2" in build["detail"]
    assert "AMX_INT8" not in build["detail"]
    sandbox = {c["name"]: c for c in by_title["sandbox"]}
    assert {"worker", "user namespace", "network namespace", "Landlock", "rlimits"} <= set(sandbox)
    assert "memory" in sandbox["rlimits"]["detail"] and "open files" in sandbox["rlimits"]["detail"]


def test_doctor_prints_one_line_per_check_and_a_verdict():
    done = subprocess.run(
        [sys.executable, "-m", "deeprlm.cli", "doctor"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    for title in SECTIONS:
        assert title in lines
    assert lines[-1] == "everything `make run` needs works"


def hidden(model: weights.SplitModel) -> weights.SplitModel:
    """The same model with parts no installed package ships."""
    parts = tuple(
        dataclasses.replace(p, distribution=f"{p.distribution}-hidden") for p in model.parts
    )
    return dataclasses.replace(model, parts=parts)


def test_a_missing_model_fails_and_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("DEEPRLM_HOME", str(tmp_path))
    monkeypatch.setattr(checks, "MODEL", hidden(weights.QWEN_CODER_1_5B))
    assert cli.main(["doctor", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    model = next(s for s in report["sections"] if s["title"] == "model")["checks"][0]
    assert model["status"] == "fail"
    assert "not assembled" in model["detail"] and "22 more package(s)" in model["detail"]
    assert model["fix"] == "pip install 'deeprlm[local]'"
    # Everything else still passes: only the model is named.
    failing = [c for s in report["sections"] for c in s["checks"] if c["status"] == "fail"]
    assert failing == [model]


def test_a_model_not_yet_assembled_from_installed_parts_is_only_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DEEPRLM_HOME", str(tmp_path))
    found = checks.model_section().checks[0]
    assert found.status == "warn"
    assert "the first run assembles it" in found.detail
    assert found.fix.endswith("-m deeprlm.local.weights")
    assert not (tmp_path / "models").exists()  # the doctor never assembles


def test_a_damaged_model_fails_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DEEPRLM_HOME", str(tmp_path))
    model = weights.SplitModel("tiny.gguf", size=4, sha256="0" * 64, parts=())
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.gguf").write_bytes(b"GGUF")
    found = checks.model_section(model).checks[0]
    assert found.status == "fail"
    assert "is damaged" in found.detail
    assert "rm " in found.fix and "deeprlm.local.weights" in found.fix


def test_a_build_that_crashes_when_loaded_fails_with_the_reinstall_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "llama_cpp").mkdir()
    (tmp_path / "llama_cpp" / "__init__.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    found = checks.llama_section(checks.Findings(frozenset({"avx2"}))).checks[0]
    assert found.status == "fail"
    assert "stopped on an illegal instruction" in found.detail
    assert "CMAKE_ARGS=" in found.fix and "--force-reinstall" in found.fix


def test_every_extra_is_checked_and_a_missing_one_is_a_warning_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
):
    installed = checks.packages_section().checks
    # Read from the package's metadata: every extra but `local` (checked package by package).
    assert {c.name for c in installed} >= {"[anthropic]", "[bench]", "[dev]", "[mcp]", "[serve]"}
    real = checks.metadata.requires("deeprlm") or []
    monkeypatch.setattr(
        checks.metadata,
        "requires",
        lambda name: [*real, 'no-such-server-lib>=1; extra == "serve"'],
    )
    serve = next(c for c in checks.packages_section().checks if c.name == "[serve]")
    assert serve.status == "warn"
    assert serve.detail == "no-such-server-lib not installed (needed for deeprlm serve only)"
    assert serve.fix == "pip install 'deeprlm[serve]'"
