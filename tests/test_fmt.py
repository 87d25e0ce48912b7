"""`cnnspec fmt` and `cnnspec.fmt.format_text`: the canonical layout keeps meaning and comments.

Every property is checked on every shipped spec, on the diagnostics fixtures, on random model
specs from tests/test_property.py laid out at random (newlines, runs of spaces, comments between
any two tokens), and on random syntax trees of every value kind. Meaning is compared on a
span-free projection of the compiled IR (types, fields and the summary JSON), which a swapped
argument does change; comments are compared as a multiset, collected by lark's own lexer rather
than by the formatter's scan.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import re
import subprocess
import sys
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from lark import Lark, Token

from cnnspec import fmt
from cnnspec.compiler import Compilation, compile_text
from cnnspec.diagnostics import Diagnostics
from cnnspec.fmt import WIDTH, collect_comments, format_text
from cnnspec.schema import Model
from cnnspec.source import Source, Span
from cnnspec.summary import to_json
from cnnspec.syntax import parse
from tests.conftest import ROOT
from tests.test_cli import no_traceback, run, write

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.fuzzing import examples  # noqa: E402

SHIPPED = sorted(
    [
        *(ROOT / "specs").glob("*.cnn"),
        *(ROOT / "examples").glob("*.cnn"),
        *(ROOT / "cnnspec" / "backbones").glob("*.cnn"),
    ]
)
FIXTURES = sorted((ROOT / "tests" / "diagnostics").glob("*.cnn"))


# --------------------------------------------------------------------------------------------
# Helpers


@functools.cache
def _comment_lexer() -> tuple[Lark, list[Token]]:
    grammar = resources.files("cnnspec").joinpath("grammar.lark").read_text(encoding="utf-8")
    found: list[Token] = []
    return Lark(grammar, parser="lalr", lexer_callbacks={"COMMENT": found.append}), found


def lark_comments(text: str) -> Counter[str]:
    """The comments the parser itself skips, by lark's lexer (independent of cnnspec.fmt)."""
    parser, found = _comment_lexer()
    found.clear()
    parser.parse(text)
    return Counter(str(token).rstrip() for token in found)


