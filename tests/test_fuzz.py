"""Mutation fuzzing of the shipped specs.

Every shipped spec is mutated thousands of times by small, deterministic edits (a seeded
`random.Random`, so a failure reproduces exactly; `make fuzz` draws a fresh seed, prints it and
mutates 20 times as much, see tests/fuzzing.py), and every mutant is compiled in-process
through `compile_text`. Whatever the mutant, the checker must

* not raise, and finish within a few seconds;
* when it reports errors, locate every diagnostic inside the file (line >= 1, column >= 1, no
  further than just past the end of its line);
* when it reports no error, produce a spec whose text rendering and JSON summary work.

Some mutations are *guaranteed* to make the spec invalid, and for those the checker must report
at least one error:

* deleting, duplicating or inserting a bracket `{ } ( ) [ ]` (the grammar only derives balanced
  brackets, and the mutation happens outside strings and comments);
* truncating the text at a point inside an open section or call;
* inserting a character that starts no token (`@`, `$`, `;`, ...) outside strings and comments;
* replacing a number by a name, or by its negation (every number in the shipped specs must be
  positive or at least zero, except a `normalize` mean);
* replacing a number whose slot needs a positive integer (a filter count, a kernel, `epochs`,
  `repeat N`) by 0 or by a float, or one whose slot needs a fraction (a dropout rate, a factor) by
  a huge number;
* giving a size (`input 32x32x3`, `size=32x32`) a zero, a missing or an extra dimension.

Where such a mutation can only give a syntax error, it must give exactly one, of the right code,
at the right place: an inserted stray character is reported at that character, a truncation on
the last line that is left.

A few dozen mutants also go through the real command line in subprocesses.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from cnnspec.compiler import compile_text
from cnnspec.diagnostics import render_text
from cnnspec.summary import to_json
from tests.conftest import ROOT, SPECS
from tests.fuzzing import FUZZ_SEED, examples

# Per spec and mutation class: 4 specs x 9 classes x 150 = 5,400 mutants in CI (`make fuzz`: more).
MUTANTS_PER_CLASS = examples(150)
CLI_MUTANTS = 30
SECONDS_PER_COMPILE = 5.0

# --------------------------------------------------------------------------------------------
# Tokens, with the grammar's own regular expressions


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<comment>\#[^\n]*)
      | (?P<string>"([^"\\\n]|\\.)*"|'([^'\\\n]|\\.)*')
      | (?P<dims>[0-9]+(x[0-9]+)+(?![A-Za-z0-9_.]))
      | (?P<number>-?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|-?[0-9]+[eE][-+]?[0-9]+)
      | (?P<int>-?[0-9]+)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_*][A-Za-z0-9_*]*)*)
      | (?P<punct>[{}()\[\],=/])""",
    re.VERBOSE,
)
BRACKETS = frozenset("{}()[]")
OPENERS = {"{": "}", "(": ")", "[": "]"}
# Characters that start no token: inserted outside strings and comments, they cannot parse.
# `!` is not bad on its own: before `=` it makes `!=`.
BAD_CHARS = "@$%^&?;~|`\\"
ORDINARY_CHARS = "xX019-.,=/\"' \n_*+<>!"


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int
    # For numbers: the call and argument (or setting) it is the value of, when that is clear.
    slot: tuple[str, str] | None = None
    # Whether the token is inside the arguments of a `normalize(...)` call.
    in_normalize: bool = False


def tokenize(text: str) -> list[Token]:
    """The spec's tokens without whitespace and comments; numbers know their slot."""
    raw = list(_TOKEN.finditer(text))
    assert "".join(m.group() for m in raw) == text, "the tokenizer must cover the whole text"
    tokens: list[Token] = []
    calls: list[str | None] = []  # for each open bracket, the call it opens (None if no call)
    for match in raw:
        kind = match.lastgroup
        assert kind is not None
        if kind in ("ws", "comment"):
            continue
        value = match.group()
        slot = None
        if kind in ("int", "number"):
            slot = _slot(tokens, calls)
        token = Token(kind, value, match.start(), match.end(), slot, "normalize" in calls)
        if value in OPENERS:
            previous = tokens[-1] if tokens else None
            opens_call = value == "(" and previous is not None and previous.kind == "name"
            calls.append(previous.text if opens_call and previous else None)
        elif value in BRACKETS and calls:
            calls.pop()
        tokens.append(token)
    return tokens


