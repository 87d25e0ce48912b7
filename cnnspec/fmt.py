"""`cnnspec fmt`: the canonical layout of a spec.

`format_text` rewrites a spec's whitespace and nothing else: every token keeps its text (numbers
as written, `1/255`, `32x32x3`, strings with their quotes), so the formatted spec parses to the
same syntax tree and compiles to the same IR, and every comment is kept. A text that does not
parse is never formatted. The layout:

- Two spaces of indentation per level. A section is `key [label] {`, its items, then `}` on a
  line of its own; an empty section (without comments) is `key {}`.
- Calls are `name(a, b, key=value)`, lists `[a, b]`, tuples `(a, b)` and `(a,)`; a fraction
  is `1/255`. Trailing commas go.
- Top-level items are separated by one blank line. Inside a section, one blank line stays where
  the author left one or more, between items and around comment lines, but never right after a
  `{` or before a `}`.
- A section the author wrote on one line stays on one line, its items two spaces apart, when it
  fits in 100 columns (a one-line section cannot hold a comment: a comment runs to the end of
  its line). Otherwise it is written over several lines.
- Inside a multi-line section, items the author put on the same line stay on the same line, two
  spaces apart (`seed 42  batch 64  epochs 100`); a row wider than 100 columns is split, filling
  each line greedily. A multi-line item (a multi-line section, a wrapped call) has its lines to
  itself.
- A setting or call wider than 100 columns has its outermost call's arguments wrapped, one per
  line, one level deeper, with `)` on a line of its own. Lines are longer than 100 columns only
  when a single argument (or an item with nothing to wrap) is.

Comments. The grammar ignores comments, so they are collected by a scan of the text with the
grammar's own STRING and COMMENT patterns (strings are consumed whole, so a `#` inside a string
is no comment). Each comment is attached to the syntax tree:

- after an item, on the line where the item ends: a trailing comment of that item, two spaces
  after the code. A comment the author set apart by more than two spaces (aligned with the
  comments of other lines) keeps its column, as long as the code still ends two columns before
  it and it starts within 100 columns. This is the one place where the author's spacing
  survives: columns of aligned shape comments are worth keeping.
- after a section's `{`, on its line: stays there, spaced the same way.
- on lines of their own: leading comments of the next item, or, when no item follows, comments
  at the end of the section (before its `}`) or of the file.
- inside an item (between a call's arguments, between a section's key and its `{`): moved
  above the item, as leading comments, in order: a one-line item has no room for them.
Trailing whitespace of a comment goes.

Formatting is idempotent: `format_text(format_text(x)) == format_text(x)`. Every layout choice
depends only on what the output preserves (which items share a line, which sections are on one
line, blank lines, comment columns), and a split row or wrapped call is stable under a second
pass. As a last guard, the output is parsed again and must give the same tree and the same
comments, or `format_text` returns None rather than a spec that means something else.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cnnspec.diagnostics import Diagnostics
from cnnspec.source import Source
from cnnspec.syntax import (
    STRING_OR_COMMENT,
    BinOp,
    Call,
    Dims,
    Document,
    Fraction,
    Item,
    ListValue,
    Name,
    Number,
    Paren,
    Section,
    Setting,
    String,
    TupleValue,
    Value,
    parse,
)

WIDTH = 100
INDENT = "  "
# Between items sharing a line, and before a trailing comment.
GAP = "  "

# The grammar's STRING terminals, then its COMMENT: scanning left to right consumes each string
# whole, so only a `#` outside strings starts a match of the last alternative.


@dataclass(frozen=True, slots=True)
class Comment:
    """A `#` comment: its text without trailing whitespace, where it starts, and its line and
    0-based column there."""

    text: str
    start: int
    line: int
    column: int


def collect_comments(text: str) -> list[Comment]:
    """Every comment of a spec that parses, in order. (In a text that does not parse, an
    unclosed string can hide or fake a comment, just as it does for the parser.)"""
    line_starts = _line_starts(text)
    found = []
    for match in STRING_OR_COMMENT.finditer(text):
        if match.group().startswith("#"):
            start = match.start()
            line = bisect.bisect_right(line_starts, start)
            found.append(
                Comment(match.group().rstrip(), start, line, start - line_starts[line - 1])
            )
    return found


def format_text(text: str, path: str = "<spec>") -> str | None:
    """The canonical layout of `text`, or None when it does not parse (or, as a guard, when
    the layout would not parse back to the same tree and comments). Pure, and no input makes
    it raise: the parser reports its own errors (None here), and nesting too deep for Python's
    stack reads as a text that does not parse. Anything else it raises is a bug in cnnspec,
    and surfaces as one: a language server answers formatting requests with it, and logs
    that."""
    try:
        return _format(text.replace("\r\n", "\n"), path)
    except RecursionError:  # `a {` nested thousands deep: no spec is written so
        return None


# --------------------------------------------------------------------------------------------
# Attaching comments to the tree


@dataclass(frozen=True, slots=True)
class _Line:
    """A comment on a line of its own, and whether a blank line comes before it."""

    comment: Comment
    blank: bool


@dataclass(frozen=True, slots=True)
class _Trailing:
    """A comment after code on its line, and whether the author set it apart by more than the
    usual two spaces (to align it with others)."""

    comment: Comment
    aligned: bool


@dataclass(slots=True)
class _Body:
    """The items of a section (or of the file), with the comments between them."""

    nodes: list[_Node] = field(default_factory=list)
    # Comments after the last item: before the closing brace, or at the end of the file.
    dangling: list[_Line] = field(default_factory=list)
    # A comment after the `{`, on its line.
    opener: _Trailing | None = None


@dataclass(slots=True)
class _Node:
    item: Item
    leading: list[_Line]
    # A blank line between the item and what comes before it (its last leading comment).
    blank: bool
    # Starts on the line where the previous item ends, with no comment between them.
    same_row: bool
    trailing: _Trailing | None = None
    body: _Body | None = None  # sections only
    flat: str | None = None  # the one-line form, where the item may have one


def _line_starts(text: str) -> list[int]:
    return [0, *(m.end() for m in re.finditer("\n", text))]


class _Attacher:
    def __init__(self, text: str) -> None:
        self.text = text
        self.line_starts = _line_starts(text)

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.line_starts, offset)

    def body(self, items: Sequence[Item], comments: list[Comment], brace: int | None) -> _Body:
        """Attach `comments` (those of this body that lie outside its items' headers and
        values) to `items`. `brace` is the offset of the section's `{` (None for the file)."""
        body = _Body()
        open_line = 0 if brace is None else self.line_of(brace)
        pending: list[_Line] = []
        last_line = open_line
        last: _Node | None = None  # the previous item, while nothing followed it yet
        index = 0

        def place(comment: Comment) -> None:
            nonlocal last_line, last
            if last is not None and comment.line == last_line:
                gap = comment.start - last.item.span.end
                last.trailing = _Trailing(comment, gap > len(GAP))
            elif brace is not None and last is None and not pending and comment.line == open_line:
                body.opener = _Trailing(comment, comment.start - brace - 1 > len(GAP))
            else:
                pending.append(_Line(comment, comment.line - last_line >= 2))
            last_line = comment.line
            last = None

        for item in items:
            while index < len(comments) and comments[index].start < item.span.start:
                place(comments[index])
                index += 1
            inner: list[Comment] = []
            while index < len(comments) and comments[index].start < item.span.end:
                inner.append(comments[index])
                index += 1
            node = self.node(item, inner, pending, item.span.line - last_line >= 2)
            node.same_row = last is not None and item.span.line == last_line and not node.leading
            body.nodes.append(node)
            pending = []
            last_line = item.span.end_line
            last = node
        for comment in comments[index:]:
            place(comment)
        body.dangling = pending
        return body

    def node(self, item: Item, inner: list[Comment], leading: list[_Line], blank: bool) -> _Node:
        header = inner
        body = None
        if isinstance(item, Section):
            brace = self.open_brace(item, inner)
            header = [c for c in inner if c.start < brace]
            body = self.body(item.items, [c for c in inner if c.start > brace], brace)
        # Comments inside a header or a value have no place in a one-line item: they move above.
        hoisted = [_Line(c, blank and i == 0) for i, c in enumerate(header)]
        node = _Node(item, [*leading, *hoisted], blank and not hoisted, False, body=body)
        node.flat = _flat(node, self.text)
        return node

    def open_brace(self, section: Section, inner: list[Comment]) -> int:
        """The offset of the section's `{`: the first one after its key and label that is not
        inside a comment."""
        position = (section.label or section.key).span.end
        while True:
            brace = self.text.find("{", position)
            inside = next((c for c in inner if c.start <= brace < c.start + len(c.text)), None)
            if inside is None:
                return brace
            position = inside.start + len(inside.text)


