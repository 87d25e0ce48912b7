"""The backends, registered in one table that the CLI, `cnnspec verify` and the tests read.

A script backend is a module (`cnnspec.backends.<name>`) that is a `ScriptBackend`: a `SUFFIX` for
its default output file and an `emit(spec, source_name) -> str` that returns the whole training
script; the ONNX backend builds a model instead (`cnnspec.export`). Each backend writes the
registries' kinds through its emitter tables (cnnspec.emitters). Backends are imported only when used, and the
script backends import no deep-learning framework themselves: they write code that does.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from cnnspec.ir import Spec


class ScriptBackend(Protocol):
    """What a script backend module provides (cnnspec.backends.keras, .pytorch)."""

    NAME: str
    # The default output file's suffix: `<spec>_keras.py`.
    SUFFIX: str

    def emit(self, spec: Spec, source_name: str) -> str:
        """The whole training script of `spec`, read from `source_name`."""
        ...


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    # The package that must be installed to run what the backend makes.
    package: str
    # Whether `cnnspec build --backend NAME` writes a training script for it.
    script: bool
    # The method of each registry entry that is this backend's emitter (see cnnspec.emitters).
    entry_method: str

    def module(self) -> ScriptBackend:
        """The script generator, `cnnspec.backends.<name>`."""
        assert self.script, f"{self.name} writes no script"
        return cast(ScriptBackend, import_module(f"cnnspec.backends.{self.name}"))


REGISTRY: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("keras", package="tensorflow", script=True, entry_method="keras"),
        Backend("pytorch", package="torch", script=True, entry_method="torch"),
        Backend("onnx", package="onnxruntime", script=False, entry_method="onnx"),
    )
}
# The backends that write a training script, in `cnnspec build --backend`'s order.
BACKENDS = tuple(name for name, b in REGISTRY.items() if b.script)


def backend(name: str) -> ScriptBackend:
    """The script generator of backend `name`."""
    if name not in BACKENDS:
        raise KeyError(name)
    return REGISTRY[name].module()