def _slot(before: list[Token], calls: list[str | None]) -> tuple[str, str] | None:
    if not before:
        return None
    previous = before[-1]
    call = calls[-1] if calls else None
    if previous.text == "=" and len(before) >= 2 and call is not None:
        return (call, before[-2].text)
    if previous.text == "(" and len(before) >= 2 and before[-2].kind == "name":
        return (before[-2].text, "#0")
    if previous.kind == "name" and (not calls or calls[-1] is None):
        return ("setting", previous.text)
    return None


def _matches(slot: tuple[str, str] | None, slots: set[tuple[str, str]]) -> bool:
    return slot is not None and (slot in slots or ("*", slot[1]) in slots)


# Slots that need a positive integer: 0, a negative number, a float or a name is always wrong.
POSITIVE_INT = {
    ("conv2d", "#0"),
    ("dense", "#0"),
    ("maxpool", "#0"),
    ("avgpool", "#0"),
    ("*", "kernel"),
    ("*", "stride"),
    ("setting", "epochs"),
    ("setting", "batch"),
    ("setting", "repeat"),
}
# Slots that need an integer (zero allowed).
INT = POSITIVE_INT | {("setting", "seed"), ("*", "patience")}
# Slots that need a number greater than 0.
POSITIVE = POSITIVE_INT | {("*", "lr"), ("*", "epsilon"), ("*", "factor"), ("zoom", "#0")}
# Slots that need a number below 1 (or 180 degrees): a huge number is always wrong.
BOUNDED = {
    ("dropout", "#0"),
    ("*", "factor"),
    ("*", "momentum"),
    ("*", "test_fraction"),
    ("setting", "validation"),
    ("shift", "#0"),
    ("*", "width"),
    ("*", "height"),
    ("zoom", "#0"),
    ("rotation", "#0"),
    ("setting", "repeat"),
}


# --------------------------------------------------------------------------------------------
# Mutations


@dataclass(frozen=True)
class Mutant:
    spec: str
    mutation: str
    description: str
    text: str
    guaranteed_invalid: bool
    # When the mutation must give exactly one syntax error: its possible codes, and for an
    # inserted character the offset it must point at, for a truncation the line.
    syntax_codes: frozenset[str] = frozenset()
    syntax_offset: int | None = None
    syntax_line: int | None = None


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _replace(text: str, token: Token, new: str) -> str:
    return text[: token.start] + new + text[token.end :]


def delete_token(text: str, tokens: list[Token], rng: random.Random) -> tuple[str, str, bool]:
    token = rng.choice(tokens)
    return (
        _replace(text, token, ""),
        f"delete {token.text!r} at line {_line(text, token.start)}",
        token.text in BRACKETS,
    )


def delete_bracket(text: str, tokens: list[Token], rng: random.Random) -> tuple[str, str, bool]:
    token = rng.choice([t for t in tokens if t.text in BRACKETS])
    return (
        _replace(text, token, ""),
        f"delete {token.text!r} at line {_line(text, token.start)}",
        True,
    )


def duplicate_token(text: str, tokens: list[Token], rng: random.Random) -> tuple[str, str, bool]:
    token = rng.choice(tokens)
    return (
        _replace(text, token, token.text + " " + token.text),
        f"duplicate {token.text!r} at line {_line(text, token.start)}",
        token.text in BRACKETS,
    )


