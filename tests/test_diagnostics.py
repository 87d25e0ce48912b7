"""Diagnostics checked against inline expectations, in the style of mypy's `check-columns.test`.

Every `tests/diagnostics/*.cnn` fixture is a spec whose lines say, in a trailing comment, which
diagnostics the checker must report on that line. The test compiles the fixture and requires
the set of reported (line, column, code) triples to be *exactly* the expected set: a missing
diagnostic fails, and so does an extra one.

Expectation syntax
------------------

An expectation starts at a `#` followed by `E:` (an error) or `W:` (a warning)::

    conv2x(32)   # E: 3 E110 unknown layer 'conv2x' hint: did you mean 'conv2d'?

    E: | W:      severity: error or warning
    3            the 1-based column the diagnostic starts at; optional (then any column
                 matches), or `$` for "just past the last non-blank character of this line",
                 which is where an unexpected end of file points
    E110         the code
    unknown...   optional: text the message must contain
    hint: ...    optional: text the hint must contain

Several expectations on one line are separate comments::

    relu()  # W: 3 W203 follows a layer  # E: 3 E302 needs a softmax output

Fixtures are compiled in `tests/diagnostics`, so a relative data folder is read from there (as
the checker reads one from the working directory): `folders/` holds the image folders they use.
They are checked as if the machine had 16 GiB of memory (CNNSPEC_MEMORY_BYTES), so a batch's
activations are judged the same on every machine.

The line of an expectation is the line its comment is on. Ordinary comments (`# 4x4x32`) are
left alone: only a `#` directly followed by `E:` or `W:` starts an expectation.

A syntax error stops the parse, so each syntax fixture (`syntax_*.cnn`) holds exactly one. A
shape error leaves the shape of everything after it unknown and unchecked, so the shape
fixtures (`shapes_*.cnn`) hold one each too. The other fixtures group a theme.

`test_every_code_is_exercised` keeps the fixtures complete: every code in `CODES` must be
expected by at least one fixture, or be listed in `UNREACHABLE` with the reason it cannot be
produced.

Fixtures named `bug_*.cnn` state what the checker *should* report for an input it gets wrong
today. Each is listed in `KNOWN_BUGS` with the reason and runs as a strict xfail, so the suite
stays green until the bug is fixed and then says so; they do not count towards code coverage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from cnnspec.compiler import compile_text
from cnnspec.diagnostics import CODES, Diagnostic, Severity

FIXTURES = Path(__file__).resolve().parent / "diagnostics"
FIXTURE_FILES = sorted(FIXTURES.glob("*.cnn"))
GOOD_FIXTURES = [p for p in FIXTURE_FILES if not p.stem.startswith("bug_")]
BUG_FIXTURES = [p for p in FIXTURE_FILES if p.stem.startswith("bug_")]

# What each bug_*.cnn fixture shows: checker bugs not fixed yet (none at present).
KNOWN_BUGS: dict[str, str] = {}

# Codes no spec can produce, with the reason. Keep this empty unless the reason is solid.
UNREACHABLE: dict[str, str] = {
    # Every kind has every backend's emitter today; tests/test_build.py proves the path by
    # making one refuse.
    "E401": "raised only when a backend cannot express a layer (cnnspec build/export/verify)",
}

_START = re.compile(r"#\s*(?=[EW]:)")
_EXPECTATION = re.compile(
    r"""^(?P<severity>[EW]):\s*
        (?:(?P<column>\d+|\$)\s+)?
        (?P<code>[EW]\d{3})\b
        (?P<rest>.*)$""",
    re.VERBOSE,
)
_HINT = re.compile(r"(?:^|\s)hint:\s*")


@dataclass(frozen=True)
class Expectation:
    line: int
    column: int | None
    severity: Severity
    code: str
    message: str
    hint: str | None

    def matches(self, diagnostic: Diagnostic) -> bool:
        span = diagnostic.span
        return (
            span.line == self.line
            and (self.column is None or span.column == self.column)
            and diagnostic.code == self.code
            and diagnostic.severity is self.severity
        )

    def describe(self) -> str:
        column = "?" if self.column is None else str(self.column)
        text = f"{self.line}:{column}: {self.severity}[{self.code}]"
        text += f" ...{self.message}..." if self.message else ""
        return text + (f"  hint: ...{self.hint}..." if self.hint else "")


def parse_expectations(text: str) -> list[Expectation]:
    """The expectations written in a fixture's comments."""
    found: list[Expectation] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = _START.split(line)
        for part in parts[1:]:
            match = _EXPECTATION.match(part.strip())
            if match is None:
                raise ValueError(f"line {number}: malformed expectation {part.strip()!r}")
            rest = match["rest"].strip()
            message, hint = rest, None
            hint_match = _HINT.search(rest)
            if hint_match is not None:
                message = rest[: hint_match.start()].strip()
                hint = rest[hint_match.end() :].strip()
            column_text = match["column"]
            column: int | None
            if column_text == "$":
                column = len(line.rstrip()) + 1
            else:
                column = int(column_text) if column_text else None
            severity = Severity.ERROR if match["severity"] == "E" else Severity.WARNING
            code = match["code"]
            if code[0] != match["severity"]:
                raise ValueError(f"line {number}: {match['severity']}: with code {code}")
            found.append(Expectation(number, column, severity, code, message, hint))
    return found


