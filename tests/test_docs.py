"""Every ```python block of README.md and docs/**/*.md runs, so no example in the docs can rot.

The blocks of one file run in order, in a fresh temporary working directory, each in the
namespace it has when the docs are read or built:

- A plain ```python block runs in the reader's namespace, which holds everything the file's
  earlier blocks defined (a later block may use what an earlier one defined).
- A block that markdown-exec runs when the docs are built, ```python exec="on" ...``` (with
  ``source="above" result="text"`` to show the code and then its output), runs in the namespace
  of its ``session``, as in the build: it sees what the session's earlier blocks defined, and
  nothing from the plain blocks between them (the build does not run those). It must not write
  files, since the build runs it in the repository's root; and a session belongs to one file,
  since markdown-exec's sessions last the whole build.

Other blocks (```bash, ```text, ...) are not run. A block whose info string is
``python no-run`` is not run either; it is kept for what needs the network (GPT-2 from the
Hub), and each one is reported as a skipped test by name. A block titled for SmolLM2,
```python title="SmolLM2 (after numpylm download smollm2)", is run by
tests/test_smollm2_pages.py instead, which also checks that it prints the ```text block shown
after it.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from numpylm.io import checkpoint
from numpylm.io.loading import BUILTIN_DIR

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

# An opening fence (``` or ~~~, indented up to 3 spaces), its info string, and the block up to
# the closing fence of the same kind.
FENCE = re.compile(
    r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n"
    r"(?P<body>.*?)^ {0,3}(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
NEEDS_BUILTIN = re.compile(r"\bload\(\s*\)")  # numpylm.load(): the built-in model
NEEDS_MATPLOTLIB = re.compile(r"numpylm\.viz|from numpylm import viz")
NEEDS_TRANSFORMERS = re.compile(r"^import (torch|transformers)", re.MULTILINE)
NEEDS_GPT2_TOKENIZER = re.compile(r"Tokenizer\.gpt2\(|tokenizer=\"gpt2\"|get_encoding\(")


# One word of an info string: key="value" (markdown-exec's options) or a bare word (no-run).
OPTION = re.compile(r'(?P<key>[\w-]+)="(?P<value>[^"]*)"|(?P<word>\S+)')


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, counting from 1
    words: tuple[str, ...]  # the bare words: ("python",) or ("python", "no-run")
    code: str
    options: tuple[tuple[str, str], ...] = ()  # key="value" pairs: (("exec", "on"), ...)

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def executed(self) -> bool:
        """markdown-exec runs the block at build time (its own reading of ``exec="..."``)."""
        return dict(self.options).get("exec", "no").lower() not in {"", "no", "off", "false", "0"}

    @property
    def needs_smollm2(self) -> bool:
        """Titled for SmolLM2: tests/test_smollm2_pages.py runs it, on the downloaded file."""
        return dict(self.options).get("title", "").startswith("SmolLM2")

    @property
    def session(self) -> str:
        return dict(self.options).get("session", "")


def parse_info(info: str) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """An info string's bare words and key="value" options."""
    words, options = [], []
    for m in OPTION.finditer(info):
        if m["word"] is not None:
            words.append(m["word"])
        else:
            options.append((m["key"], m["value"]))
    return tuple(words), tuple(options)


def python_blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        words, options = parse_info(m["info"])
        if words[:1] == ("python",):
            line = text.count("\n", 0, m.start()) + 1
            indent = len(m["indent"])
            code = "".join(row[indent:] for row in m["body"].splitlines(keepends=True))
            blocks.append(Block(path, line, words, code, options))
    return blocks


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_parser_finds_blocks(tmp_path: Path) -> None:
    """The fence pattern on a sample, so that a silent parser bug cannot make every file pass."""
    sample = tmp_path / "sample.md"
    text = (
        "# t\n\n```python\nx = 1\n```\n\n```bash\nls\n```\n\n"
        "- item\n\n  ```python no-run\n  y = 2\n  ```\n~~~~python\nz = '```'\n~~~~\n"
    )
    sample.write_text(text, encoding="utf-8")
    blocks = python_blocks(sample)
    assert [(b.line, b.words, b.code) for b in blocks] == [
        (3, ("python",), "x = 1\n"),
        (13, ("python", "no-run"), "y = 2\n"),
        (16, ("python",), "z = '```'\n"),
    ]
    assert not any(b.executed for b in blocks)


