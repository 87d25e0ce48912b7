"""The syntax tree of a spec, and the parser that builds it with every node's span.

The tree mirrors the generic grammar (cnnspec/grammar.lark): settings, calls and sections.
Meaning is given later, by `cnnspec.lower`, so this module knows nothing about layers or
sections.

The parser is written by hand, a recursive descent over one regular-expression lexer. The
grammar file is its specification: the tests parse every shipped spec, every diagnostics
fixture and thousands of random and mutated texts with both this parser and lark's LALR parser
built from grammar.lark, and require the same trees, the same first error at the same token
and the same set of tokens that could have come there. Written by hand because it is what
`cnnspec check` spends its start-up on otherwise: importing lark and loading its tables took a
quarter of a whole check process.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Union

from cnnspec import codes
from cnnspec.diagnostics import Diagnostics
from cnnspec.source import Source, Span

# A name without dots (the grammar's NAME, one segment): what a layer's name, a branch's label
# or a bare word value may be. The importer's writer and renderer spell names by it too.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

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
class BinOp:
    """`left op right`: op is one of + - * / == != < <= > >=. (A number divided by a number,
    `1/255`, is a Fraction.)"""

    op: str
    left: Value
    right: Value
    span: Span


@dataclass(frozen=True, slots=True)
class Paren:
    """`(value)`: kept so that text and formatter see the parentheses the writer wrote."""

    value: Value
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


Value = Union[  # noqa: UP007
    Name, Number, Fraction, Dims, String, ListValue, TupleValue, Call, BinOp, Paren
]

# --------------------------------------------------------------------------------------------
# Items


@dataclass(frozen=True, slots=True)
class Setting:
    """`key value`, or `key target = value` (`let filters = 32 * width`)."""

    key: Name
    value: Value
    span: Span
    target: Name | None = None


@dataclass(frozen=True, slots=True)
class Section:
    key: Name
    # A name or a number (`block conv1`, `repeat 3`), a call (`define mbconv(filters, ...)`) or
    # any other expression (`if stride == 2`); what it may be is the lowering's concern.
    label: Value | None
    items: tuple[Item, ...]
    span: Span


Item = Union[Setting, Call, Section]  # noqa: UP007


@dataclass(slots=True)
class Document:
    source: Source
    items: tuple[Item, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# Tokens: the grammar's terminals, tried in its priority order (DIMS, NUMBER, INT first).

_TOKENS = re.compile(
    r"""(?P<WS>\s+)
      | (?P<COMMENT>\#[^\n]*)
      | (?P<DIMS>-?[0-9]+(?:x-?[0-9]+)+(?![A-Za-z0-9_.]))
      | (?P<NUMBER>-?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|-?[0-9]+[eE][-+]?[0-9]+)
      | (?P<INT>-?[0-9]+)
      | (?P<NAME>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_*][A-Za-z0-9_*]*)*)
      | (?P<STRING>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<LBRACE>\{) | (?P<RBRACE>\}) | (?P<LPAR>\() | (?P<RPAR>\)) | (?P<LSQB>\[)
      | (?P<RSQB>\]) | (?P<COMMA>,) | (?P<COMPARE>==|!=|<=|>=|<|>) | (?P<EQUAL>=)
      | (?P<SLASH>/) | (?P<PLUS>\+) | (?P<MINUS>-) | (?P<STAR>\*)""",
    re.VERBOSE,
)
END = "$END"


@dataclass(frozen=True, slots=True)
class Token:
    type: str
    text: str
    start: int
    end: int


class _Unexpected(Exception):
    """A syntax error: `token` (a real token, an ERROR at a character no terminal matches, or
    END), and the tokens that could have come there instead."""

    def __init__(self, token: Token, expected: frozenset[str]) -> None:
        super().__init__(token.text)
        self.token = token
        self.expected = expected


def _lex(text: str, position: int = 0) -> list[Token]:
    """The tokens of `text` from `position` (whitespace and comments dropped), ending with
    END, or with an ERROR token at the first character no terminal matches."""
    tokens = []
    length = len(text)
    match = _TOKENS.match
    while position < length:
        found = match(text, position)
        if found is None:
            tokens.append(Token("ERROR", text[position], position, position + 1))
            return tokens
        kind = found.lastgroup
        assert kind is not None
        if kind != "WS" and kind != "COMMENT":
            tokens.append(Token(kind, found.group(), position, found.end()))
        position = found.end()
    tokens.append(Token(END, "", length, length))
    return tokens


class _Parser:
    """Recursive descent over the grammar, one method per rule. On a token that cannot come
    next it raises _Unexpected with the set of tokens that could have: after a value, what may
    follow it in its place (`follow`), and what would continue the value itself (`(` after a
    name makes a call, `/` after a number a fraction, `=` after an argument's name a key)."""

    def __init__(self, source: Source, tokens: list[Token]) -> None:
        self.text = source.text
        self.tokens = tokens
        self.index = 0
        self.bad_value: _BadValue | None = None
        text = source.text
        self.line_starts = [0, *(i + 1 for i, ch in enumerate(text) if ch == "\n")]

    # ---- tokens and positions

    @property
    def next(self) -> Token:
        return self.tokens[self.index]

    def after_next(self) -> str:
        return self.tokens[min(self.index + 1, len(self.tokens) - 1)].type

    def take(self, expected: frozenset[str]) -> Token:
        token = self.tokens[self.index]
        if token.type not in expected:
            raise _Unexpected(token, expected)
        self.index += 1
        return token

    def expect(self, expected: frozenset[str]) -> None:
        """What comes next must be one of `expected` (it is read by the caller)."""
        if self.tokens[self.index].type not in expected:
            raise _Unexpected(self.tokens[self.index], expected)

    @property
    def last(self) -> Token:
        return self.tokens[self.index - 1]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def span(self, first: Token, last: Token) -> Span:
        line, column = self.position(first.start)
        end_line, end_column = self.position(last.end)
        return Span(line, column, end_line, end_column, first.start, last.end)

    # ---- items

    def items(self, closer: str) -> tuple[Item, ...]:
        """Items up to `closer`: RBRACE in a section, END at the top."""
        items = []
        follow = frozenset({"NAME", closer})
        while self.next.type != closer:
            items.append(self.item(follow))
        return tuple(items)

    def item(self, follow: frozenset[str]) -> Item:
        key = self.take(follow)
        kind = self.next.type
        if kind == "LPAR":
            return self.call(key, follow)
        if kind == "LBRACE":
            return self.section(key, None)
        if kind == "NAME" and self.after_next() == "EQUAL":
            target = self.name(self.take(frozenset({"NAME"})))
            self.index += 1
            self.expect(_VALUE)
            value = self.value(follow)
            return Setting(self.name(key), value, self.span(key, self.last), target)
        # A setting, `key value`, or a section's label, `key label {`: the same expression,
        # told apart by the `{` after it.
        self.expect(_HEAD | {"LPAR", "LBRACE"})
        value = self.value(follow | {"LBRACE"}, head=True)
        if self.next.type == "LBRACE":
            return self.section(key, value)
        return Setting(self.name(key), value, self.span(key, self.last))

    def section(self, key: Token, label: Value | None) -> Section:
        self.take(_LBRACE)
        items = self.items("RBRACE")
        closing = self.take(_RBRACE)
        return Section(self.name(key), label, items, self.span(key, closing))

    def call(self, name: Token, follow: frozenset[str]) -> Call:
        self.take(_LPAR)
        args: list[Arg] = []
        expected = _VALUE | {"RPAR"}
        while self.next.type != "RPAR":
            first = self.next
            self.expect(expected)
            key = None
            if first.type == "NAME" and self.after_next() == "EQUAL":
                key = self.name(first)
                self.index += 2
                self.expect(_VALUE)
            value = self.value(_ARG_END, keyed=key is not None)
            args.append(Arg(key, value, self.span(first, self.last)))
            if self.next.type == "COMMA":
                self.index += 1
                expected = _VALUE | {"RPAR"}
            else:
                self.expect(_ARG_END)
        closing = self.take(_RPAR)
        self.expect(follow)
        return Call(self.name(name), tuple(args), self.span(name, closing))

    # ---- values

    def value(self, follow: frozenset[str], head: bool = False, keyed: bool = True) -> Value:
        """An expression, then a check that what comes next may follow it: operands joined by
        + - * / (left to right, * and / first) and at most one comparison. A setting's value
        or a section's label (`head`) never starts with `(`; in a call an argument that is a
        bare name might have been its key (`=`)."""
        operands = [self.operand(_HEAD if head else _VALUE, follow)]
        operators: list[Token] = []
        compared = False
        while True:
            self.split_minus()
            allowed = follow | _ARITHMETIC | (set() if compared else {"COMPARE"})
            if isinstance(operands[-1], Name):  # a name might have been a call's
                allowed |= {"LPAR"}
            if (not keyed or head) and not operators and isinstance(operands[0], Name):
                allowed |= {"EQUAL"}  # a call's keyword, or the target of `key target = value`
            self.expect(allowed)
            if self.next.type not in _OPERATORS:
                return self.combine(operands, operators)
            operator = self.take(_OPERATORS)
            compared = compared or operator.type == "COMPARE"
            operators.append(operator)
            operands.append(self.operand(_VALUE, follow))

    def operand(self, first: frozenset[str], follow: frozenset[str]) -> Value:
        """One operand: a leaf, a call, a list, a tuple or a parenthesised expression."""
        token = self.take(first)
        kind = token.type
        if kind == "NAME":
            if self.next.type == "LPAR":
                return self.call(token, _AFTER_OPERAND | follow)
            return self.name(token)
        if kind in ("INT", "NUMBER"):
            return self.number(token)
        if kind == "DIMS":
            return Dims(tuple(int(part) for part in token.text.split("x")), self.leaf(token))
        if kind == "STRING":
            try:
                return String(unquote(token.text), self.leaf(token))
            except ValueError as error:
                if self.bad_value is None:
                    hint = "write \\\\ for a backslash"
                    self.bad_value = _BadValue(self.leaf(token), str(error), hint)
                return String(token.text[1:-1], self.leaf(token))
        if kind == "LSQB":
            values = self.values("RSQB", tuple_=False)
            return ListValue(values, self.span(token, self.last))
        # `(` opens a tuple, `(1, 2)`, or a parenthesised expression, `(a + 1)`.
        self.expect(_VALUE)
        inner = self.value(_COMMA | {"RPAR"})
        if self.next.type == "RPAR":
            closing = self.take(_RPAR)
            return Paren(inner, self.span(token, closing))
        self.take(_COMMA)
        rest = self.values("RPAR", tuple_=False)
        return TupleValue((inner, *rest), self.span(token, self.last))

    def values(self, closer: str, tuple_: bool) -> tuple[Value, ...]:
        """The items of a list or a tuple after its opening bracket (a tuple's first item and
        comma already read), through its closing one."""
        items: list[Value] = []
        closing = frozenset({closer})
        expected = _VALUE | closing
        while True:
            self.expect(expected)
            if self.next.type == closer:
                self.index += 1
                return tuple(items)
            items.append(self.value(_COMMA | closing))
            if self.next.type == "COMMA":
                self.index += 1
                expected = _VALUE | closing
            else:
                expected = closing

    def split_minus(self) -> None:
        """After an operand only an operator or what follows the value can come, and lark's
        contextual lexer reads no number there: `a -1` and `a-1` are a minus and the number 1."""
        token = self.next
        if token.type in _NUMBERS_OR_DIMS and token.text.startswith("-"):
            minus = Token("MINUS", "-", token.start, token.start + 1)
            self.tokens = [*self.tokens[: self.index], minus, *_lex(self.text, token.start + 1)]

    # ---- leaves

    def leaf(self, token: Token) -> Span:
        return self.span(token, token)

    def name(self, token: Token) -> Name:
        return Name(token.text, self.leaf(token))

    def number(self, token: Token) -> Number:
        value: int | float = int(token.text) if token.type == "INT" else float(token.text)
        return Number(value, token.text, self.leaf(token))

    def combine(self, operands: list[Value], operators: list[Token]) -> Value:
        """Operands and the operators between them as one tree: * and / bind tighter than +
        and -, which bind tighter than a comparison; each level left to right."""
        values: list[Value] = [operands[0]]
        pending: list[Token] = []

        def reduce() -> None:
            right, left = values.pop(), values.pop()
            values.append(self.binary(pending.pop().text, left, right))

        for operator, operand in zip(operators, operands[1:], strict=True):
            while pending and _PRECEDENCE[pending[-1].type] >= _PRECEDENCE[operator.type]:
                reduce()
            pending.append(operator)
            values.append(operand)
        while pending:
            reduce()
        return values[0]

    def binary(self, op: str, left: Value, right: Value) -> Value:
        span = left.span.to(right.span)
        if op != "/" or not isinstance(left, Number) or not isinstance(right, Number):
            return BinOp(op, left, right, span)
        if right.value == 0 and self.bad_value is None:
            self.bad_value = _BadValue(span, f"{left.text}/{right.text} divides by zero")
        return Fraction(left, right, span)


_PRECEDENCE = {"COMPARE": 1, "PLUS": 2, "MINUS": 2, "STAR": 3, "SLASH": 3}
_VALUE = frozenset({"NAME", "INT", "NUMBER", "DIMS", "STRING", "LSQB", "LPAR"})
_HEAD = _VALUE - {"LPAR"}  # a setting's value or a label never starts with `(`: `key (` is a call
_NUMBERS = frozenset({"INT", "NUMBER"})
_NUMBERS_OR_DIMS = frozenset({"INT", "NUMBER", "DIMS"})
_ARITHMETIC = frozenset({"PLUS", "MINUS", "STAR", "SLASH"})
_OPERATORS = _ARITHMETIC | {"COMPARE"}
_AFTER_OPERAND = _OPERATORS
_ARG_END = frozenset({"COMMA", "RPAR"})
_COMMA = frozenset({"COMMA"})
_LBRACE, _RBRACE, _LPAR, _RPAR = (frozenset({t}) for t in ("LBRACE", "RBRACE", "LPAR", "RPAR"))


_ESCAPE = re.compile(
    r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|N\{[^}]*\}|[0-7]{1,3}|.)", re.S
)
_SIMPLE_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\n": "",
}


