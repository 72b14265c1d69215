"""The package's layout: the story first, the engineering beside it.

An import graph over ``src/numpylm`` (every import statement, inside functions too) has no
circles, and every import goes down the layers declared here: lower layers never import higher
ones. No private name crosses a module boundary. The model file and the one-prompt loop stay
what a learner can read in one sitting, and the architecture page names functions that exist.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import warnings
from pathlib import Path

import pytest

import numpylm
from numpylm import generation
from numpylm.models.gpt2 import backward, model

SRC = Path(numpylm.__file__).parent
ROOT = SRC.parents[1]

# Lowest first. A module may import modules of lower layers only (and, inside a package that
# is one unit, such as ``sampling`` or ``layers``, its own modules). The story's folders
# (``tokens``, ``models``, ``generation``, ``training``, ``io``) hold modules of several layers:
# each module is placed by its dotted name. A package's ``__init__`` re-exports its modules'
# names for users, so it sits at the top: inside numpylm, imports name the module itself.
LAYERS = [
    ["checks", "memory", "io.checkpoint", "training.optim", "_deprecated"],
    ["tokens.chat_template", "download"],
    ["sampling"],
    ["layers", "tokens.tokenizer"],
    ["models.parallel", "models.padding", "io.formats", "tokens.bpe", "training.data"],
    ["models.cache", "tokens.pretrained"],
    ["models.backends", "models.gpt2.weights"],
    ["models.gpt2.backward"],
    ["models.gpt2.model", "models.llama.weights"],
    ["models.llama.model"],
    ["models.family"],
    ["generation.context", "io.loading", "training.runs", "viz"],
    ["generation.loop", "training.train"],
    ["generation.batching"],
    ["generation.streaming", "training.finetune"],
    ["generation.tracing", "training.instructions", "training.align"],
    ["training.chat_data"],
    ["training.preference_data"],
    ["cli"],
    [
        "__init__",
        "__main__",
        "tokens",
        "models",
        "models.gpt2",
        "models.llama",
        "generation",
        "training",
        "io",
    ],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    """src/numpylm/sampling/top_k.py -> "sampling.top_k"; __init__.py files by their package."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def unit(name: str) -> str:
    """The unit a module belongs to: the longest prefix of its dotted name that has a layer
    ("sampling.top_k" -> "sampling"; "models.gpt2.model" is its own)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        if ".".join(parts[:cut]) in LAYER:
            return ".".join(parts[:cut])
    return name


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every numpylm import of a file: (module imported, names taken from it, line)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name.split(".")[:-1] if not path.name == "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("numpylm"):
                target = node.module.removeprefix("numpylm").lstrip(".")
            else:
                continue
            names = [a.name for a in node.names]
            # "from . import x", "from ..io import x": each x is a module or a name in target
            for n in names:
                sub = ".".join(filter(None, [target, n]))
                is_module = (SRC / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    SRC / sub.replace(".", "/") / "__init__.py"
                ).is_file()
                found.append((sub, [], node.lineno) if is_module else (target, [n], node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("numpylm."):
                    found.append((a.name.removeprefix("numpylm."), [], node.lineno))
    return found


FILES = sorted(SRC.rglob("*.py"))
GRAPH = {module_name(p): imports(p) for p in FILES}


def test_every_module_has_a_layer() -> None:
    missing = sorted({unit(m) for m in GRAPH} - set(LAYER) - {""})
    assert not missing, f"add these modules to LAYERS in {__file__}: {missing}"


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_go_down(name: str) -> None:
    here = unit(name) or "__init__"
    for target, _, line in GRAPH[name]:
        there = unit(target)
        if there == here:  # inside a package that is one unit (sampling, layers)
            continue
        assert LAYER[there] < LAYER[here], (
            f"{name}:{line} imports {target}, which is not in a lower layer than {here}"
        )


def test_no_import_circles() -> None:
    edges = {m: {t for t, _, _ in GRAPH[m] if t in GRAPH and t != m} for m in GRAPH}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            assert state.get(t) != 1, "import circle: " + " -> ".join([*path, m, t])
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_no_private_name_crosses_modules(name: str) -> None:
    for target, names, line in GRAPH[name]:
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{name}:{line} imports private {private} from {target}"
        if target.split(".")[-1].startswith("_") and name != "__init__":
            pytest.fail(f"{name}:{line} imports the private module {target}")


def code_lines(obj: object) -> int:
    """Lines of code of a function: no docstring, no blank lines, no comment-only lines."""
    source = inspect.getsource(obj)  # type: ignore[arg-type]
    tree = ast.parse(source.lstrip() if source.startswith(" ") else source)
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef)
    doc = fn.body[0] if isinstance(fn.body[0], ast.Expr) else None
    skip = set(range(doc.lineno, doc.end_lineno + 1)) if doc and doc.end_lineno else set()
    lines = source.lstrip().splitlines() if source.startswith(" ") else source.splitlines()
    return sum(
        1
        for i, text in enumerate(lines, start=1)
        if i not in skip and text.strip() and not text.strip().startswith("#")
    )


def test_the_model_file_is_the_transformer() -> None:
    path = Path(model.__file__)
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    tree = ast.parse(text)
    imported = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    imported |= {
        (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    }
    imported |= {
        a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level for a in n.names
    }
    banned = {
        "threading",
        "concurrent",
        "threadpoolctl",
        "ctypes",
        "safetensors",
        "json",
        "parallel",
    }
    assert not imported & banned
    # The one forward pass, for inference and training: GPT-2's dropout sites are named (the
    # backend's ``dropout``, which returns its input except in training's backend), but no
    # masks, rates, recording or padding arithmetic are inline.
    for fn in (model.GPT.forward, model.GPT.block):
        body = inspect.getsource(fn).split('"""')[-1]
        assert len(re.findall(r"\bdropout\b", body)) == len(re.findall(r"\bbe\.dropout\(", body))
        for word in ("drop", "keep", "rate", "rng", "record", "tape", "cumsum", "key_mask"):
            assert not re.search(rf"\b{word}\b", body), (fn.__name__, word)
    # Training runs that same forward: there is no second one to keep in step with it.
    text = Path(backward.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^def \w*forward\b", text, re.MULTILINE)


def test_the_one_prompt_loop_reads_like_the_essay() -> None:
    assert code_lines(generation.generate) <= 40
    source = inspect.getsource(generation.generate)
    for step in ("next_logits", "sampler.sample", "append", "eos_id"):
        assert step in source


def test_the_architecture_page_names_real_functions() -> None:
    """The token path on docs/architecture.md: at most 10 steps, each a function that exists
    (imported and looked up here), none in a thread pool, padding helper or format module."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    path = text.split("## The path of one greedy token")[1].split("\n## ")[0]
    steps = re.findall(r"^(\d+)\. `(numpylm\.[\w.]+)`", path, flags=re.M)
    assert 3 <= len(steps) <= 10
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1))
    for _, dotted in steps:
        assert not re.search(r"parallel|padding|formats|checkpoint|backends", dotted), dotted
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj: object = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            assert callable(obj), dotted
            break
        else:
            pytest.fail(f"{dotted} does not exist")


def test_functions_do_not_hide_their_modules() -> None:
    """``numpylm.generate`` and ``numpylm.trace`` are the functions; their modules have other
    names, and the old module paths still import, with a deprecation warning."""
    assert callable(numpylm.generate) and callable(numpylm.trace)
    from numpylm.generation.batching import Sampled, sample_steps
    from numpylm.generation.streaming import stream

    with pytest.warns(DeprecationWarning, match=r"numpylm\.generate\.decode is now"):
        from numpylm.generate import decode  # type: ignore[attr-defined]
    assert decode is sample_steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from numpylm.generate import Draw  # type: ignore[attr-defined]
        from numpylm.generate import stream as old_stream
        from numpylm.trace import iter_trace  # type: ignore[attr-defined]
    assert Draw is Sampled and old_stream is stream and callable(iter_trace)
    with pytest.raises(ImportError):
        from numpylm.generate import nothing_of_that_name  # type: ignore[attr-defined]  # noqa: F401
    assert callable(numpylm.generate)  # importing the old paths bound nothing on the package


@pytest.mark.parametrize("old", sorted(numpylm._deprecated.RENAMED))
def test_moved_modules_warn_and_are_the_same_module(old: str) -> None:
    """Each module that moved into a folder still imports from its old path for one release,
    with a DeprecationWarning naming the new path, and is the very same module object."""
    new = numpylm._deprecated.RENAMED[old]
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=re.escape(f"{old} is now {new}")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