# --------------------------------------------------------------------------------------------
# Writing


def _value(value: Value, text: str) -> str:
    if isinstance(value, Name):
        return value.text
    if isinstance(value, Number):
        return value.text
    if isinstance(value, Fraction):
        return f"{value.numerator.text}/{value.denominator.text}"
    if isinstance(value, Dims | String):
        return text[value.span.start : value.span.end]
    if isinstance(value, ListValue):
        return "[" + ", ".join(_value(v, text) for v in value.items) + "]"
    if isinstance(value, TupleValue):
        inside = ", ".join(_value(v, text) for v in value.items)
        return f"({inside},)" if len(value.items) == 1 else f"({inside})"
    if isinstance(value, BinOp):
        return f"{_value(value.left, text)} {value.op} {_value(value.right, text)}"
    if isinstance(value, Paren):
        return f"({_value(value.value, text)})"
    return value.name.text + "(" + ", ".join(_args(value, text)) + ")"


def _args(call: Call, text: str) -> list[str]:
    return [
        (f"{arg.key.text}={_value(arg.value, text)}" if arg.key else _value(arg.value, text))
        for arg in call.args
    ]


def _header(section: Section, text: str) -> str:
    label = section.label
    return section.key.text if label is None else f"{section.key.text} {_value(label, text)}"


