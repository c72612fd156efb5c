"""The `gguf:PATH` and `hf:REPO/FILE` specs, resolved without loading any weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deeprlm import RLM
from deeprlm.cache import request_key
from deeprlm.errors import InputError
from deeprlm.lm.base import reads_items_inline
from deeprlm.lm.specs import resolve_lm
from deeprlm.local.hub import HubFile, parse_hub_spec
from deeprlm.local.llama import LlamaCppLM, LlamaSettings

pytestmark = pytest.mark.local_extra

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_gguf(path: Path) -> Path:
    """The header of a GGUF file: enough for the spec to accept it, never loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    return path


def test_gguf_spec_names_the_file(tmp_path: Path):
    path = fake_gguf(tmp_path / "my-model.Q4_K_M.gguf")
    lm = resolve_lm(f"gguf:{path}")
    assert isinstance(lm, LlamaCppLM)
    assert lm.path == path.resolve()
    assert lm.name == "my-model.Q4_K_M"
    assert lm.prompt_family == "small"
    assert lm.context_window > 0
    assert lm.supports_tools is False


def test_the_same_file_opens_once_per_process(tmp_path: Path):
    path = fake_gguf(tmp_path / "once.gguf")
    assert resolve_lm(f"gguf:{path}") is resolve_lm(f"gguf:{tmp_path}/./once.gguf")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "absent.gguf", "no GGUF model file at"),
        (lambda tmp: tmp, "no GGUF model file at"),
        (lambda tmp: _write(tmp / "notes.gguf", b"just some text"), "is not a GGUF model file"),
    ],
)
def test_gguf_spec_rejects_what_is_not_a_gguf_file(tmp_path: Path, make, message: str):
    with pytest.raises(InputError, match=message):
        resolve_lm(f"gguf:{make(tmp_path)}")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_an_empty_gguf_spec_is_bad_input():
    with pytest.raises(InputError, match=r"gguf:/models/model\.gguf"):
        resolve_lm("gguf:")


def test_a_root_model_used_for_sub_calls_gets_its_own_cache(tmp_path: Path):
    lm = LlamaCppLM(fake_gguf(tmp_path / "roles.gguf"))
    rlm = RLM(lm)
    assert rlm.model is lm
    assert rlm.sub_model is lm.for_role("sub")
    assert rlm.sub_model is not lm
    assert (rlm.model.role, rlm.sub_model.role) == ("root", "sub")
    assert rlm.sub_model.name == lm.name


def test_only_a_greedy_model_reads_a_packs_items_in_its_reply(tmp_path: Path):
    # A sampled reply comes under a grammar that holds the labels alone: were its items
    # left out of the prompt, it would label them unseen.
    path = fake_gguf(tmp_path / "sampling.gguf")
    greedy = LlamaCppLM(path)
    sampled = LlamaCppLM(path, settings=LlamaSettings(temperature=0.7))
    assert reads_items_inline(greedy) and reads_items_inline(greedy.for_role("sub"))
    assert not reads_items_inline(sampled)
    assert not reads_items_inline(sampled.for_role("sub"))


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("acme/tiny-GGUF/tiny.gguf", HubFile("acme/tiny-GGUF", "tiny.gguf")),
        ("acme/tiny-GGUF/q4/tiny.gguf", HubFile("acme/tiny-GGUF", "q4/tiny.gguf")),
        ("acme/tiny-GGUF@v2/tiny.gguf", HubFile("acme/tiny-GGUF", "tiny.gguf", "v2")),
    ],
)
def test_hf_spec_splits_repo_and_file(argument: str, expected: HubFile):
    assert parse_hub_spec(argument) == expected


@pytest.mark.parametrize("argument", ["tiny.gguf", "acme/tiny.gguf", "acme//tiny.gguf", ""])
def test_a_malformed_hf_spec_is_bad_input(argument: str):
    with pytest.raises(InputError, match="OWNER/REPO/FILE"):
        resolve_lm(f"hf:{argument}")


def place_in_hub_cache(cache: Path, repo_id: str, filename: str) -> Path:
    """Lays a file out the way the hub client caches a download."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return fake_gguf(repo / "snapshots" / COMMIT / filename)


def resolve_offline(spec: str, cache: Path) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter: the hub client reads its cache and offline settings at import.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    code = (
        "import sys\n"
        "from deeprlm.errors import InputError\n"
        "from deeprlm.lm.specs import resolve_lm\n"
        "try:\n"
        "    print(resolve_lm(sys.argv[1]).path)\n"
        "except InputError as err:\n"
        "    print(err, file=sys.stderr)\n"
        "    sys.exit(2)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, spec], env=env, capture_output=True, text=True, timeout=120
    )


def test_hf_spec_finds_a_cached_file_offline(tmp_path: Path):
    cached = place_in_hub_cache(tmp_path / "hub", "acme/tiny-GGUF", "tiny-q4_k_m.gguf")
    done = resolve_offline("hf:acme/tiny-GGUF/tiny-q4_k_m.gguf", tmp_path / "hub")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == cached.resolve()


def test_hf_spec_not_in_the_cache_offline_is_one_clear_error(tmp_path: Path):
    place_in_hub_cache(tmp_path / "hub", "acme/tiny-GGUF", "tiny-q4_k_m.gguf")
    done = resolve_offline("hf:acme/tiny-GGUF/other.gguf", tmp_path / "hub")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "cannot get acme/tiny-GGUF/other.gguf" in lines[0]


def test_a_sub_model_from_another_file_has_its_own_cache_and_window(tmp_path: Path):
    root = LlamaCppLM(fake_gguf(tmp_path / "root.gguf"))
    rlm = RLM(root, f"gguf:{fake_gguf(tmp_path / 'helper.gguf')}")
    sub = rlm.sub_model
    assert isinstance(sub, LlamaCppLM) and sub.path.name == "helper.gguf"
    assert sub.name == "helper"
    # Nothing is shared with the root's model: not the contexts (KV caches), not the lock.
    assert sub._shared is not root._shared
    assert sub.context_window == root.context_window


def test_models_named_alike_from_different_files_never_share_cache_entries(tmp_path: Path):
    first = fake_gguf(tmp_path / "a" / "model.gguf")
    second = tmp_path / "b" / "model.gguf"
    second.parent.mkdir()
    second.write_bytes(first.read_bytes() + b"\x01")  # other weights, the same name
    copy = tmp_path / "c" / "model.gguf"
    copy.parent.mkdir()
    copy.write_bytes(first.read_bytes())  # the same weights elsewhere
    messages = [{"role": "user", "content": "hi"}]

    def key(path: Path) -> str:
        lm = LlamaCppLM(path).for_role("sub")
        return request_key(lm, messages, tools=None, max_tokens=None, schema=None)

    assert LlamaCppLM(first).name == LlamaCppLM(second).name == "model"
    assert key(first) != key(second)
    assert key(first) == key(copy)