def test_the_parser_reads_markdown_exec_options(tmp_path: Path) -> None:
    sample = tmp_path / "sample.md"
    sample.write_text(
        '```python exec="on" source="above" result="text" session="s"\nx = 1\n```\n\n'
        '```python exec="off"\ny = 2\n```\n',
        encoding="utf-8",
    )
    first, second = python_blocks(sample)
    assert first.words == ("python",) and first.code == "x = 1\n"
    assert dict(first.options) == {
        "exec": "on",
        "source": "above",
        "result": "text",
        "session": "s",
    }
    assert (first.executed, first.session) == (True, "s")
    assert (second.words, second.executed) == (("python",), False)


def test_a_session_belongs_to_one_file() -> None:
    files: dict[str, set[Path]] = {}
    for path in FILES:
        for b in python_blocks(path):
            if b.executed and b.session:
                files.setdefault(b.session, set()).add(path)
    shared = {s: sorted(_id(p) for p in ps) for s, ps in files.items() if len(ps) > 1}
    assert not shared, f"markdown-exec sessions last the whole build: {shared}"


@pytest.mark.parametrize("path", [p for p in FILES if python_blocks(p)], ids=_id)
def test_code_blocks_run(
    path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    blocks = [b for b in python_blocks(path) if "no-run" not in b.words and not b.needs_smollm2]
    code = "".join(b.code for b in blocks)
    if NEEDS_BUILTIN.search(code) and not (BUILTIN_DIR / checkpoint.WEIGHTS_FILE).is_file():
        pytest.skip(
            f"{_id(path)} uses the built-in model (numpylm.load()), and "
            f"{BUILTIN_DIR / checkpoint.WEIGHTS_FILE} does not exist yet"
        )
    if NEEDS_MATPLOTLIB.search(code):
        pytest.importorskip("matplotlib")  # the "plot" extra
    if NEEDS_TRANSFORMERS.search(code):
        pytest.importorskip("torch")  # the "parity" extra
        pytest.importorskip("transformers")
    if NEEDS_GPT2_TOKENIZER.search(code):
        request.getfixturevalue("tiktoken_gpt2")  # GPT-2's BPE files, offline (or skip)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a block's mkdtemp() is cleaned up
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a block that reaches for the Hub must say no-run
    reader: dict[str, object] = {"__name__": "__main__"}  # what reading the page defines
    sessions: dict[str, dict[str, object]] = {}  # what the build's markdown-exec defines
    for block in blocks:
        if block.executed:  # as the build runs it: in its session, or alone
            namespace = sessions.setdefault(block.session, {}) if block.session else {}
            namespace["__name__"] = "__main__"
            before = set(tmp_path.rglob("*"))
        else:
            namespace = reader
        try:
            exec(compile(block.code, block.name, "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"the code block at {block.name} failed: {e!r}") from e
        if block.executed:
            written = [str(w.relative_to(tmp_path)) for w in set(tmp_path.rglob("*")) - before]
            assert not written, (
                f"the code block at {block.name} runs at build time, in the repository's root, "
                f"and must not write files; it wrote {sorted(written)}"
            )
            reader.update((k, v) for k, v in namespace.items() if k != "__name__")


NO_RUN = [b for p in FILES for b in python_blocks(p) if "no-run" in b.words]


@pytest.mark.parametrize("block", NO_RUN, ids=[b.name for b in NO_RUN])
def test_no_run_blocks_are_reported(block: Block) -> None:
    compile(block.code, block.name, "exec")  # it is not run, but it must at least be Python
    pytest.skip(f"{block.name} is marked no-run (it needs the network)")
