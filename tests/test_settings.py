"""The settings table: one cell timeout wherever the code runs, the sandbox's knobs set
from `RLM(...)`, read paths resolved once, and every value checked in one place."""

from __future__ import annotations

import os
from typing import Any

import pytest

from deeprlm import RLM, InputError, ScriptedLM, Settings
from deeprlm.repl.inprocess import InProcessREPL
from deeprlm.repl.sandbox import SandboxREPL, SandboxSettings
from deeprlm.settings import IN_PROCESS_CELL_TIMEOUT_S
from deeprlm.trace.events import CellEnded, RunStarted

from conftest import repl


def timeouts_seen(monkeypatch: pytest.MonkeyPatch, cls: Any) -> list[float | None]:
    """The timeout each cell run on a REPL of `cls` is given, as the run goes."""
    seen: list[float | None] = []
    original = cls.run

    async def run(self: Any, code: str, timeout: float | None = None) -> Any:
        seen.append(timeout)
        return await original(self, code, timeout)

    monkeypatch.setattr(cls, "run", run)
    return seen


@pytest.mark.parametrize("cls", [InProcessREPL, SandboxREPL])
def test_one_cell_timeout_bounds_cells_in_both_repl_kinds(monkeypatch, cls):
    seen = timeouts_seen(monkeypatch, cls)
    root = ScriptedLM([repl("x = 1"), "FINAL(ok)"])
    assert RLM(root, repl=cls.kind).run("q", "ctx").answer == "ok"
    assert seen == [Settings().cell_timeout_s] == [300.0]


class InProcessLM(ScriptedLM):
    """A model computing in this process, as llama.cpp does (slow on a CPU)."""

    in_process = True


@pytest.mark.parametrize(
    ("root", "given", "named", "wanted"),
    [
        (InProcessLM, {}, {}, IN_PROCESS_CELL_TIMEOUT_S),
        (InProcessLM, {"cell_timeout_s": 5.0}, {}, 5.0),
        (ScriptedLM, {}, {}, 300.0),
        # A named model is known to run here from its spec, before it is made.
        (ScriptedLM, {}, {"fast": "gguf:/models/never-loaded.gguf"}, IN_PROCESS_CELL_TIMEOUT_S),
    ],
)
def test_a_model_in_this_process_gives_cells_longer_unless_the_caller_says(
    monkeypatch, root, given, named, wanted
):
    seen = timeouts_seen(monkeypatch, InProcessREPL)
    rlm = RLM(root([repl("x = 1"), "FINAL(ok)"]), models=named, repl="inprocess", **given)
    assert rlm.run("q", "ctx").answer == "ok"
    assert seen == [wanted]
    assert rlm.settings.cell_timeout_s == wanted


def test_sandbox_settings_are_set_from_rlm_and_reach_the_worker():
    code = (
        "try:\n    block = bytearray(1 << 30)\n    print('allocated')\n"
        "except MemoryError:\n    print('refused')"
    )
    outputs = []
    for sandbox in (None, {"memory_mb": 512}, SandboxSettings(memory_mb=512)):
        extra = {} if sandbox is None else {"sandbox": sandbox}
        root = ScriptedLM([repl(code), "FINAL(ok)"])
        result = RLM(root, repl="sandbox", **extra).run("q", "ctx")
        outputs.append(result.trace.of_type(CellEnded)[0].output.strip())
        started = result.trace.of_type(RunStarted)[0]
        assert started.settings["sandbox"]["memory_mb"] == (None if sandbox is None else 512)
    assert outputs == ["allocated", "refused", "refused"]


def test_bad_sandbox_settings_are_input_errors():
    with pytest.raises(InputError, match="sandbox must be a SandboxSettings"):
        Settings(sandbox=512)
    with pytest.raises(InputError, match="unknown sandbox setting"):
        Settings(sandbox={"memory": 512})
    with pytest.raises(InputError, match="memory_mb must be at least 256"):
        RLM(ScriptedLM(["FINAL(x)"]), sandbox={"memory_mb": 1})


def test_read_paths_are_resolved_once_and_checked(tmp_path, monkeypatch):
    real = tmp_path / "data"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings(allow_read=("~/link", str(real / "..")))
    assert settings.allow_read == (str(real), str(tmp_path))
    assert Settings(allow_read=str(real)).allow_read == (str(real),)  # one path alone
    assert Settings(**Settings(allow_read=("~/link",)).to_dict()).allow_read == (str(real),)
    with pytest.raises(InputError, match="allow_read: no such file or folder: ~/nope"):
        Settings(allow_read=("~/nope",))
    assert os.path.isabs(settings.allow_read[0])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_depth": -1}, "max_depth must be 0 or more, got -1"),
        ({"max_depth": 0}, None),
        ({"timeout_s": 0}, "timeout_s must be positive, got 0"),
        ({"cell_timeout_s": None}, None),
        ({"repl": "docker"}, "unknown REPL kind 'docker'"),
        ({"sub_calls": False}, "unknown setting"),
    ],
)
def test_values_are_checked_by_the_table(settings, message):
    if message is None:
        Settings.from_kwargs(**settings)
    else:
        with pytest.raises(InputError, match=message):
            Settings.from_kwargs(**settings)
