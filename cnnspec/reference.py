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
            parts.append(f"{name}={default_text(info.default)}")
    return ", ".join(parts)


def default_text(value: object) -> str:
    """A default as a spec writes it; a square pair as one number: (3, 3) -> 3,
    ((1, 1), (1, 1)) -> 1."""
    if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
        return default_text(value[0])
    return describe(value) if value is not None else "none"


def layer_rows() -> list[tuple[str, str, str]]:
    return [
        (kind, signature(cls) or "-", cls.doc)
        for kind, cls in sorted(REGISTRY.items())
        if not cls.internal
    ]