def describe(diagnostic: Diagnostic) -> str:
    span = diagnostic.span
    text = (
        f"{span.line}:{span.column}: {diagnostic.severity}[{diagnostic.code}] {diagnostic.message}"
    )
    return text + (f"  hint: {diagnostic.hint}" if diagnostic.hint else "")


def compare(path: Path) -> list[str]:
    """Problems with a fixture's diagnostics: missing, unexpected, wrong message or hint."""
    text = path.read_text(encoding="utf-8")
    expectations = parse_expectations(text)
    diagnostics = list(compile_text(text, path.name).diagnostics)
    problems: list[str] = []
    unmatched = list(diagnostics)
    # Expectations with a column first, so a column-less one cannot take another's diagnostic.
    for expectation in sorted(expectations, key=lambda e: e.column is None):
        candidates = [d for d in unmatched if expectation.matches(d)]
        if not candidates:
            problems.append(f"missing:    {expectation.describe()}")
            continue
        chosen = next((d for d in candidates if expectation.message in d.message), candidates[0])
        unmatched.remove(chosen)
        if expectation.message not in chosen.message:
            problems.append(
                f"message:    {describe(chosen)}\n"
                f"            does not contain {expectation.message!r}"
            )
        if expectation.hint is not None and expectation.hint not in (chosen.hint or ""):
            problems.append(
                f"hint:       {describe(chosen)}\n"
                f"            hint does not contain {expectation.hint!r}"
            )
    problems.extend(f"unexpected: {describe(d)}" for d in unmatched)
    return problems


# --------------------------------------------------------------------------------------------
# The fixtures


@pytest.fixture(autouse=True)
def _the_same_machine_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wherever pytest runs, and on whatever machine: a fixture's relative data folder is read
    from tests/diagnostics, and a batch's activations are weighed against 16 GiB."""
    monkeypatch.chdir(FIXTURES)
    monkeypatch.setenv("CNNSPEC_MEMORY_BYTES", str(16 * 2**30))


def test_fixtures_exist() -> None:
    assert len(GOOD_FIXTURES) >= 10


def test_known_bugs_have_fixtures() -> None:
    assert {p.stem for p in BUG_FIXTURES} == set(KNOWN_BUGS)


