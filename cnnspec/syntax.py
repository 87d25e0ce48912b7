"""The syntax tree of a spec, and the parser that builds it with every node's span.

The tree mirrors the generic grammar: settings, calls and sections. Meaning is given later, by
`cnnspec.lower`, so this module knows nothing about layers or sections.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Union

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from cnnspec.diagnostics import Diagnostics
from cnnspec.source import Source, Span

# A string or a comment, as the grammar's STRING and COMMENT tokens read them, for scans that must
# not take a `#` inside a string for a comment (the formatter's comments, an editor's context).
# A string's closing quote is optional so that text being typed, `directory("chest x`, still
# reads as a string; in a text that parses every string is closed.
STRING_OR_COMMENT = re.compile(r""""(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|#[^\n]*""")


# --------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class Name:
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Number:
    value: int | float
    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Fraction:
    numerator: Number
    denominator: Number
    span: Span

    @property
    def value(self) -> float:
        return self.numerator.value / self.denominator.value


@dataclass(frozen=True, slots=True)
class Dims:
    values: tuple[int, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class ListValue:
    items: tuple[Value, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class TupleValue:
    items: tuple[Value, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Arg:
    key: Name | None
    value: Value
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    name: Name
    args: tuple[Arg, ...]
    span: Span


Value = Union[Name, Number, Fraction, Dims, String, ListValue, TupleValue, Call]  # noqa: UP007

# --------------------------------------------------------------------------------------------
# Items


@dataclass(frozen=True, slots=True)
class Setting:
    key: Name
    value: Value
    span: Span


@dataclass(frozen=True, slots=True)
class Section:
    key: Name
    label: Name | Number | None
    items: tuple[Item, ...]
    span: Span


Item = Union[Setting, Call, Section]  # noqa: UP007


@dataclass(slots=True)
class Document:
    source: Source
    items: tuple[Item, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# Parsing


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("cnnspec").joinpath("grammar.lark").read_text(encoding="utf-8")
    # cache=True keeps the LALR tables between processes: it makes `cnnspec check` start fast.
    return Lark(
        grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True, cache=True
    )


def _token_span(token: Token) -> Span:
    return Span(
        token.line or 1,
        token.column or 1,
        token.end_line or token.line or 1,
        token.end_column or (token.column or 1) + 1,
        token.start_pos or 0,
        token.end_pos or (token.start_pos or 0) + 1,
    )


def _tree_span(tree: Tree) -> Span:
    meta = tree.meta
    return Span(
        meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos
    )


def _number(token: Token) -> Number:
    text = str(token)
    value: int | float = int(text) if token.type == "INT" else float(text)
    return Number(value, text, _token_span(token))


def _unquote(text: str) -> str:
    body = text[1:-1]
    return body.encode("utf-8").decode("unicode_escape") if "\\" in body else body


class _BadValue(Exception):
    """A value that parses but cannot mean anything, such as 1/0."""

    def __init__(self, span: Span, message: str) -> None:
        super().__init__(message)
        self.span = span
        self.message = message


def _value(node: Tree | Token) -> Value:
    assert isinstance(node, Tree), node
    kind = node.data
    children = node.children
    if kind == "number":
        return _number(children[0])
    if kind == "name":
        return Name(str(children[0]), _token_span(children[0]))
    if kind == "string":
        return String(_unquote(str(children[0])), _token_span(children[0]))
    if kind == "dims":
        token = children[0]
        return Dims(tuple(int(part) for part in str(token).split("x")), _token_span(token))
    if kind == "fraction":
        numerator, denominator = _number(children[0]), _number(children[1])
        span = numerator.span.to(denominator.span)
        if denominator.value == 0:
            raise _BadValue(span, f"{numerator.text}/{denominator.text} divides by zero")
        return Fraction(numerator, denominator, span)
    if kind == "call":
        return _call(node)
    if kind == "list":
        return ListValue(tuple(_value(c) for c in children if c is not None), _tree_span(node))
    if kind == "tuple":
        return TupleValue(tuple(_value(c) for c in children if c is not None), _tree_span(node))
    raise AssertionError(f"unexpected value node {kind}")


def _call(node: Tree) -> Call:
    name_token, *arg_nodes = node.children
    args = []
    for arg in arg_nodes:
        if arg is None:
            continue
        key_token, value_node = arg.children
        key = Name(str(key_token), _token_span(key_token)) if key_token is not None else None
        args.append(Arg(key, _value(value_node), _tree_span(arg)))
    return Call(Name(str(name_token), _token_span(name_token)), tuple(args), _tree_span(node))


def _item(node: Tree) -> Item:
    if node.data == "call":
        return _call(node)
    if node.data == "setting":
        key, value = node.children
        return Setting(Name(str(key), _token_span(key)), _value(value), _tree_span(node))
    if node.data == "section":
        key, label, *items = node.children
        label_value = _value(label) if label is not None else None
        assert label_value is None or isinstance(label_value, Name | Number)
        return Section(
            Name(str(key), _token_span(key)),
            label_value,
            tuple(_item(i) for i in items),
            _tree_span(node),
        )
    raise AssertionError(f"unexpected item node {node.data}")


_TOKEN_WORDS = {
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "EQUAL": "'='",
    "SLASH": "'/'",
    "NAME": "a name",
    "INT": "a number",
    "NUMBER": "a number",
    "DIMS": "dimensions like 32x32x3",
    "STRING": "a string",
    "$END": "end of file",
}


def _describe_expected(expected: set[str]) -> str:
    words = sorted({_TOKEN_WORDS.get(t, t.lower()) for t in expected})
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _unclosed_bracket(source: Source, upto: int) -> tuple[str, int] | None:
    """The innermost bracket opened before `upto` and never closed, ignoring comments and strings."""
    stack: list[tuple[str, int]] = []
    pairs = {"}": "{", ")": "(", "]": "["}
    text = source.text
    i = 0
    while i < min(upto, len(text)):
        ch = text[i]
        if ch == "#":
            newline = text.find("\n", i)
            i = len(text) if newline < 0 else newline
            continue
        if ch in "\"'":
            close = text.find(ch, i + 1)
            i = len(text) if close < 0 else close + 1
            continue
        if ch in "{([":
            stack.append((ch, i))
        elif ch in pairs and stack and stack[-1][0] == pairs[ch]:
            stack.pop()
        i += 1
    return stack[-1] if stack else None


def _acceptable(error: UnexpectedInput) -> set[str]:
    """The tokens the parser would really accept here. LALR's own `expected` set can include
    tokens of merged states (a ']' inside a call), so ask the parser state itself; a '/' that
    would only continue a fraction is left out as noise."""
    expected = set(getattr(error, "expected", set()) or set())
    interactive = getattr(error, "interactive_parser", None)
    if interactive is not None:
        expected = set(interactive.accepts())
    return expected - {"SLASH"}


def _report(error: UnexpectedInput, source: Source, diagnostics: Diagnostics) -> None:
    if isinstance(error, UnexpectedCharacters):
        offset = error.pos_in_stream
        char = source.text[offset] if offset < len(source.text) else ""
        hint = None
        if char == '"' or char == "'":
            hint = "strings must be closed on the same line"
        elif char in "-+" or char.isdigit():
            hint = "numbers look like 3, 0.5, 1e-4 or 1/255; sizes like 32x32x3"
        diagnostics.error("E001", f"unexpected character {char!r}", source.span_at(offset), hint)
        return
    token = getattr(error, "token", None)
    at_end = isinstance(error, UnexpectedEOF) or (token is not None and token.type == "$END")
    expected = _acceptable(error)
    if at_end:
        opened = _unclosed_bracket(source, len(source.text))
        if opened is not None:
            bracket, offset = opened
            closer = {"{": "}", "(": ")", "[": "]"}[bracket]
            span = source.span_at(offset)
            diagnostics.error(
                "E003",
                f"unexpected end of file: '{bracket}' opened at line {span.line} is never closed",
                source.end_span(),
                f"add '{closer}' to close it",
            )
        else:
            diagnostics.error(
                "E003",
                "unexpected end of file",
                source.end_span(),
                f"expected {_describe_expected(expected)}" if expected else None,
            )
        return
    assert isinstance(error, UnexpectedToken) and token is not None
    text = str(token)
    span = _token_span(token)
    hint = f"expected {_describe_expected(expected)}" if expected else None
    if token.type in {"INT", "NUMBER", "DIMS", "STRING"} and "NAME" in expected:
        hint = "every item is `key value`, `name(args)` or `name { ... }`: a value needs a key"
    if token.type == "RBRACE":
        opened = _unclosed_bracket(source, token.start_pos or 0)
        if opened is None or opened[0] != "{":
            hint = "this '}' closes nothing"
    diagnostics.error("E002", f"unexpected {text!r}", span, hint)


# A top-level section written at the start of a line: where parsing resumes after an error.
_SECTION_START = re.compile(r"^(?:model|data|augment|train|evaluate)\b[^\n{}]*\{", re.MULTILINE)


def _error_offset(error: UnexpectedInput, text: str) -> int:
    if isinstance(error, UnexpectedCharacters):
        return error.pos_in_stream
    token = getattr(error, "token", None)
    if token is None or token.type == "$END" or token.start_pos is None:
        return len(text)
    return token.start_pos


def parse(source: Source, diagnostics: Diagnostics) -> Document | None:
    """Parse `source`. On a syntax error, report it and return None.

    After a syntax error the rest of its section cannot be trusted, but the sections after it
    can: parsing resumes at the next top-level section that starts a line, with everything
    before it blanked out (newlines kept, so positions stay exact). Each broken section gives
    one error, and no error is a cascade of another."""
    text = source.text
    failed = False
    while True:
        try:
            tree = _parser().parse(text)
        except UnexpectedInput as error:
            failed = True
            _report(error, Source(source.path, text), diagnostics)
            offset = _error_offset(error, text)
            resume = next((m.start() for m in _SECTION_START.finditer(text, offset + 1)), None)
            if resume is None:
                return None
            text = re.sub(r"[^\n]", " ", text[:resume]) + text[resume:]
            continue
        break
    if failed:
        return None
    try:
        return Document(source, tuple(_item(child) for child in tree.children))
    except _BadValue as error:
        diagnostics.error("E104", error.message, error.span)
        return None
