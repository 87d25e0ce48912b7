"""Framework-neutral pieces of code emission: calls as data, literals rendered with repr(), and
statements wrapped the way a formatter would.

No spec text is ever spliced into generated code: a value from a spec reaches it only through
`literal()` (repr of a Python value) or as a `Call` whose function name is one of cnnspec's own
constants.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LINE_LENGTH = 88  # ruff's and black's default, so generated code is clean under a stock config
INDENT = "    "


class Call:
    """A call as data: `Call("layers.Conv2D", 32, kernel_size=3)` renders as
    `layers.Conv2D(32, kernel_size=3)`. `func` is always a constant of cnnspec's, never spec text."""

    __slots__ = ("args", "func", "kwargs")

    def __init__(self, func: str, *args: Any, **kwargs: Any) -> None:
        assert all(part.isidentifier() for part in func.split(".")), func
        self.func = func
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return render(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Call) and render(self) == render(other)

    def __hash__(self) -> int:
        return hash(render(self))


@dataclass(frozen=True, slots=True)
class Code:
    """A fixed expression of cnnspec's own, such as a variable name: rendered as is."""

    text: str

    def __repr__(self) -> str:
        return self.text


def literal(value: Any) -> str:
    """Python source for a value. Strings prefer double quotes, as ruff format writes them."""
    if isinstance(value, Call | Code):
        return render(value)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot emit the non-finite number {value!r}")
        return repr(value)
    if isinstance(value, str):
        text = repr(value)
        if text.startswith("'") and '"' not in value:
            text = '"' + text[1:-1] + '"'
        return text
    if isinstance(value, tuple):
        items = [literal(v) for v in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot emit a {type(value).__name__} as a literal")


def _arguments(call: Call) -> list[str]:
    return [literal(a) for a in call.args] + [f"{k}={literal(v)}" for k, v in call.kwargs.items()]


def render(call: Call | Code) -> str:
    if isinstance(call, Code):
        return call.text
    return f"{call.func}({', '.join(_arguments(call))})"


def statement(prefix: str, call: Call, suffix: str = "", indent: int = 1) -> list[str]:
    """`prefix + call + suffix` as lines no longer than LINE_LENGTH where possible: on one line,
    else the arguments on one indented line, else one argument per line with a trailing comma."""
    pad = INDENT * indent
    flat = f"{pad}{prefix}{render(call)}{suffix}"
    if len(flat) <= LINE_LENGTH:
        return [flat]
    arguments = _arguments(call)
    joined = f"{pad}{INDENT}{', '.join(arguments)}"
    # A formatter splits a trailing call `f(...)(x)` at its last bracket when everything
    # before that fits; one argument per line with a trailing comma reads better and stays.
    trailer_split = suffix.startswith("(") and len(f"{pad}{prefix}{render(call)}(") <= LINE_LENGTH
    if len(joined) <= LINE_LENGTH and not trailer_split:
        return [f"{pad}{prefix}{call.func}(", joined, f"{pad}){suffix}"]
    return [
        f"{pad}{prefix}{call.func}(",
        *(f"{pad}{INDENT}{argument}," for argument in arguments),
        f"{pad}){suffix}",
    ]


def sequence(prefix: str, items: Iterable[Any], suffix: str = "", indent: int = 1) -> list[str]:
    """A list literal, one item per line when it is too long for one (as formatters do: a
    split collection gets a trailing comma and one item per line)."""
    pad = INDENT * indent
    rendered = [literal(item) for item in items]
    flat = f"{pad}{prefix}[{', '.join(rendered)}]{suffix}"
    if len(flat) <= LINE_LENGTH:
        return [flat]
    lines = [f"{pad}{prefix}["]
    for item in rendered:
        lines.append(f"{pad}{INDENT}{item},")
    lines.append(f"{pad}]{suffix}")
    return lines


def mapping(prefix: str, items: dict[str, Any], indent: int = 0) -> list[str]:
    """A dict literal, one item per line when it is too long for one."""
    pad = INDENT * indent
    flat = f"{pad}{prefix}{literal(items)}"
    if len(flat) <= LINE_LENGTH:
        return [flat]
    lines = [f"{pad}{prefix}{{"]
    for key, value in items.items():
        entry = f"{pad}{INDENT}{literal(key)}: {literal(value)},"
        if len(entry) <= LINE_LENGTH or not isinstance(value, str):
            lines.append(entry)
            continue
        # A long text as implicitly joined parts in parentheses, as a formatter leaves it.
        lines.append(f"{pad}{INDENT}{literal(key)}: (")
        width = LINE_LENGTH - len(pad) - 2 * len(INDENT) - 2
        lines += [f"{pad}{INDENT * 2}{literal(part)}" for part in _parts(value, width)]
        lines.append(f"{pad}{INDENT}),")
    lines.append(f"{pad}}}")
    return lines


def _parts(text: str, width: int) -> list[str]:
    """`text` in pieces whose literals are at most `width` long, broken after spaces."""
    parts = []
    while len(literal(text)) > width:
        cut = text.rfind(" ", 1, width - 2) + 1 or width - 2
        parts.append(text[:cut])
        text = text[cut:]
    return [*parts, text]