def replace_number(text: str, tokens: list[Token], rng: random.Random) -> tuple[str, str, bool]:
    token = rng.choice([t for t in tokens if t.kind in ("int", "number")])
    value = float(token.text)
    kind = rng.choice(["negative", "zero", "huge", "float", "name"])
    if kind == "negative":
        new = token.text[1:] if token.text.startswith("-") else "-" + token.text
        invalid = value != 0 and not token.in_normalize
    elif kind == "zero":
        new = "0"
        invalid = _matches(token.slot, POSITIVE)
    elif kind == "huge":
        new = rng.choice(["1000000", "99999999999999999999", "1e300"])
        invalid = _matches(token.slot, BOUNDED)
    elif kind == "float":
        new = rng.choice(["2.5", "0.5", "1e-3"])
        invalid = _matches(token.slot, INT)
    else:
        new = rng.choice(["zzz", "relu", "same", "conv2d"])
        invalid = True
    description = (
        f"replace {token.text!r} ({kind}, slot {token.slot}) by {new!r} "
        f"at line {_line(text, token.start)}"
    )
    return _replace(text, token, new), description, invalid


def truncate(text: str, tokens: list[Token], rng: random.Random) -> tuple[str, str, bool]:
    cut = rng.randrange(0, len(text))
    depth = 0
    for token in tokens:
        if token.end > cut:
            break
        if token.text in OPENERS:
            depth += 1
        elif token.text in BRACKETS:
            depth -= 1
    return (
        text[:cut],
        f"truncate at offset {cut} (line {_line(text, cut)}, depth {depth})",
        depth > 0,
    )


def swap_tokens(text: str, tokens: list[Token], rng: random.Random) -> tuple[str, str, bool]:
    first, second = sorted(rng.sample(tokens, 2), key=lambda t: t.start)
    mutated = (
        text[: first.start]
        + second.text
        + text[first.end : second.start]
        + first.text
        + text[second.end :]
    )
    description = (
        f"swap {first.text!r} (line {_line(text, first.start)}) "
        f"and {second.text!r} (line {_line(text, second.start)})"
    )
    return mutated, description, False


def insert_char(text: str, tokens: list[Token], rng: random.Random) -> tuple[str, str, bool]:
    char = rng.choice(BAD_CHARS + "{}()[]" + ORDINARY_CHARS)
    if rng.random() < 0.5:
        # At a token boundary: never inside a string or a comment.
        token = rng.choice(tokens)
        offset = rng.choice([token.start, token.end])
        invalid = char in BAD_CHARS or char in BRACKETS
    else:
        offset = rng.randrange(0, len(text) + 1)
        invalid = False
    description = f"insert {char!r} at offset {offset} (line {_line(text, offset)})"
    return text[:offset] + char + text[offset:], description, invalid


def replace_dims(text: str, tokens: list[Token], rng: random.Random) -> tuple[str, str, bool]:
    token = rng.choice([t for t in tokens if t.kind == "dims"])
    parts = token.text.split("x")
    kind = rng.choice(["zero", "drop", "extra", "tiny", "huge"])
    if kind == "zero":
        parts[rng.randrange(len(parts))] = "0"
    elif kind == "drop":
        del parts[rng.randrange(len(parts))]
    elif kind == "extra":
        parts.append(rng.choice(["1", "3"]))
    elif kind == "tiny":
        parts = [rng.choice(["1", "2", "4"]) for _ in parts[:-1]] + parts[-1:]
    else:
        parts = [rng.choice(["4096", "999999"]) for _ in parts[:-1]] + parts[-1:]
    new = "x".join(parts)
    description = f"replace {token.text!r} ({kind}) by {new!r} at line {_line(text, token.start)}"
    # A zero, a missing or an extra dimension is wrong both for `input` and for a `size=`.
    return _replace(text, token, new), description, kind in ("zero", "drop", "extra")


def insert_bad_char(text: str, tokens: list[Token], rng: random.Random) -> tuple[str, str, bool]:
    char = rng.choice(BAD_CHARS)
    token = rng.choice(tokens)
    offset = rng.choice([token.start, token.end])
    description = f"insert {char!r} at offset {offset} (line {_line(text, offset)})"
    return text[:offset] + char + text[offset:], description, True


Mutation = Callable[[str, list[Token], random.Random], tuple[str, str, bool]]

# Mutations that always give exactly one syntax error, with the codes it may have.
SYNTAX_CODES = {
    "delete_bracket": frozenset({"E002", "E003"}),
    "insert_bad_char": frozenset({"E001"}),
}
MUTATIONS: dict[str, Mutation] = {
    "delete_token": delete_token,
    "delete_bracket": delete_bracket,
    "duplicate_token": duplicate_token,
    "replace_number": replace_number,
    "replace_dims": replace_dims,
    "truncate": truncate,
    "swap_tokens": swap_tokens,
    "insert_char": insert_char,
    "insert_bad_char": insert_bad_char,
}


