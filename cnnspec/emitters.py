"""Each backend's emitters, as a table keyed by entry class (sqlglot's `TRANSFORMS` pattern).

A kind is defined once, in its registry entry, with every backend's emitter as a method of the
entry (`keras`, `torch`, `onnx`). A backend reads its emitters through an `Emitters` table
rather than calling the methods directly, so that:
- an entry without an emitter for the backend is an `Unsupported` error naming the kind and
  the backend (located at the spec's line by `registry.emitting`), never an AttributeError or
  a silently skipped node;
- a backend that lives outside the entries (a JAX backend, say) adds its own emitters to its
  table by entry class, `table.register(Conv2D)(function)`, without editing the entries;
- the completeness test (tests/test_completeness.py) can walk every registry against every
  table and say what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cnnspec.registry import Unsupported


@dataclass
class Emitters:
    """One backend's emitters for the entries of one registry: an entry's own `method`
    (defined by the entry or its family's base, unless that is marked `registry.no_emitter`),
    unless the backend registered another for it."""

    backend: str
    method: str
    entries: Mapping[str, type]
    added: dict[type, Callable[..., Any]] = field(default_factory=dict)

    def register(self, entry: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorate a function of (entry instance, ...) as this backend's emitter for `entry`."""

        def add(function: Callable[..., Any]) -> Callable[..., Any]:
            self.added[entry] = function
            return function

        return add

    def covers(self, entry: type) -> bool:
        return entry in self.added or self._own(entry) is not None

    def __getitem__(self, entry: type) -> Callable[..., Any]:
        """The emitter of `entry`: call it with the entry's instance, then the method's
        arguments. Unsupported where the entry has none."""
        if entry in self.added:
            return self.added[entry]
        own = self._own(entry)
        if own is None:
            kind = getattr(entry, "kind", entry.__name__)
            raise Unsupported(
                f"the {self.backend} backend has no emitter for {kind}",
                hint=f"write it as another kind, or use another backend than {self.backend}",
            )
        return own

    def emit(self, instance: Any, *args: Any, **kwargs: Any) -> Any:
        """What `instance`'s emitter writes."""
        return self[type(instance)](instance, *args, **kwargs)

    def missing(self) -> Iterator[str]:
        """The kinds of the registry that this backend cannot write."""
        for kind, entry in self.entries.items():
            if not self.covers(entry):
                yield kind

    def _own(self, entry: type) -> Callable[..., Any] | None:
        method = getattr(entry, self.method, None)
        if method is None or getattr(method, "__no_emitter__", False):
            return None
        return method


@cache
def tables(backend: str) -> dict[str, Emitters]:
    """Backend `backend`'s emitter table for each registry it writes, by registry name (one
    set per backend, so that what a backend registers stays)."""
    from cnnspec import layers  # noqa: F401  (registers the layer kinds)
    from cnnspec.augment import AUGMENTATIONS
    from cnnspec.backends import REGISTRY as BACKENDS
    from cnnspec.losses import LOSSES
    from cnnspec.metrics import METRICS
    from cnnspec.optimizers import OPTIMIZERS
    from cnnspec.registry import REGISTRY
    from cnnspec.schedules import SCHEDULES
    from cnnspec.sections import CALLBACKS

    method = BACKENDS[backend].entry_method
    found = {"layers": Emitters(backend, method, REGISTRY)}
    if BACKENDS[backend].script:  # the ONNX backend writes a model, not a training script
        found["augmentations"] = Emitters(backend, method, AUGMENTATIONS)
        found["optimizers"] = Emitters(backend, method, OPTIMIZERS)
        found["schedules"] = Emitters(backend, method, SCHEDULES)
        found["losses"] = Emitters(backend, method, LOSSES)
        found["metrics"] = Emitters(backend, method, METRICS)
        found["callbacks"] = Emitters(backend, method, CALLBACKS)
    return found
