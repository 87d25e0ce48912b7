"""Backends turn a checked spec into something that runs. Each one is a module with a `NAME`, a
`SUFFIX` for its default output file and an `emit(spec) -> str` that returns the whole file.

Backends are imported only when used, and they import no deep-learning framework themselves:
they write code that does.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

BACKENDS = ("keras", "pytorch")


def backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise KeyError(name)
    return import_module(f"cnnspec.backends.{name}")
