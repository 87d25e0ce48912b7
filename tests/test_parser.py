"""The hand-written parser (cnnspec.syntax) against its specification, cnnspec/grammar.lark.

An independent second parser is built here with lark's LALR parser from the grammar file, its
parse trees turned into cnnspec's syntax tree. Over every shipped spec, example, backbone,
diagnostics fixture and regression case, over mutants of the shipped specs (tests/test_fuzz.py's
mutations) and over random texts of the grammar's characters, the two must agree:

- where lark parses a text, cnnspec.syntax gives the same tree, spans included;
- where lark finds a syntax error, cnnspec.syntax reports its first error at the same token
  with the same code (E001 a character no token starts with, E002 a token out of place, E003
  the end of the file), and every token lark's parser state would have accepted there is among
  the ones cnnspec names in its hint. (It may name more: LALR reduces a name to a value before
  it sees the `)` that does not fit, and then no longer offers the `(` of a call.)
"""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path
from typing import Any

import pytest

lark = pytest.importorskip("lark")

from lark import Lark, Token, Tree  # noqa: E402
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken  # noqa: E402

from cnnspec import syntax as ast  # noqa: E402
from cnnspec.diagnostics import Diagnostics  # noqa: E402
from cnnspec.source import Source, Span  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.fuzzing import FUZZ_SEED, examples  # noqa: E402

TEXTS = sorted(
    [
        *(ROOT / "specs").glob("*.cnn"),
        *(ROOT / "examples").glob("*.cnn"),
        *(ROOT / "cnnspec" / "backbones").glob("*.cnn"),
        *(ROOT / "tests" / "diagnostics").glob("*.cnn"),
        *(ROOT / "tests" / "regressions").glob("*.cnn"),
    ]
)


OPERATORS = {"SLASH", "PLUS", "MINUS", "STAR", "COMPARE"}