@cache
def mutants(spec: str, mutation: str, count: int = MUTANTS_PER_CLASS) -> tuple[Mutant, ...]:
    text = (ROOT / "specs" / f"{spec}.cnn").read_text(encoding="utf-8")
    tokens = tokenize(text)
    # A seed per spec and mutation class: adding a class does not change the others' mutants.
    rng = random.Random(f"{FUZZ_SEED}/{spec}/{mutation}")
    result = []
    for _ in range(count):
        mutated, description, invalid = MUTATIONS[mutation](text, tokens, rng)
        codes = SYNTAX_CODES.get(mutation, frozenset())
        if mutation == "truncate" and invalid:
            # Cut inside an open bracket: the file ends too early, or the cut splits a string or
            # a number (`1e-`) in two. Either way the error is on the last line that is left.
            codes = frozenset({"E001", "E002", "E003"})
        offset = line = None
        if mutation == "insert_bad_char":
            offset = int(re.search(r"offset (\d+)", description)[1])  # type: ignore[index]
        if mutation == "truncate" and invalid:
            line = _line(mutated, len(mutated.rstrip()))
        result.append(Mutant(spec, mutation, description, mutated, invalid, codes, offset, line))
    return tuple(result)


# --------------------------------------------------------------------------------------------
# Running a mutant


class CompileTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: object) -> None:
        raise CompileTimeout(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def problems_with(mutant: Mutant) -> list[str]:
    """What is wrong with the checker's answer for one mutant (nothing, normally)."""
    try:
        with time_limit(SECONDS_PER_COMPILE):
            compilation = compile_text(mutant.text, "mutant.cnn")
            diagnostics = list(compilation.diagnostics)
            rendered = [render_text(d, compilation.source) for d in diagnostics]
            if compilation.ok and compilation.spec is not None:
                to_json(compilation.spec)
    except Exception as error:  # the point of the test: report any exception with the mutant
        return [f"raised {type(error).__name__}: {error}\n{traceback.format_exc(limit=-3)}"]
    problems = []
    lines = mutant.text.splitlines() or [""]
    for diagnostic in diagnostics:
        span = diagnostic.span
        where = f"{span.line}:{span.column} {diagnostic.code} {diagnostic.message}"
        if not 1 <= span.line <= len(lines):
            problems.append(f"line outside the file ({len(lines)} lines): {where}")
        elif not 1 <= span.column <= len(lines[span.line - 1].expandtabs(1)) + 1:
            problems.append(f"column outside line {span.line}: {where}")
    has_errors = compilation.diagnostics.has_errors
    if not has_errors and compilation.spec is None:
        problems.append("no error, but no spec either")
    if mutant.guaranteed_invalid and not has_errors:
        problems.append("a guaranteed-invalid mutant was accepted")
    if mutant.syntax_codes:
        found = [(d.code, d.span.start) for d in diagnostics]
        if len(found) != 1 or found[0][0] not in mutant.syntax_codes:
            problems.append(f"expected one syntax error {sorted(mutant.syntax_codes)}, got {found}")
        elif mutant.syntax_offset is not None and found[0][1] != mutant.syntax_offset:
            problems.append(f"the syntax error is not at offset {mutant.syntax_offset}: {found}")
        elif mutant.syntax_line is not None and diagnostics[0].span.line != mutant.syntax_line:
            problems.append(f"the syntax error is not on line {mutant.syntax_line}: {found}")
    if len(rendered) != len(diagnostics):
        problems.append("not every diagnostic rendered")
    return problems


def _report(failures: list[tuple[Mutant, list[str]]]) -> str:
    parts = []
    for mutant, problems in failures[:5]:
        parts.append(
            f"--- {mutant.spec}: {mutant.description}\n" + "\n".join(problems) + "\n"
            "mutant text:\n" + mutant.text
        )
    return f"{len(failures)} failing mutants; the first ones:\n" + "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Tests


SPEC_NAMES = [spec.stem for spec in SPECS]


def test_tokenizer_agrees_with_the_parser() -> None:
    """Deleting every comment and joining the tokens with spaces gives the same compilation."""
    for spec in SPECS:
        text = spec.read_text(encoding="utf-8")
        tokens = tokenize(text)
        rejoined = " ".join(t.text for t in tokens)
        a, b = compile_text(text), compile_text(rejoined)
        assert a.ok and b.ok
        assert a.spec is not None and b.spec is not None
        assert to_json(a.spec) == to_json(b.spec)


def test_number_slots() -> None:
    tokens = tokenize("model m { repeat 2 { conv2d(32, kernel=3) dropout(0.25) } }\n")
    slots = {t.text: t.slot for t in tokens if t.kind in ("int", "number")}
    assert slots == {
        "2": ("setting", "repeat"),
        "32": ("conv2d", "#0"),
        "3": ("conv2d", "kernel"),
        "0.25": ("dropout", "#0"),
    }


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("spec", SPEC_NAMES)
def test_mutants(spec: str, mutation: str) -> None:
    failures = []
    for mutant in mutants(spec, mutation):
        problems = problems_with(mutant)
        if problems:
            failures.append((mutant, problems))
    assert not failures, _report(failures)


@pytest.mark.parametrize(
    "mutation", ["delete_bracket", "insert_bad_char", "truncate", "replace_number", "replace_dims"]
)
def test_guaranteed_invalid_classes_are_not_vacuous(mutation: str) -> None:
    guaranteed = [m for spec in SPEC_NAMES for m in mutants(spec, mutation) if m.guaranteed_invalid]
    assert len(guaranteed) >= 50, len(guaranteed)


@pytest.mark.library  # slow: `make test-library` runs it
def test_fuzzing_finds_valid_mutants_too() -> None:
    """Not every mutation breaks a spec: the fuzzer also exercises the checks of valid specs."""
    valid = [
        m
        for spec in SPEC_NAMES
        for m in mutants(spec, "replace_number")
        if compile_text(m.text, "mutant.cnn").ok
    ]
    assert len(valid) >= 20


HEADER = re.compile(r"^\S+:\d+:\d+: error\[E\d{3}\]: ", re.MULTILINE)


def _cli_mutants() -> list[Mutant]:
    rng = random.Random(f"{FUZZ_SEED}/cli")
    pool = [
        m for spec in SPEC_NAMES for mutation in sorted(MUTATIONS) for m in mutants(spec, mutation)
    ]
    return rng.sample(pool, CLI_MUTANTS)


def _run_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cnnspec", "check", str(path)],
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_mutants_through_the_cli(tmp_path: Path) -> None:
    chosen = _cli_mutants()
    paths = []
    for number, mutant in enumerate(chosen):
        path = tmp_path / f"mutant{number:02d}.cnn"
        path.write_text(mutant.text, encoding="utf-8")
        paths.append(path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_run_cli, paths))
    exits = set()
    for mutant, path, result in zip(chosen, paths, results, strict=True):
        context = f"{mutant.spec}: {mutant.description}\n{result.stdout}\n{result.stderr}"
        exits.add(result.returncode)
        assert result.returncode in (0, 1), context
        assert "Traceback" not in result.stdout + result.stderr, context
        expected = 1 if compile_text(mutant.text, str(path)).diagnostics.has_errors else 0
        assert result.returncode == expected, context
        if result.returncode == 1:
            assert HEADER.search(result.stderr), context
        else:
            assert f"{path}: ok:" in result.stdout, context
    assert 1 in exits


# --------------------------------------------------------------------------------------------
# Found by the fuzzer's "huge number" idea


def test_huge_input_with_a_shrinking_residual_is_checked_quickly() -> None:
    text = (
        "model m {\n"
        "  input 999999999x999999999x3\n"
        "  residual { conv2d(8) }\n"
        "  global_avg_pool()\n"
        "  dense(10, activation=softmax)\n"
        "}\n"
    )
    with time_limit(2.0):
        compilation = compile_text(text, "huge.cnn")
    assert [d.code for d in compilation.diagnostics.errors] == ["E203"]