def project(value: Any) -> Any:
    """A compiled spec without its spans (and source text): what formatting must keep. Class
    names are kept, so an Adam is never equal to an SGD with the same fields."""
    if isinstance(value, Span):
        return None
    if isinstance(value, Model):
        fields = type(value).model_fields
        return (type(value).__name__, {name: project(getattr(value, name)) for name in fields})
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields_ = [f.name for f in dataclasses.fields(value) if f.name != "source"]
        return (type(value).__name__, {name: project(getattr(value, name)) for name in fields_})
    if isinstance(value, dict):
        return {key: project(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [project(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted(project(item) for item in value)
    return value


def _unlined(message: str | None) -> str | None:
    # "first at line 4": a diagnostic may name a line, which formatting may move.
    return None if message is None else re.sub(r"\bline \d+", "line N", message)


def meaning(compilation: Compilation) -> Any:
    spec = compilation.spec
    diagnostics = [
        (d.code, d.severity, _unlined(d.message), _unlined(d.hint)) for d in compilation.diagnostics
    ]
    if spec is None:
        return None, diagnostics
    return (project(spec), to_json(spec)), diagnostics


def tree(text: str) -> Any:
    """The syntax tree without spans."""
    source = Source("<spec>", text)
    document = parse(source, Diagnostics(source))
    assert document is not None
    return project(document.items)


def check_layout(text: str, formatted: str) -> None:
    """What every formatted spec must satisfy."""
    assert format_text(formatted) == formatted, "not idempotent"
    assert lark_comments(formatted) == lark_comments(text), "comments differ"
    assert tree(formatted) == tree(text), "syntax tree differs"
    assert formatted == "" or (formatted.endswith("\n") and not formatted.endswith("\n\n"))
    assert "\n\n\n" not in formatted and not formatted.startswith("\n")
    for line in formatted.splitlines():
        assert line == line.rstrip(), repr(line)
        assert "\t" not in line[: len(line) - len(line.lstrip())]
        assert (len(line) - len(line.lstrip(" "))) % 2 == 0, repr(line)


def formatted_and_checked(text: str) -> str:
    formatted = format_text(text)
    assert formatted is not None
    check_layout(text, formatted)
    return formatted


# --------------------------------------------------------------------------------------------
# (a) Every shipped spec


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_spec(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    formatted = formatted_and_checked(text)
    assert sum(lark_comments(text).values()) == len(collect_comments(text))
    before, after = compile_text(text, path.name), compile_text(formatted, path.name)
    assert meaning(after) == meaning(before)
    if before.ok:
        assert after.ok
    # Only a single item (no two-space gap inside) takes its line past the width.
    comment_at = {c.line: c.column for c in collect_comments(formatted)}
    for number, line in enumerate(formatted.splitlines(), 1):
        code = line[: comment_at.get(number, len(line))].rstrip()
        assert len(code) <= WIDTH or "  " not in code.strip(), line


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_diagnostics_fixture_keeps_its_diagnostics(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    formatted = format_text(text)
    if formatted is None:  # only a fixture with a syntax error is not formatted
        source = Source(path.name, text)
        assert parse(source, Diagnostics(source)) is None
        return
    check_layout(text, formatted)
    assert meaning(compile_text(formatted, path.name)) == meaning(compile_text(text, path.name))


def test_the_projection_sees_real_changes() -> None:
    """The IR comparison would catch a formatter that moved or swapped anything."""
    text = (ROOT / "specs" / "cifar10.cnn").read_text(encoding="utf-8")
    baseline = meaning(compile_text(text))
    moved = text.replace("model cifar10_cnn {", "model cifar10_cnn {\n\n   ")
    assert meaning(compile_text(moved)) == baseline
    changes = [
        ("shift(width=0.1, height=0.1)", "shift(width=0.1, height=0.2)"),
        ("patience=10, restore", "patience=5, restore"),
        ("batchnorm()  dropout(0.5)", "dropout(0.5)  batchnorm()"),
        ("adam(lr=0.001)", "rmsprop(lr=0.001)"),
        ("conv2d(64)  maxpool(2)", "maxpool(2)  conv2d(64)"),
    ]
    for old, new in changes:
        assert old in text
        assert meaning(compile_text(text.replace(old, new, 1))) != baseline, new


# --------------------------------------------------------------------------------------------
# (b) Random specs


# Mostly single spaces, so that items still share lines; the comments hold a brace to mislead.
SEPARATORS = [*"   ", "   ", "\n", "\n  ", "\n\n\n    ", "\t", "  # a note {\n", "\n# alone\n\n"]


def scramble(text: str, seed: int) -> str:
    """The same tokens with random whitespace and comments between them."""
    lexer, _ = _comment_lexer()
    rng = random.Random(seed)
    pieces = []
    for token in lexer.lex(text):
        pieces.append(str(token))
        pieces.append(rng.choice(SEPARATORS))
    return "".join(pieces)


def test_generated_specs() -> None:
    # test_property needs keras and torch only for its own tests; its strategy is pure text.
    property_tests = pytest.importorskip("tests.test_property")

    @settings(max_examples=examples(100))
    @given(property_tests.specs(), st.integers(0, 2**32))
    def check(case: Any, seed: int) -> None:
        original = compile_text(case.text, "random.cnn")
        assert original.ok, case
        for text in (case.text, scramble(case.text, seed)):
            formatted = formatted_and_checked(text)
            assert meaning(compile_text(formatted, "random.cnn")) == meaning(original), case

    check()


NAMES = st.sampled_from(["a", "conv2d", "b_1", "backbone.block5", "backbone.block_*", "x2", "_"])
SCALARS = st.sampled_from(
    [
        *("0", "3", "-1", "0.25", "1e-4", "1.", ".5", "-2.5E+3", "1/255", "1 / 127.5", "-3/4"),
        *("32x32x3", "224x224", "-1x2", '"data/#1"', "'it\\'s'", "'x # y'", '"q\\"#"', "relu"),
    ]
)


def _call_text(name: str, args: list[tuple[str | None, str]], comma: bool) -> str:
    inside = ", ".join(f"{key}={value}" if key else value for key, value in args)
    return f"{name}({inside}{',' if comma and args else ''})"


def call(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    args = st.lists(st.tuples(st.one_of(st.none(), NAMES), values), max_size=4)
    return st.builds(_call_text, NAMES, args, st.booleans())


VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda vs: "[" + ", ".join(vs) + "]"),
        st.lists(inner, min_size=1, max_size=3).map(lambda vs: "(" + ", ".join(vs) + ",)"),
        call(inner),
    ),
    max_leaves=8,
)


def items(depth: int) -> st.SearchStrategy[str]:
    setting = st.builds(lambda k, v: f"{k} {v}", NAMES, st.one_of(SCALARS, call(VALUES)))
    kinds = [setting, call(VALUES)]
    if depth:
        label = st.one_of(st.just(""), NAMES.map(" ".__add__), st.sampled_from([" 2", " -1"]))
        kinds.append(
            st.builds(
                lambda k, lab, body: f"{k}{lab} {{ {' '.join(body)} }}",
                NAMES,
                label,
                st.lists(items(depth - 1), max_size=4),
            )
        )
    return st.one_of(*kinds)


@settings(max_examples=examples(200))
@given(st.lists(items(3), max_size=4), st.integers(0, 2**32))
def test_random_syntax(parts: list[str], seed: int) -> None:
    """Every kind of value, label, nesting and comment position formats idempotently, keeping
    the tree and the comments."""
    text = " ".join(parts)
    source = Source("<spec>", text)
    if parse(source, Diagnostics(source)) is None:  # e.g. `a b {`: a setting and a section
        return
    for layout in (text, scramble(text, seed)):
        formatted_and_checked(layout)


@settings(max_examples=examples(300))
@given(st.text(alphabet="ab1x2.-_ {}()[],=/#\"'\n\t\\", max_size=60))
def test_any_text_never_raises(text: str) -> None:
    formatted = format_text(text)
    if formatted is not None:
        assert format_text(formatted) == formatted


# --------------------------------------------------------------------------------------------
# (c) The layout, exactly

MESSY = """\
model   tiny{input 8x8x1
conv2d( 4,kernel = 3 ,activation=relu )   flatten()



     dense(10,activation=softmax)  }
data{source digits labels sparse   rescale 1 / 16}"""

CANONICAL = """\
model tiny {
  input 8x8x1
  conv2d(4, kernel=3, activation=relu)  flatten()

  dense(10, activation=softmax)
}

data { source digits  labels sparse  rescale 1/16 }
"""


def test_messy_spec_becomes_canonical() -> None:
    assert format_text(MESSY) == CANONICAL
    assert format_text(CANONICAL) == CANONICAL


def test_comments_after_code_stay_on_their_line() -> None:
    text = (
        "model m {\n"
        "    input 8x8x1 # the digits\n"
        "    conv2d(4)  maxpool(2)     # 4x4x4\n"
        "    flatten()                 # 64\n"
        "}  # end of model\n"
    )
    # Two spaces before a comment, except that aligned comments keep their column (30).
    assert formatted_and_checked(text) == (
        "model m {\n"
        "  input 8x8x1  # the digits\n"
        f"{'  conv2d(4)  maxpool(2)':<30}# 4x4x4\n"
        f"{'  flatten()':<30}# 64\n"
        "}  # end of model\n"
    )


def test_trailing_comment_columns() -> None:
    # Kept when the code ends two columns before; otherwise two spaces after the code.
    text = "a {\n  x 1 # close\n  longer_name(argument)  # far\n}\n"
    assert formatted_and_checked(text) == (
        "a {\n  x 1  # close\n  longer_name(argument)  # far\n}\n"
    )


def test_comments_alone_inside_sections() -> None:
    text = """\
train {   # the schedule
  # first the basics


  seed 1


  # the optimizer
  optimizer adam(lr=1e-3)
  # nothing after this
}
"""
    assert (
        formatted_and_checked(text)
        == """\
train {   # the schedule
  # first the basics

  seed 1

  # the optimizer
  optimizer adam(lr=1e-3)
  # nothing after this
}
"""
    )


def test_comment_inside_an_item_moves_above_it() -> None:
    text = 'data {\n  source directory("x",  # where\n    size=8x8)  rescale 1\n}\n'
    assert formatted_and_checked(text) == (
        'data {\n  # where\n  source directory("x", size=8x8)  rescale 1\n}\n'
    )
    text = "block # the label follows\n  b { relu() }\n"
    assert formatted_and_checked(text) == "# the label follows\nblock b {\n  relu()\n}\n"


@pytest.mark.parametrize("end", ["", "\n", "\n\n\n"])
def test_comment_at_file_end(end: str) -> None:
    text = f"model m {{ input 8x8x1 }}\n# the end{end}"
    assert formatted_and_checked(text) == "model m { input 8x8x1 }\n\n# the end\n"
    assert formatted_and_checked("# only a comment" + end) == "# only a comment\n"
    assert format_text("\n\n") == ""


def test_hash_inside_a_string_is_not_a_comment() -> None:
    text = "data {source directory('data/#1', classes=[\"a#b\", 'c']) # real\n}\n"
    formatted = formatted_and_checked(text)
    assert formatted == (
        "data {\n  source directory('data/#1', classes=[\"a#b\", 'c'])  # real\n}\n"
    )
    assert [c.text for c in collect_comments(formatted)] == ["# real"]


def test_blank_lines_collapse() -> None:
    text = (
        "\n\n\nmodel m {\n\n\n  input 8x8x1\n\n\n\n  flatten()\n\n\n}\n\n\n\n\ndata { }\ntrain { }"
    )
    assert formatted_and_checked(text) == (
        "model m {\n  input 8x8x1\n\n  flatten()\n}\n\ndata {}\n\ntrain {}\n"
    )


def test_sections_keep_the_authors_choice_of_one_line() -> None:
    text = "block a { relu() }\nblock b {\n  relu()\n}\nblock c {\n}\n"
    assert formatted_and_checked(text) == (
        "block a { relu() }\n\nblock b {\n  relu()\n}\n\nblock c {}\n"
    )


def test_long_rows_split_and_long_calls_wrap() -> None:
    row = "  ".join(f"conv2d({n}, kernel=3, name=layer_number_{n})" for n in range(4))
    formatted = formatted_and_checked(f"model m {{\n  {row}\n}}\n")
    lines = formatted.splitlines()
    assert lines[1:3] == [
        "  conv2d(0, kernel=3, name=layer_number_0)  conv2d(1, kernel=3, name=layer_number_1)",
        "  conv2d(2, kernel=3, name=layer_number_2)  conv2d(3, kernel=3, name=layer_number_3)",
    ]
    classes = ", ".join(f'"class_{n}"' for n in range(12))
    formatted = formatted_and_checked(
        f'data {{ source directory("x", size=8x8, classes=[{classes}]) }}'
    )
    assert formatted == (
        f'data {{\n  source directory(\n    "x",\n    size=8x8,\n    classes=[{classes}]\n  )\n}}\n'
    )


def test_numbers_and_strings_keep_their_text() -> None:
    text = "x { a 1e-4  b 0.0001  c 1/255  d 32x32x3  e 'single'  f \"double\"  g -0.50  h 1. }\n"
    assert formatted_and_checked(text) == text


def test_windows_line_endings() -> None:
    assert (
        format_text("model m {\r\n  input 8x8x1  # c\r\n}\r\n")
        == "model m {\n  input 8x8x1  # c\n}\n"
    )


@pytest.mark.parametrize(
    "text",
    [
        "model m {",
        "model m { conv2d(4 }",
        'data { source "open }',
        "model m { x 1/0 }",
        "a {" * 3000 + "}" * 3000,
        "\x00",
        "\ufeffmodel m {}",
    ],
)
def test_broken_text_is_not_formatted(text: str) -> None:
    assert format_text(text) is None


def test_nesting_too_deep_for_the_stack_reads_as_not_parsing() -> None:
    """The one exception a format request may meet: Python's stack on absurd nesting."""
    deep = "model m {\n  input 8x8x1\n  head { dense(" + "[" * 5000 + "]" * 5000 + ") }\n}\n"
    with pytest.raises(RecursionError):
        fmt._format(deep, "<spec>")
    assert format_text(deep) is None


def test_a_bug_in_the_formatter_surfaces_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A formatter bug is not "does not parse": it raises (the language server logs it, the
    command line calls it an internal error)."""

    def broken(*args: object) -> str:
        raise AttributeError("a bug in the layout")

    monkeypatch.setattr(fmt, "_layout", broken)
    with pytest.raises(AttributeError, match="a bug in the layout"):
        format_text(CANONICAL)


def test_300_layers_format_quickly() -> None:
    import time

    blocks = [
        f"  block b{n} {{\n"
        f"    conv2d(16)  batchnorm(epsilon=1e-5)  relu()   # {n}\n"
        "    residual { conv2d(16)  batchnorm()  relu()  conv2d(16)  batchnorm() }  relu()\n"
        "  }"
        for n in range(34)
    ]
    text = "model big {\n  input 32x32x3\n" + "\n".join(blocks) + "\n  head { flatten() }\n}\n"
    assert len(compile_text(text).spec.model.nodes) >= 300  # type: ignore[union-attr]
    format_text(text)
    start = time.perf_counter()
    formatted = format_text(text)
    # Generous for a loaded CI machine; it takes about 30 ms on one core.
    assert formatted is not None and time.perf_counter() - start < 0.5


# --------------------------------------------------------------------------------------------
# (d) The command line


def test_fmt_rewrites_files_in_place(tmp_path: Path) -> None:
    messy = write(tmp_path, "messy.cnn", MESSY)
    messy.chmod(0o640)
    tidy = write(tmp_path, "tidy.cnn", CANONICAL)
    tidy_stat = tidy.stat()
    result = run("fmt", str(messy), str(tidy))
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"reformatted {messy}",
        "1 file reformatted, 1 file left unchanged",
    ]
    assert messy.read_text(encoding="utf-8") == CANONICAL
    assert messy.stat().st_mode & 0o777 == 0o640
    assert tidy.stat().st_mtime_ns == tidy_stat.st_mtime_ns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy.cnn", "tidy.cnn"]
    again = run("fmt", str(messy), str(tidy))
    assert again.returncode == 0
    assert again.stdout.splitlines() == ["0 files reformatted, 2 files left unchanged"]


def test_fmt_check_and_diff_change_nothing(tmp_path: Path) -> None:
    messy = write(tmp_path, "messy.cnn", MESSY)
    tidy = write(tmp_path, "tidy.cnn", CANONICAL)
    check = run("fmt", "--check", str(messy), str(tidy))
    no_traceback(check)
    assert check.returncode == 1
    assert f"would reformat {messy}" in check.stdout
    assert f"would reformat {tidy}" not in check.stdout
    assert "1 file would be reformatted, 1 file already formatted" in check.stdout
    assert run("fmt", "--check", str(tidy)).returncode == 0
    diff = run("fmt", "--diff", str(messy), str(tidy))
    no_traceback(diff)
    assert diff.returncode == 1
    lines = diff.stdout.splitlines()
    assert lines[:2] == [f"--- {messy}", f"+++ {messy}"]
    assert "-model   tiny{input 8x8x1" in lines and "+model tiny {" in lines
    assert "+data { source digits  labels sparse  rescale 1/16 }" in lines
    assert str(tidy) not in diff.stdout
    clean = run("fmt", "--diff", str(tidy))
    assert (clean.returncode, clean.stdout) == (0, "")
    assert messy.read_text(encoding="utf-8") == MESSY


def test_fmt_standard_input() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnnspec", "fmt", "-"],
        input=MESSY,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    no_traceback(result)
    assert (result.returncode, result.stdout, result.stderr) == (0, CANONICAL, "")


def test_fmt_leaves_a_broken_file_alone(tmp_path: Path) -> None:
    broken_text = "model open {\n  input 8x8x1\n  flatten(\n"
    broken = write(tmp_path, "open.cnn", broken_text)
    messy = write(tmp_path, "messy.cnn", MESSY)
    result = run("fmt", str(broken), str(messy))
    no_traceback(result)
    assert result.returncode == 1
    assert f"{broken}:3:11: error[E003]: unexpected end of file" in result.stderr
    assert broken.read_text(encoding="utf-8") == broken_text
    assert messy.read_text(encoding="utf-8") == CANONICAL
    assert "1 file reformatted, 0 files left unchanged, 1 file not formatted" in result.stdout
    missing = run("fmt", str(tmp_path / "nope.cnn"))
    no_traceback(missing)
    assert missing.returncode == 2


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_specs_are_in_the_canonical_layout(path: Path) -> None:
    """The repository's own specs pass `cnnspec fmt --check`, as a user's CI would ask."""
    text = path.read_text(encoding="utf-8")
    assert format_text(text, str(path)) == text, f"run: cnnspec fmt {path.relative_to(ROOT)}"