def unquote(text: str) -> str:
    """A STRING token's value: Python's escapes (`\\n`, `\\"`, `\\x41`, `\\u00e9`, `\\N{...}`)
    decoded, and, as in Python, an unknown escape such as `\\d` in a Windows path kept as
    written. An escape that cannot mean anything (`\\x4`, `\\N`, `\\U00110000`) raises
    ValueError."""

    def decode(match: re.Match[str]) -> str:
        body = match.group(1)
        if body in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[body]
        if body[0] not in "xuUN01234567":
            return match.group()
        try:
            if body[0] == "N":
                import unicodedata

                return unicodedata.lookup(body[2:-1])
            return chr(int(body[1:], 16) if body[0] in "xuU" else int(body, 8))
        except (ValueError, KeyError, IndexError):
            raise ValueError(
                f"the string has an escape that means nothing: {match.group()}"
            ) from None

    return _ESCAPE.sub(decode, text[1:-1])


class _BadValue(Exception):
    """A value that parses but cannot mean anything, such as 1/0."""

    def __init__(self, span: Span, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.span = span
        self.message = message
        self.hint = hint


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


def _report(error: _Unexpected, source: Source, diagnostics: Diagnostics) -> None:
    token = error.token
    if token.type == "ERROR":
        offset = token.start
        char = token.text
        hint = None
        if char == '"' or char == "'":
            hint = "strings must be closed on the same line"
        elif char in "-+" or char.isdigit():
            hint = "numbers look like 3, 0.5, 1e-4 or 1/255; sizes like 32x32x3"
        diagnostics.error(
            codes.UNEXPECTED_CHARACTER,
            f"unexpected character {char!r}",
            source.span_at(offset),
            hint,
        )
        return
    # Operators, which may follow any value, are left out of what was expected, as noise.
    expected = set(error.expected) - _OPERATORS
    glob = _glob_before(source.text, token.start)
    if token.type == END:
        opened = _unclosed_bracket(source, len(source.text))
        if opened is not None:
            bracket, offset = opened
            closer = {"{": "}", "(": ")", "[": "]"}[bracket]
            span = source.span_at(offset)
            diagnostics.error(
                codes.UNEXPECTED_EOF,
                f"unexpected end of file: '{bracket}' opened at line {span.line} is never closed",
                source.end_span(),
                f"add '{closer}' to close it",
            )
        else:
            diagnostics.error(
                codes.UNEXPECTED_EOF,
                "unexpected end of file",
                source.end_span(),
                glob or (f"expected {_describe_expected(expected)}" if expected else None),
            )
        return
    span = source.span_at(token.start, token.end - token.start)
    hint = f"expected {_describe_expected(expected)}" if expected else None
    if token.type in {"INT", "NUMBER", "DIMS", "STRING"} and "NAME" in expected:
        hint = "every item is `key value`, `name(args)` or `name { ... }`: a value needs a key"
    if token.type in ("MINUS", "PLUS") and not token.text[1:] and "INT" in expected:
        hint = "numbers look like 3, 0.5, 1e-4 or 1/255; sizes like 32x32x3"
    if token.type == "RBRACE":
        opened = _unclosed_bracket(source, token.start)
        if opened is None or opened[0] != "{":
            hint = "this '}' closes nothing"
    diagnostics.error(codes.UNEXPECTED_TOKEN, f"unexpected {token.text!r}", span, glob or hint)


def _glob_before(text: str, offset: int) -> str | None:
    """The hint for a glob written without quotes (`freeze conv_*`): a `*` right after a name,
    which reads as a multiplication missing its right operand."""
    found = re.search(r"([A-Za-z_][\w.]*\*)\s*$", text[:offset])
    if found is None:
        return None
    return f'a glob pattern is a string: write it in quotes, "{found.group(1)}"'


# A top-level section written at the start of a line: where parsing resumes after an error.
_SECTION_START = re.compile(
    r"^(?:model|data|augment|train|evaluate|track)\b[^\n{}]*\{", re.MULTILINE
)


def parse(source: Source, diagnostics: Diagnostics) -> Document | None:
    """Parse `source`. On a syntax error, report it and return None.

    After a syntax error the rest of its section cannot be trusted, but the sections after it
    can: parsing resumes at the next top-level section that starts a line, with everything
    before it blanked out (newlines kept, so positions stay exact). Each broken section gives
    one error, and no error is a cascade of another."""
    text = source.text
    failed = False
    while True:
        parser = _Parser(Source(source.path, text), _lex(text))
        try:
            items = parser.items(END)
        except _Unexpected as error:
            failed = True
            _report(error, Source(source.path, text), diagnostics)
            offset = error.token.start
            resume = next((m.start() for m in _SECTION_START.finditer(text, offset + 1)), None)
            if resume is None:
                return None
            text = re.sub(r"[^\n]", " ", text[:resume]) + text[resume:]
            continue
        break
    if failed:
        return None
    if parser.bad_value is not None:
        bad = parser.bad_value
        diagnostics.error(codes.WRONG_KIND, bad.message, bad.span, bad.hint)
        return None
    return Document(source, items)
