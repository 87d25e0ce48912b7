"""The language reference, generated from the registry so that docs and checker cannot drift."""

from __future__ import annotations

import cnnspec.layers  # noqa: F401 - registers every layer kind
from cnnspec.binding import Bound, describe
from cnnspec.registry import REGISTRY


def signature(model: type[Bound]) -> str:
    """`filters, kernel=3, stride=1, ...`: required arguments bare, the rest with defaults;
    positional ones first, in order."""
    fields = model.model_fields
    order = [*model.positional, *(f for f in fields if f not in model.positional)]
    parts = []
    for name in order:
        info = fields[name]
        if info.is_required():
            parts.append(name)
        else:
            default = _compact(info.default)
            parts.append(f"{name}={describe(default) if default is not None else 'none'}")
    return ", ".join(parts)


def _compact(value: object) -> object:
    """A square pair as one number, the way people write it: (3, 3) -> 3, ((1, 1), (1, 1)) -> 1."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return _compact(value[0])
    return value


def layer_rows() -> list[tuple[str, str, str]]:
    return [
        (kind, signature(cls) or "-", cls.doc)
        for kind, cls in sorted(REGISTRY.items())
        if not cls.internal
    ]