@cache
def _lark() -> Lark:
    grammar = (ROOT / "cnnspec" / "grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _token_span(token: Token) -> Span:
    return Span(
        token.line, token.column, token.end_line, token.end_column, token.start_pos, token.end_pos
    )


def _tree_span(tree: Tree[Token]) -> Span:
    m = tree.meta
    return Span(m.line, m.column, m.end_line, m.end_column, m.start_pos, m.end_pos)


def _value(node: Any) -> ast.Value:
    kind, children = node.data, node.children
    if kind == "number":
        token = children[0]
        value = int(token) if token.type == "INT" else float(token)
        return ast.Number(value, str(token), _token_span(token))
    if kind == "name":
        return ast.Name(str(children[0]), _token_span(children[0]))
    if kind == "string":
        # Escapes are decoded by cnnspec's own unquote: this oracle checks the grammar.
        token = str(children[0])
        try:
            value = ast.unquote(token)
        except ValueError:
            value = token[1:-1]
        return ast.String(value, _token_span(children[0]))
    if kind == "dims":
        values = tuple(int(p) for p in str(children[0]).split("x"))
        return ast.Dims(values, _token_span(children[0]))
    if kind == "binary":
        left, op, right = _value(children[0]), str(children[1]), _value(children[2])
        span = left.span.to(right.span)
        if op == "/" and isinstance(left, ast.Number) and isinstance(right, ast.Number):
            return ast.Fraction(left, right, span)
        return ast.BinOp(op, left, right, span)
    if kind == "paren":
        return ast.Paren(_value(children[0]), _tree_span(node))
    if kind == "call":
        return _call(node)
    items = tuple(_value(c) for c in children if c is not None)
    if kind == "list":
        return ast.ListValue(items, _tree_span(node))
    assert kind == "tuple", kind
    return ast.TupleValue(items, _tree_span(node))


def _call(node: Any) -> ast.Call:
    name, *arg_nodes = node.children
    args = []
    for arg in arg_nodes:
        if arg is None:
            continue
        key, value = arg.children
        key_name = ast.Name(str(key), _token_span(key)) if key is not None else None
        args.append(ast.Arg(key_name, _value(value), _tree_span(arg)))
    return ast.Call(ast.Name(str(name), _token_span(name)), tuple(args), _tree_span(node))


def _item(node: Any) -> ast.Item:
    if node.data == "call":
        return _call(node)
    key = node.children[0]
    name = ast.Name(str(key), _token_span(key))
    if node.data == "setting":
        return ast.Setting(name, _value(node.children[1]), _tree_span(node))
    if node.data == "assignment":
        target = node.children[1]
        return ast.Setting(
            name,
            _value(node.children[2]),
            _tree_span(node),
            ast.Name(str(target), _token_span(target)),
        )
    label = node.children[1]
    label_value = _value(label) if label is not None else None
    items = tuple(_item(c) for c in node.children[2:])
    return ast.Section(name, label_value, items, _tree_span(node))


def lark_parse(text: str) -> tuple[tuple[ast.Item, ...] | None, tuple[str, int, set[str]] | None]:
    """lark's tree as cnnspec's, or its first error: (code, offset, tokens it would accept)."""
    try:
        tree = _lark().parse(text)
    except UnexpectedCharacters as error:
        return None, ("E001", error.pos_in_stream, set())
    except UnexpectedInput as error:
        assert isinstance(error, UnexpectedToken), error
        token = error.token
        at_end = token.type == "$END"
        offset = len(text) if at_end else token.start_pos
        # Operators may follow any operand: hints leave them out, as noise.
        accepted = set(error.interactive_parser.accepts()) - OPERATORS
        return None, ("E003" if at_end else "E002", offset, accepted)
    return tuple(_item(child) for child in tree.children), None


def cnnspec_parse(text: str) -> tuple[tuple[ast.Item, ...] | None, Any]:
    source = Source("t.cnn", text)
    diagnostics = Diagnostics(source)
    document = ast.parse(source, diagnostics)
    first = next(iter(diagnostics), None)
    return (document.items if document is not None else None), first


def agree(text: str) -> None:
    expected_items, expected_error = lark_parse(text)
    items, first = cnnspec_parse(text)
    if expected_error is None:
        if first is not None and first.code == "E104":  # 1/0, "\\N": parse, but mean nothing
            return
        assert first is None, (text, first)
        assert items == expected_items, text
        return
    code, offset, accepted = expected_error
    assert first is not None, (text, expected_error)
    assert first.code == code, (text, first, expected_error)
    if code != "E003":  # E003 is at the end of the file by definition
        assert first.span.start == offset, (text, first, expected_error)
    if code != "E001" and accepted and first.hint and first.hint.startswith("expected "):
        named = first.hint
        for token in accepted:
            word = ast._TOKEN_WORDS.get(token, token.lower())
            assert word in named, (text, token, first.hint)


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_files(path: Path) -> None:
    agree(path.read_text(encoding="utf-8"))


@pytest.mark.library  # slow: `make test-library` runs it
def test_mutants_of_the_shipped_specs() -> None:
    from tests import test_fuzz

    for spec in test_fuzz.SPEC_NAMES:
        for mutation in sorted(test_fuzz.MUTATIONS):
            for mutant in test_fuzz.mutants(spec, mutation, examples(40)):
                agree(mutant.text)


def test_random_texts() -> None:
    rng = random.Random(f"{FUZZ_SEED}/parser")
    alphabet = "ab1x2.-_ {}()[],=/#\"'\n\t\\@5e*"
    for _ in range(examples(4000)):
        agree("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))))


def test_random_grammatical_texts() -> None:
    """Texts built from the grammar's own pieces, so that most of them parse."""
    rng = random.Random(f"{FUZZ_SEED}/parser-pieces")
    pieces = [
        *("model", "m", "conv2d", "x.y", "b_*", "block5", "{", "}", "(", ")", "[", "]", ","),
        *("=", "/", "3", "-1", "0.5", "1e-4", ".5", "1.", "32x32x3", "-2x3", '"s"', "'t'"),
        *("# c\n", "\n", "3x", "1/255", "+", "-", "*", "==", "<", ">=", "let", "a", "="),
    ]
    for _ in range(examples(4000)):
        agree(" ".join(rng.choice(pieces) for _ in range(rng.randint(0, 14))))


@pytest.mark.parametrize(
    "text",
    [
        # '/' then dimensions: lark's contextual lexer reads an INT after '/', then a name
        "m { f(1/32x32) }",
        "m { f(a=1/2x3, b=2) }",
    ],
)
def test_cases_random_seeds_found(text: str) -> None:
    agree(text)


@pytest.mark.parametrize(
    ("token", "value"),
    [
        ('"C:\\data"', "C:\\data"),  # an unknown escape is kept, as in Python
        ('"a\\nb"', "a\nb"),
        ('"d\\u00e9j\\xe0 vu"', "déjà vu"),
        ('"\\N{GREEK SMALL LETTER MU}m"', "μm"),
        ('"déjà"', "déjà"),
        ("'it\\'s'", "it's"),
    ],
)
def test_unquote_decodes_like_python(token: str, value: str) -> None:
    assert ast.unquote(token) == value