def _setting_prefix(setting: Setting) -> str:
    """`key ` or, for `let width = 2`, `let width = `."""
    target = f"{setting.target.text} = " if setting.target is not None else ""
    return f"{setting.key.text} {target}"


def _has_comments(node: _Node) -> bool:
    if node.leading or node.trailing:
        return True
    body = node.body
    return body is not None and (
        body.opener is not None or bool(body.dangling) or any(_has_comments(n) for n in body.nodes)
    )


def _flat(node: _Node, text: str) -> str | None:
    """The one-line form of an item, or None for a section that must take several lines."""
    item = node.item
    if not isinstance(item, Section):
        return _flat_text(item, text)
    assert node.body is not None
    body = node.body
    if not body.nodes and body.opener is None and not body.dangling:
        return f"{_header(item, text)} {{}}"
    if item.span.line != item.span.end_line or any(
        _has_comments(n) or n.flat is None for n in body.nodes
    ):
        return None
    return f"{_header(item, text)} {{ {GAP.join(n.flat or '' for n in body.nodes)} }}"


def _flat_text(item: Setting | Call, text: str) -> str:
    if isinstance(item, Setting):
        return f"{_setting_prefix(item)}{_value(item.value, text)}"
    return _value(item, text)


class _Writer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines: list[str] = []
        # No blank line may come before this index: the first line of a section's body.
        self.floor = 0

    def line(self, content: str, blank: bool = False) -> None:
        if blank and len(self.lines) > self.floor and self.lines[-1]:
            self.lines.append("")
        self.lines.append(content)

    def comment_after(self, trailing: _Trailing | None) -> None:
        if trailing is None:
            return
        code = self.lines[-1]
        column = trailing.comment.column
        keep = trailing.aligned and len(code) + len(GAP) <= column < WIDTH
        pad = " " * (column - len(code)) if keep else GAP
        self.lines[-1] = f"{code}{pad}{trailing.comment.text}"

    def comments(self, lines: list[_Line], indent: str, first_blank: bool = False) -> None:
        for i, line in enumerate(lines):
            self.line(indent + line.comment.text, line.blank or (i == 0 and first_blank))

    def body(self, body: _Body, indent: str) -> None:
        """A multi-line body: rows of items, and the comments between them."""
        row: list[tuple[_Node, str]] = []
        width = 0
        for node in body.nodes:
            flat = node.flat if node.flat and len(indent) + len(node.flat) <= WIDTH else None
            # An item joins the row it shared a line with in the source, if there is room.
            joins = row and node.same_row and row[-1][0].trailing is None
            if flat is not None and joins and width + len(GAP) + len(flat) <= WIDTH:
                row.append((node, flat))
                width += len(GAP) + len(flat)
                continue
            self.row(row, indent)
            row = []
            if flat is None:
                self.comments(node.leading, indent)
                self.multiline(node, indent, node.blank)
                self.comment_after(node.trailing)
            else:
                row, width = [(node, flat)], len(indent) + len(flat)
        self.row(row, indent)
        self.comments(body.dangling, indent)

    def row(self, row: list[tuple[_Node, str]], indent: str) -> None:
        if not row:
            return
        first, last = row[0][0], row[-1][0]
        self.comments(first.leading, indent)
        self.line(indent + GAP.join(flat for _, flat in row), first.blank)
        self.comment_after(last.trailing)

    def multiline(self, node: _Node, indent: str, blank: bool) -> None:
        """An item over several lines: a section, or a setting or call with its arguments
        wrapped. Anything else, which cannot be wrapped, stays on one line."""
        item = node.item
        if isinstance(item, Section):
            assert node.body is not None
            self.line(f"{indent}{_header(item, self.text)} {{", blank)
            self.comment_after(node.body.opener)
            floor, self.floor = self.floor, len(self.lines)
            self.body(node.body, indent + INDENT)
            self.floor = floor
            self.line(indent + "}")
            return
        call = item.value if isinstance(item, Setting) else item
        if not isinstance(call, Call) or not call.args:
            self.line(indent + _flat_text(item, self.text), blank)
            return
        prefix = _setting_prefix(item) if isinstance(item, Setting) else ""
        self.line(f"{indent}{prefix}{call.name.text}(", blank)
        args = _args(call, self.text)
        for i, arg in enumerate(args):
            self.line(f"{indent}{INDENT}{arg}{',' if i < len(args) - 1 else ''}")
        self.line(indent + ")")

    def document(self, body: _Body) -> None:
        after_item = False
        for node in body.nodes:
            self.comments(node.leading, "", after_item)
            blank = node.blank or (after_item and not node.leading)
            if node.flat is not None and len(node.flat) <= WIDTH:
                self.line(node.flat, blank)
            else:
                self.multiline(node, "", blank)
            self.comment_after(node.trailing)
            after_item = True
        self.comments(body.dangling, "", after_item)


