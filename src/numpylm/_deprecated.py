"""Old import paths, kept for one release.

Two kinds. ``numpylm.generate`` and ``numpylm.trace`` were modules as well as the functions of
those names, so the function hid its module (``numpylm.generate.stream`` failed); their names
now live in ``numpylm.generation``'s modules, and ``from numpylm.generate import X`` still
works, with a ``DeprecationWarning`` that names the new home of ``X`` (``MOVED``).

Then the modules that moved into the story's folders (``numpylm.model`` is now
``numpylm.models.gpt2.model``, ...: ``RENAMED``): importing an old path warns once and gives the
module itself, so ``numpylm.model.GPT is numpylm.models.gpt2.model.GPT``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence

# old module -> {old name: (new module, new name)}
MOVED: dict[str, dict[str, tuple[str, str]]] = {
    "numpylm.generate": {
        "generate": ("numpylm.generation.loop", "generate"),
        "make_rng": ("numpylm.generation.loop", "make_rng"),
        "PromptIds": ("numpylm.generation.loop", "PromptIds"),
        "generate_batch": ("numpylm.generation.batching", "generate_batch"),
        "decode": ("numpylm.generation.batching", "sample_steps"),
        "Draw": ("numpylm.generation.batching", "Sampled"),
        "Step": ("numpylm.generation.streaming", "Step"),
        "stream": ("numpylm.generation.streaming", "stream"),
        "complete": ("numpylm.generation.streaming", "complete"),
        "complete_batch": ("numpylm.generation.streaming", "complete_batch"),
    },
    "numpylm.trace": {
        name: ("numpylm.generation.tracing", name)
        for name in ("Trace", "TraceStep", "iter_trace", "trace", "response_line")
    },
}


# old module path -> its new path (the module itself moved, whole)
RENAMED: dict[str, str] = {
    f"numpylm.{old}": f"numpylm.{new}"
    for old, new in {
        "tokenizer": "tokens.tokenizer",
        "bpe": "tokens.bpe",
        "model": "models.gpt2.model",
        "backprop": "models.gpt2.backward",
        "initialisation": "models.gpt2.weights",
        "backends": "models.backends",
        "parallel": "models.parallel",
        "padding": "models.padding",
        "formats": "io.formats",
        "checkpoint": "io.checkpoint",
        "loading": "io.loading",
        "context": "generation.context",
        "batching": "generation.batching",
        "streaming": "generation.streaming",
        "tracing": "generation.tracing",
        "train": "training.train",
        "optim": "training.optim",
        "data": "training.data",
        "finetune": "training.finetune",
        "instructions": "training.instructions",
        "chat_data": "training.chat_data",
        "runs": "training.runs",
    }.items()
}


class _RenamedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path in ``RENAMED`` and loads it as the module at its new path."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in RENAMED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = RENAMED[spec.name]
        warnings.warn(
            f"{spec.name} is now {new}; the old path goes in numpylm 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)  # the module itself: one set of globals

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: ``create_module`` gave the module, already imported."""


class _MovedModule(types.ModuleType):
    """A stand-in for an old module: each attribute is fetched from its new home."""

    def __getattr__(self, name: str) -> object:
        try:
            module, new = MOVED[self.__name__][name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None
        warnings.warn(
            f"{self.__name__}.{name} is now {module}.{new}; the old name goes in numpylm 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), new)


def install() -> None:
    """Make the old module paths importable (``MOVED`` without binding them on the package,
    where the functions ``numpylm.generate`` and ``numpylm.trace`` live)."""
    for name in MOVED:
        sys.modules.setdefault(name, _MovedModule(name))
    if not any(isinstance(f, _RenamedFinder) for f in sys.meta_path):
        sys.meta_path.append(_RenamedFinder())
