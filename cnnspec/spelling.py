"""Values and calls in spec syntax, the way a person writes them: positional arguments where
the kind takes them, square kernels as one number, defaults left out. The importer's writer
writes a whole spec with them, and the diagram labels each box with its layer's call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnspec.schema import CONSTANTS, WORDS
from cnnspec.syntax import IDENTIFIER


@dataclass(frozen=True, slots=True)
class Spelled:
    """A value already in spec syntax, such as `leaky_relu(alpha=0.2)`."""

    text: str


def value_text(value: Any) -> str:
    if isinstance(value, Spelled):
        return value.text
    if value is None or isinstance(value, bool):
        return WORDS[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return float_text(value)
    if isinstance(value, str):
        if IDENTIFIER.match(value) and value not in CONSTANTS:
            return value
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        inner = ", ".join(value_text(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise TypeError(f"no spec syntax for {value!r}")


def float_text(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    text = repr(value)
    single = _float32_text(value)
    if single is not None and len(single) < len(text):
        # Every backend computes in float32: the shortest text of the same float32 value
        # (Keras configs hold 3409.9760250000004 for a float32 3409.976).
        text = single
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else ""
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


def _float32_text(value: float) -> str | None:
    import struct

    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except (OverflowError, struct.error):
        return None
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            return repr(float(text))
    return None


def simplest(value: Any) -> Any:
    """(3, 3) as 3, ((1, 1), (2, 2)) as (1, 2): the short forms every pair argument takes."""
    if isinstance(value, tuple) and len(value) == 2:
        a, b = (simplest(v) for v in value)
        if (
            isinstance(value[0], tuple)
            and isinstance(value[1], tuple)
            and (isinstance(a, tuple) or isinstance(b, tuple))
        ):
            return value  # ((top, bottom), (left, right)) stays whole unless both are even
        if a == b and not isinstance(a, tuple) and type(a) is type(b):
            return a
        return (a, b)
    return value


def field_default(kind: str, key: str) -> Any:
    from cnnspec.registry import REGISTRY

    info = REGISTRY[kind].model_fields[key]
    return None if info.is_required() else info.default


def same_value(a: Any, b: Any) -> bool:
    a, b = simplest(a), simplest(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return bool(a == b)


def call_text(
    kind: str, args: dict[str, Any], name: Any = None, omit: dict[str, Any] | None = None
) -> str:
    """`kind(args..., name=NAME)`, leaving out each argument equal to its default (or to the
    value `omit` gives it, the `defaults` in force)."""
    from cnnspec.registry import REGISTRY

    cls = REGISTRY[kind]
    kept: dict[str, Any] = {}
    for key, info in cls.model_fields.items():
        required = info.is_required()
        if key not in args and (required or key not in (omit or {})):
            continue
        value = args.get(key, None if required else info.default)
        if omit is not None and key in omit:
            standard = omit[key]
        elif required:
            kept[key] = value
            continue
        else:
            standard = info.default
        if not same_value(value, standard):
            kept[key] = value
    for key, value in args.items():
        if key not in cls.model_fields:
            kept[key] = value  # a parameter's expression, checked by the compiler
    parts: list[str] = []
    positional = list(getattr(cls, "positional", ()))
    for key in positional:
        if key in kept and (not parts or len(parts) == positional.index(key)):
            parts.append(value_text(simplest(kept.pop(key))))
        else:
            break
    parts += [f"{key}={value_text(simplest(value))}" for key, value in kept.items()]
    if name is not None:
        parts.append(f"name={value_text(name)}")
    return f"{kind}({', '.join(parts)})"