# --------------------------------------------------------------------------------------------
# The whole


def _parse(text: str, path: str) -> Document | None:
    source = Source(path, text)
    return parse(source, Diagnostics(source))


def _format(text: str, path: str) -> str | None:
    document = _parse(text, path)
    if document is None:
        return None
    comments = collect_comments(text)
    formatted = _layout(text, document, comments)
    # The guard: whitespace is all that may change.
    again = _parse(formatted, path)
    if again is None or _shape(again, formatted) != _shape(document, text):
        return None
    if [c.text for c in collect_comments(formatted)] != [c.text for c in comments]:
        return None
    return formatted


def _layout(text: str, document: Document, comments: list[Comment]) -> str:
    body = _Attacher(text).body(document.items, comments, None)
    writer = _Writer(text)
    writer.document(body)
    return "\n".join(writer.lines) + "\n" if writer.lines else ""


def _shape(document: Document, text: str) -> tuple[object, ...]:
    """The syntax tree without its spans: what formatting must keep."""

    def value(v: Value) -> object:
        if isinstance(v, ListValue | TupleValue):
            return (type(v).__name__, tuple(value(i) for i in v.items))
        if isinstance(v, Call):
            return (
                "call",
                v.name.text,
                tuple((a.key and a.key.text, value(a.value)) for a in v.args),
            )
        if isinstance(v, Fraction):
            return ("fraction", v.numerator.text, v.denominator.text)
        if isinstance(v, BinOp):
            return ("binary", v.op, value(v.left), value(v.right))
        if isinstance(v, Paren):
            return ("paren", value(v.value))
        if isinstance(v, Name | Number):
            return (type(v).__name__, v.text)
        return (type(v).__name__, text[v.span.start : v.span.end])

    def item(i: Item) -> object:
        if isinstance(i, Section):
            label = i.label and value(i.label)
            return ("section", i.key.text, label, tuple(item(c) for c in i.items))
        if isinstance(i, Setting):
            return ("setting", i.key.text, i.target and i.target.text, value(i.value))
        return value(i)

    return tuple(item(i) for i in document.items)
