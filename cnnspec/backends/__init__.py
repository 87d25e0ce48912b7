"""The backends, registered in one table that the CLI, `cnnspec verify` and the tests read.

A script backend is a module (`cnnspec.backends.<name>`) with a `SUFFIX` for its default output
file and an `emit(spec, source_name) -> str` that returns the whole training script; the ONNX
backend builds a model instead (`cnnspec.export`). Backends are imported only when used, and the
script backends import no deep-learning framework themselves: they write code that does.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    # The package that must be installed to run what the backend makes.
    package: str
    # Whether `cnnspec build --backend NAME` writes a training script for it.
    script: bool

    def module(self) -> ModuleType:
        """The script generator, `cnnspec.backends.<name>`."""
        assert self.script, f"{self.name} writes no script"
        return import_module(f"cnnspec.backends.{self.name}")


REGISTRY: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("keras", package="tensorflow", script=True),
        Backend("pytorch", package="torch", script=True),
        Backend("onnx", package="onnxruntime", script=False),
    )
}
# The backends that write a training script, in `cnnspec build --backend`'s order.
BACKENDS = tuple(name for name, b in REGISTRY.items() if b.script)


def backend(name: str) -> ModuleType:
    """The script generator of backend `name`."""
    if name not in BACKENDS:
        raise KeyError(name)
    return REGISTRY[name].module()