@pytest.mark.parametrize("path", GOOD_FIXTURES, ids=lambda p: p.stem)
def test_fixture(path: Path) -> None:
    problems = compare(path)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS.get(p.stem, "?")))
        for p in BUG_FIXTURES
    ],
    ids=lambda p: p.stem,
)
def test_known_bug_fixture(path: Path) -> None:
    problems = compare(path)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_has_expectations(path: Path) -> None:
    assert parse_expectations(path.read_text(encoding="utf-8")), f"{path.name} expects nothing"


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_diagnostics_are_within_the_file(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    for diagnostic in compile_text(text, path.name).diagnostics:
        span = diagnostic.span
        assert 1 <= span.line <= len(lines), describe(diagnostic)
        # A column may be one past the end of its line: where an unexpected end of file points.
        assert 1 <= span.column <= len(lines[span.line - 1]) + 1, describe(diagnostic)
        assert (span.end_line, span.end_column) > (span.line, span.column), describe(diagnostic)


def test_syntax_fixtures_hold_one_error_each() -> None:
    for path in GOOD_FIXTURES:
        if path.stem.startswith("syntax_"):
            expectations = parse_expectations(path.read_text(encoding="utf-8"))
            assert len(expectations) == 1, path.name
            assert expectations[0].code.startswith("E0"), path.name


def test_every_code_is_exercised() -> None:
    expected = {
        e.code for path in GOOD_FIXTURES for e in parse_expectations(path.read_text("utf-8"))
    }
    assert set(UNREACHABLE) <= set(CODES)
    assert not set(UNREACHABLE) & expected, "a code listed as unreachable is exercised"
    missing = set(CODES) - expected - set(UNREACHABLE)
    assert not missing, f"codes no fixture exercises: {sorted(missing)}"
    unknown = expected - set(CODES)
    assert not unknown, f"fixtures expect codes that do not exist: {sorted(unknown)}"


def test_the_readme_table_of_codes_is_generated_from_their_declarations() -> None:
    """cnnspec/codes.py declares each code once; the README's table is `cnnspec codes
    --markdown`, so a code added, renamed or explained anew cannot leave the README behind."""
    from cnnspec.codes import markdown_table

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "paste `cnnspec codes --markdown` into the README"
    assert markdown_table().count("\n| ") == len(CODES)


def test_a_diagnostic_takes_a_declared_code_of_its_severity() -> None:
    from cnnspec import codes
    from cnnspec.diagnostics import Diagnostics
    from cnnspec.source import Source

    diagnostics = Diagnostics(Source("t.cnn", "model m {}\n"))
    span = diagnostics.source.span_at(0, 5)
    with pytest.raises(AssertionError):
        diagnostics.error("E104", "a bare string is no code", span)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        diagnostics.warning(codes.WRONG_KIND, "an error's code on a warning", span)
    diagnostics.error(codes.WRONG_KIND, "a declared code", span)
    (made,) = list(diagnostics)
    assert made.code == "E104" and made.code.summary == "wrong kind of value"
    # A diagnostic crosses processes (the fuzz campaign's workers, the language server's):
    # its code comes back as the declared constant, with its summary.
    import pickle

    assert pickle.loads(pickle.dumps(made)).code is codes.WRONG_KIND


# --------------------------------------------------------------------------------------------
# The expectation parser itself


def test_parse_expectations() -> None:
    text = (
        "model m {  # a plain comment\n"
        "  conv2x(32)  # E: 3 E110 unknown layer 'conv2x' hint: did you mean 'conv2d'?\n"
        "  relu()  # W: W203 follows  # E: 3 E302\n"
        "  x {  # E: $ E003 opened at line 1\n"
    )
    assert parse_expectations(text) == [
        Expectation(
            2, 3, Severity.ERROR, "E110", "unknown layer 'conv2x'", "did you mean 'conv2d'?"
        ),
        Expectation(3, None, Severity.WARNING, "W203", "follows", None),
        Expectation(3, 3, Severity.ERROR, "E302", "", None),
        Expectation(4, 36, Severity.ERROR, "E003", "opened at line 1", None),
    ]


@pytest.mark.parametrize("bad", ["# E: 3 X110 oops", "# W: 3 E110 oops", "# E: three E110"])
def test_malformed_expectations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_expectations(f"relu()  {bad}\n")


def test_compare_reports_missing_and_unexpected(tmp_path: Path) -> None:
    path = tmp_path / "t.cnn"
    path.write_text(
        "model m {\n"
        "  input 8x8x1\n"
        "  conv2x(4)  # E: 4 E110\n"  # wrong column: missing, and the real one is unexpected
        "  flatten() dense(10, activation=softmax)  # E: 3 E999\n"
        "}\n",
        encoding="utf-8",
    )
    problems = compare(path)
    assert any(p.startswith("missing:") and "E110" in p for p in problems)
    assert any(p.startswith("missing:") and "E999" in p for p in problems)
    assert any(p.startswith("unexpected:") and "3:3:" in p for p in problems)


# --------------------------------------------------------------------------------------------
# Diagnostics that need a generated spec


def test_deep_nesting_is_a_diagnostic_not_a_crash() -> None:
    depth = 3000
    text = (
        "model deep {\n  input 8x8x1\n"
        + "block b { " * depth
        + "relu()"
        + " }" * depth
        + "\n  flatten() dense(10, activation=softmax)\n}\n"
    )
    diagnostics = list(compile_text(text, "deep.cnn").diagnostics)
    assert [d.code for d in diagnostics] == ["E117"]
    assert "nested too deeply" in diagnostics[0].message


# --------------------------------------------------------------------------------------------
# Known bugs that a fixture cannot express (no code to expect, or a value to compare)


def _codes(text: str) -> list[tuple[int, str]]:
    return [(d.span.line, d.code) for d in compile_text(text, "bug.cnn").diagnostics]


_DIGITS_MODEL = (
    "model m {\n"
    "  input 8x8x1\n"
    "  block features { conv2d(4) }\n"
    "  head { flatten() dense(10, activation=softmax) }\n"
    "}\n"
    "data { source digits  labels sparse  validation 0.1 }\n"
)


def test_train_level_freeze_with_phases_is_applied_or_reported() -> None:
    text = _DIGITS_MODEL + "train {\n  freeze features\n  phase a { epochs 2 }\n}\n"
    compilation = compile_text(text, "bug.cnn")
    assert compilation.spec is not None
    first = compilation.spec.phases[0]
    reported = any(d.span.line == 8 for d in compilation.diagnostics)
    assert "features_conv2d_1" in first.frozen or reported


def test_class_weight_count_must_match_the_classes() -> None:
    text = _DIGITS_MODEL + "train { class_weight [1, 2] }\n"
    assert any(line == 7 and code.startswith("E") for line, code in _codes(text))


def test_normalize_channels_must_match_the_input() -> None:
    text = _DIGITS_MODEL.replace(
        "validation 0.1 }", "validation 0.1  normalize(mean=(0.5, 0.5, 0.5), std=(1, 1, 1)) }"
    )
    assert any(line == 6 and code.startswith("E") for line, code in _codes(text))


def test_negative_input_size_is_reported_on_its_line() -> None:
    text = "model m {\n  input -32x32x3\n}\n"
    assert [line for line, _ in _codes(text)] == [2]


def test_bad_monitor_name_message_is_readable() -> None:
    text = _DIGITS_MODEL + 'train { early_stopping(monitor="val loss") }\n'
    diagnostics = list(compile_text(text, "bug.cnn").diagnostics)
    assert [d.code for d in diagnostics] == ["E113"]
    assert "pattern" not in diagnostics[0].message
    assert "^[" not in diagnostics[0].message


def test_syntax_errors_in_several_sections_are_all_reported() -> None:
    # One broken item in each of three sections: each section gives its own error at its own
    # place, and nothing after an error in the same section adds a cascade.
    text = (
        "model m {\n"
        "  input 8x8x1\n"
        "  conv2d(8 kernel=3)\n"
        "  flatten() dense(10, activation=softmax)\n"
        "}\n"
        "data { source digits labels sparse\n"
        "  validation 0.1 ) }\n"
        "train { epochs 3 @ }\n"
        "evaluate { report(classification) }\n"
    )
    compilation = compile_text(text, "multi.cnn")
    found = [(d.span.line, d.span.column, d.code, d.hint) for d in compilation.diagnostics]
    assert found == [
        (3, 12, "E002", "expected ')' or ','"),
        (7, 18, "E002", "expected '{', '}' or a name"),
        (8, 18, "E001", None),
    ]
    assert compilation.spec is None


def test_a_layer_cannot_be_named_training() -> None:
    text = "model m { input 8x8x1  conv2d(4, name=training)  flatten() }\n"
    diagnostics = list(compile_text(text, "t.cnn").diagnostics)
    assert next((d.code, d.message) for d in diagnostics) == (
        "E113",
        "a layer name cannot be 'training'",
    )


def test_readme_layer_table_is_the_registrys() -> None:
    """The README's layer reference is `cnnspec layers --markdown`: a kind added or documented
    anew in its entry cannot leave the README behind."""
    from cnnspec.reference import layer_rows

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    rows = ["| layer | arguments (defaults) | what it does |", "|---|---|---|"]
    rows += [f"| `{name}` | {arguments} | {doc} |" for name, arguments, doc in layer_rows()]
    assert "\n".join(rows) in readme, "paste `cnnspec layers --markdown` into the README"
