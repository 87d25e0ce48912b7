"""Evaluating the expressions a spec can write where a value goes: `filters * expand`,
`make_divisible(32 * width)`, `"block" + str(index + 1)`, `stride == 2`.

Lowering replaces every expression by the constant it stands for before an argument model sees
it, so a layer's argument is checked the same way whether it was written `64` or `16 * 4`. The
variables come from a `define`'s parameters, from `let`, and from `repeat`'s `index`. A bare word
that is not a variable stays a word (`activation=relu`, `padding=same`), as it always has; using
one in arithmetic is the error, with a did-you-mean among the variables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cnnspec import codes
from cnnspec import syntax as ast
from cnnspec.diagnostics import ErrorCode, did_you_mean
from cnnspec.schema import CONSTANTS, WORDS
from cnnspec.source import Span


class ExpressionError(Exception):
    """An expression that has no value: reported at `span` with `code`."""

    def __init__(
        self, message: str, span: Span, hint: str | None = None, code: ErrorCode = codes.WRONG_KIND
    ):
        super().__init__(message)
        self.message, self.span, self.hint, self.code = message, span, hint, code


class Word(str):
    """A bare name that is not a variable (`relu`, `same`): a word, usable as a layer's argument
    and in `==`, but not a number."""

    __slots__ = ("known",)
    known: bool  # whether it came from a variable's value (then no did-you-mean applies)

    def __new__(cls, text: str, known: bool = False) -> Word:
        word = super().__new__(cls, text)
        word.known = known
        return word


@dataclass(frozen=True, slots=True)
class Context:
    """What names mean where an expression is evaluated."""

    variables: Mapping[str, ast.Value] = field(default_factory=dict)
    # The channel count of the tensor the current item receives, for `channels()`.
    channels: int | None = None

    def bind(self, **values: ast.Value) -> Context:
        return replace(self, variables={**self.variables, **values})


EMPTY = Context()


# ---- resolving: an expression back into a constant syntax-tree value -------------------------


def resolve(value: ast.Value, context: Context = EMPTY) -> ast.Value:
    """The value with every expression and variable replaced by its constant, as a syntax-tree
    value spanning the text it came from. A call of a layer-like kind (`leaky_relu(alpha=a)`)
    stays a call, its arguments resolved."""
    match value:
        case ast.Name(text=text) if text in context.variables:
            # Located where the value was written (the call's argument): a value wrong for the
            # layer it reaches is reported there, and the note names nothing new.
            return context.variables[text]
        case ast.ListValue(items=items):
            return ast.ListValue(tuple(resolve(v, context) for v in items), value.span)
        case ast.TupleValue(items=items):
            return ast.TupleValue(tuple(resolve(v, context) for v in items), value.span)
        case ast.Call(name=name) if name.text not in BUILTINS:
            args = tuple(
                ast.Arg(arg.key, resolve(arg.value, context), arg.span) for arg in value.args
            )
            return ast.Call(name, args, value.span)
        case ast.Call() | ast.BinOp() | ast.Paren():
            return constant(evaluate(value, context), value.span)
    return value


def constant(value: Any, span: Span) -> ast.Value:
    """A Python value as the syntax-tree value that means it."""
    if isinstance(value, bool) or value is None:
        return ast.Name(WORDS[value], span)
    if isinstance(value, Word):
        return ast.Name(str(value), span)
    if isinstance(value, str):
        return ast.String(value, span)
    if isinstance(value, int):
        return ast.Number(value, str(value), span)
    if isinstance(value, float):
        return ast.Number(value, repr(value), span)
    assert isinstance(value, tuple), value
    return ast.TupleValue(tuple(constant(v, span) for v in value), span)


# ---- evaluating: an expression to a Python value ---------------------------------------------


def evaluate(value: ast.Value, context: Context = EMPTY) -> Any:
    match value:
        case ast.Number(value=number):
            return number
        case ast.Fraction():
            return value.value
        case ast.Dims(values=values):
            return values
        case ast.String(value=text):
            return text
        case ast.Name(text=text):
            if text in context.variables:
                found = evaluate(context.variables[text], context)
                return Word(found, known=True) if isinstance(found, Word) else found
            return CONSTANTS[text] if text in CONSTANTS else Word(text)
        case ast.ListValue(items=items) | ast.TupleValue(items=items):
            return tuple(evaluate(item, context) for item in items)
        case ast.Paren(value=inner):
            return evaluate(inner, context)
        case ast.BinOp(op=op, left=left, right=right):
            return _binary(op, value, evaluate(left, context), evaluate(right, context), context)
        case ast.Call(name=name):
            builtin = BUILTINS.get(name.text)
            if builtin is None:
                raise ExpressionError(
                    f"{name.text}(...) has no value in an expression",
                    value.span,
                    f"functions here: {', '.join(sorted(BUILTINS))}",
                )
            return builtin.call(value, context)
    raise AssertionError(f"unexpected value {value!r}")


_NUMBER_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _binary(op: str, node: ast.BinOp, left: Any, right: Any, context: Context) -> Any:
    if op in ("==", "!="):
        # A word is equal only to a word (`act == relu`); a word that is no variable compared
        # with a number or true/false is a variable that does not exist here.
        for operand, other, side in ((left, right, node.left), (right, left, node.right)):
            if isinstance(operand, Word) and not operand.known and _is_number_or_bool(other):
                _require_number(operand, side, op, context)
    if op == "==":
        return _same(left, right)
    if op == "!=":
        return not _same(left, right)
    if op == "+" and isinstance(left, str) and isinstance(right, str):
        return str(left) + str(right)
    for operand, side in ((left, node.left), (right, node.right)):
        _require_number(operand, side, op, context, strings=op == "+")
    if op == "/" and right == 0:
        raise ExpressionError(f"{_text(node)} divides by zero", node.span)
    return _NUMBER_OPS[op](left, right)


def _is_number_or_bool(value: Any) -> bool:
    return isinstance(value, int | float)


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return bool(left == right)


def _require_number(
    value: Any, node: ast.Value, op: str, context: Context, strings: bool = False
) -> None:
    if _is_number(value):
        return
    if isinstance(value, Word) and not value.known:
        variables = [*context.variables, *BUILTINS]
        raise ExpressionError(
            f"unknown name '{value}'",
            node.span,
            did_you_mean(value, variables)
            or (
                f"the names here are {', '.join(sorted(context.variables))}"
                if context.variables
                else "only a define's parameters, let and repeat's index are variables"
            ),
        )
    hint = "join words with +: both sides must be strings, str(3) makes one" if strings else None
    raise ExpressionError(
        f"'{op}' needs numbers, but {_describe(value)} is not one", node.span, hint
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if isinstance(value, Word):
        return f"the word {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, tuple):
        return "a tuple"
    return WORDS[value] if value is None or isinstance(value, bool) else repr(value)


def _text(node: ast.Value) -> str:
    match node:
        case ast.Number(text=text):
            return text
        case ast.Name(text=text):
            return text
        case ast.BinOp(op=op, left=left, right=right):
            return f"{_text(left)} {op} {_text(right)}"
        case ast.Paren(value=inner):
            return f"({_text(inner)})"
    return "..."


# ---- built-in functions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Builtin:
    """A function an expression can call, with its parameters and their defaults."""

    function: Callable[..., Any]
    params: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    varargs: bool = False  # max(a, b, c, ...)
    numbers: bool = True  # every argument must be a number
    doc: str = ""

    def call(self, node: ast.Call, context: Context) -> Any:
        name = node.name.text
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for arg in node.args:
            value = evaluate(arg.value, context)
            if self.numbers:
                _require_number(value, arg.value, f"{name}()", context)
            if arg.key is None:
                positional.append(value)
            elif arg.key.text not in self.params or self.varargs:
                raise ExpressionError(
                    f"{name}() has no argument '{arg.key.text}'",
                    arg.key.span,
                    did_you_mean(arg.key.text, self.params) or f"{name}({', '.join(self.params)})",
                )
            else:
                keywords[arg.key.text] = value
        if self.varargs:
            if not positional:
                raise ExpressionError(f"{name}() needs at least one value", node.span)
            try:
                return self.function(*positional)
            except ValueError as error:
                raise ExpressionError(f"{name}(): {error}", node.span) from None
        if len(positional) > len(self.params):
            raise ExpressionError(
                f"{name}() takes {len(self.params)} argument{'s' if len(self.params) != 1 else ''}",
                node.span,
                f"{name}({', '.join(self.params)})",
            )
        bound = dict(zip(self.params, positional, strict=False))
        for key, value in keywords.items():
            if key in bound:
                raise ExpressionError(f"argument '{key}' of {name}() given twice", node.span)
            bound[key] = value
        for param in self.params:
            if param not in bound:
                if param not in self.defaults:
                    raise ExpressionError(
                        f"{name}() is missing its argument '{param}'",
                        node.span,
                        f"{name}({', '.join(self.params)})",
                    )
                bound[param] = self.defaults[param]
        try:
            return self.function(*(bound[param] for param in self.params))
        except ValueError as error:
            raise ExpressionError(f"{name}(): {error}", node.span) from None


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """The nearest multiple of `divisor` to `value`, never below `min_value` (default: the
    divisor) and never more than 10% under `value`: keras.applications' rounding of channel
    counts (MobileNet's `_depth`, EfficientNet's `round_filters` after the width factor)."""
    if divisor <= 0:
        raise ValueError("divisor must be positive")
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def _letter(index: int) -> str:
    if not isinstance(index, int) or not 0 <= index < 26:
        raise ValueError(f"needs a whole number from 0 to 25, got {index}")
    return "abcdefghijklmnopqrstuvwxyz"[index]


def _str(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return WORDS[value]
    return str(value)


def _truth(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"needs true or false, got {_describe(value)}")
    return value


def _all(*values: Any) -> bool:
    return all([_truth("all", v) for v in values])


def _any(*values: Any) -> bool:
    return any([_truth("any", v) for v in values])


def _not(value: Any) -> bool:
    return not _truth("not", value)


def _channels(node: ast.Call, context: Context) -> int:
    if node.args:
        raise ExpressionError("channels() takes no arguments", node.span)
    if context.channels is None:
        raise ExpressionError(
            "the channel count of this layer's input is not known here", node.span
        )
    return context.channels


class _ChannelsBuiltin(Builtin):
    def call(self, node: ast.Call, context: Context) -> Any:
        return _channels(node, context)


BUILTINS: dict[str, Builtin] = {
    "int": Builtin(int, ("x",), doc="toward zero, as Python's int()"),
    "float": Builtin(float, ("x",)),
    "round": Builtin(round, ("x",), doc="to the nearest whole number, halves to even"),
    "ceil": Builtin(math.ceil, ("x",)),
    "floor": Builtin(math.floor, ("x",)),
    "abs": Builtin(abs, ("x",)),
    "sqrt": Builtin(math.sqrt, ("x",)),
    "max": Builtin(max, ("values",), varargs=True),
    "min": Builtin(min, ("values",), varargs=True),
    "make_divisible": Builtin(
        make_divisible,
        ("value", "divisor", "min_value"),
        {"divisor": 8, "min_value": None},
        doc="keras.applications' channel rounding",
    ),
    "letter": Builtin(_letter, ("index",), doc="0 → a, 1 → b, ... (block names: block2a)"),
    # Conditions: all(stride == 1, filters_in == filters_out), any(...), not(project).
    "all": Builtin(_all, ("conditions",), varargs=True, numbers=False),
    "any": Builtin(_any, ("conditions",), varargs=True, numbers=False),
    "not": Builtin(_not, ("condition",), numbers=False),
    "str": Builtin(_str, ("x",), numbers=False),
    "channels": _ChannelsBuiltin(lambda: 0, (), doc="the channel count of the input here"),
}
