"""Old import paths, kept for one release: ``numpylm.generate`` and ``numpylm.trace`` were
modules as well as the functions of those names, so the function hid its module
(``numpylm.generate.stream`` failed). The modules are now ``generation``, ``batching``,
``streaming`` and ``tracing``; ``from numpylm.generate import X`` still works, with a
``DeprecationWarning`` that names the new home of ``X``.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

# old module -> {old name: (new module, new name)}
MOVED: dict[str, dict[str, tuple[str, str]]] = {
    "numpylm.generate": {
        "generate": ("numpylm.generation", "generate"),
        "make_rng": ("numpylm.generation", "make_rng"),
        "PromptIds": ("numpylm.generation", "PromptIds"),
        "generate_batch": ("numpylm.batching", "generate_batch"),
        "decode": ("numpylm.batching", "sample_steps"),
        "Draw": ("numpylm.batching", "Sampled"),
        "Step": ("numpylm.streaming", "Step"),
        "stream": ("numpylm.streaming", "stream"),
        "complete": ("numpylm.streaming", "complete"),
        "complete_batch": ("numpylm.streaming", "complete_batch"),
    },
    "numpylm.trace": {
        name: ("numpylm.tracing", name)
        for name in ("Trace", "TraceStep", "iter_trace", "trace", "response_line")
    },
}


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
    """Make the old module paths importable (without binding them on the package, where the
    functions ``numpylm.generate`` and ``numpylm.trace`` live)."""
    for name in MOVED:
        sys.modules.setdefault(name, _MovedModule(name))
