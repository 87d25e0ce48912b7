"""Located diagnostics, their codes, and the two ways they are printed (compiler text and JSON)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from cnnspec.source import Source, Span


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


# Every code the tool can emit, with a one-line title. The README's table of codes is generated
# from this mapping and a test checks that every code used in the source appears here.
CODES: dict[str, str] = {
    # syntax
    "E001": "unexpected character",
    "E002": "unexpected token",
    "E003": "unexpected end of file",
    # names and structure
    "E101": "unknown section or setting",
    "E102": "setting given twice",
    "E103": "required setting missing",
    "E104": "wrong kind of value",
    "E110": "unknown layer",
    "E111": "unknown argument",
    "E112": "missing argument",
    "E113": "invalid argument value",
    "E114": "too many positional arguments",
    "E115": "argument given twice",
    "E116": "duplicate name",
    "E117": "not usable here",
    # shapes
    "E201": "spatial size shrinks below 1",
    "E202": "layer needs a spatial (H, W, C) input",
    "E203": "branches cannot be joined",
    "E204": "model output is not a vector",
    "E205": "layer settings conflict",
    # data, schedule and evaluation
    "E301": "monitored metric does not exist",
    "E302": "loss does not fit the output or the labels",
    "E303": "class count does not match the output",
    "E304": "threshold needs a single sigmoid output",
    "E305": "input shape does not match the data",
    "E306": "validation metric without validation data",
    "E307": "validation split the data source does not have",
    "E308": "preprocess imagenet without a backbone",
    "E309": "class folders differ between splits",
    # W310 until issue 23: the same number, now an error.
    "E310": "freeze pattern matches no layer",
    # backends
    "E401": "a backend cannot express the layer",
    # sweeps
    "E501": "sweep path names no value of the spec",
    "E502": "value cannot be swept where it is written",
    "E503": "invalid search distribution",
    "E504": "sweep searches nothing",
    # warnings
    "W201": "dense layer applied to a spatial tensor",
    "W202": "softmax over a single unit",
    "W203": "activation applied twice",
    "W301": "monitor mode contradicts the metric",
    "W302": "callback patience can never trigger",
    "W303": "augmentation changes the meaning of the data",
    "W304": "data folder not found",
    "W305": "rescale leaves the pixels in an unusual range",
    "W306": "rotation of less than a degree",
    "W307": "phase drops the train-level callbacks",
    "W308": "input preprocessing differs from what the pretrained weights expect",
    "W311": "phase unfreezes nothing",
    "W312": "phase trains nothing",
    "W320": "batch larger than the training split",
    "W321": "a batch's activations exceed the memory",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    span: Span
    hint: str | None = None
    # Where the text at `span` was used from: the calls of the defined blocks it lies in,
    # innermost first (`in mbconv(...) at line 40, column 5`). Not part of its identity: an
    # error inside a definition is reported once, with the first call that showed it.
    notes: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self, path: str) -> dict[str, object]:
        return {
            "file": path,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
            "severity": str(self.severity),
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "notes": list(self.notes),
        }


class Diagnostics:
    """The diagnostics of one spec, in the order they were found."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._items: list[Diagnostic] = []
        self._seen: set[Diagnostic] = set()
        # The calls of defined blocks being expanded, outermost first: (what, span).
        self._sites: list[tuple[str, Span]] = []

    @contextmanager
    def expanding(self, what: str, span: Span) -> Iterator[None]:
        """Diagnostics found inside, away from the call itself, name the call in a note."""
        self._sites.append((what, span))
        try:
            yield
        finally:
            self._sites.pop()

    def error(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        self._add(Diagnostic(Severity.ERROR, code, message, span, hint))

    def warning(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        self._add(Diagnostic(Severity.WARNING, code, message, span, hint))

    def _add(self, diagnostic: Diagnostic) -> None:
        assert diagnostic.code in CODES, diagnostic.code
        # A layer inside `repeat`, or a bad value in `defaults`, is checked once per use: report
        # each distinct problem once.
        if diagnostic not in self._seen:
            inside = diagnostic.span
            notes = tuple(
                f"in {what} at line {span.line}, column {span.column}"
                for what, span in reversed(self._sites)
                if not (span.start <= inside.start and inside.end <= span.end)
            )
            if notes and not diagnostic.notes:
                diagnostic = Diagnostic(
                    diagnostic.severity,
                    diagnostic.code,
                    diagnostic.message,
                    diagnostic.span,
                    diagnostic.hint,
                    notes,
                )
            self._seen.add(diagnostic)
            self._items.append(diagnostic)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(sorted(self._items, key=lambda d: (d.span.start, d.span.end)))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self if d.severity is Severity.WARNING]

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self._items)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' hint for a misspelt name, or None when nothing is close."""
    pool = sorted(set(candidates))
    # An abbreviation that starts exactly one candidate (`acc` for accuracy) beats spelling
    # similarity (`acc` is closer to auc).
    prefixed = [c for c in pool if c.startswith(word) and c != word] if len(word) >= 2 else []
    if len(prefixed) == 1:
        return f"did you mean '{prefixed[0]}'?"
    import difflib  # here, not at the top: `cnnspec check` on a good spec never needs it

    matches = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in pool}
        matches = [lowered[word.lower()]] if word.lower() in lowered else []
    return f"did you mean '{matches[0]}'?" if matches else None


def render_text(diagnostic: Diagnostic, source: Source) -> str:
    """`path:line:col: error[CODE]: message`, the source line with a caret underline, a hint."""
    span = diagnostic.span
    head = (
        f"{source.path}:{span.line}:{span.column}: "
        f"{diagnostic.severity}[{diagnostic.code}]: {diagnostic.message}"
    )
    line_text = source.line_text(span.line).expandtabs(1)
    gutter = str(span.line)
    pad = " " * len(gutter)
    width = (span.end_column - span.column) if span.end_line == span.line else 0
    width = max(1, min(width, max(1, len(line_text) - span.column + 1)))
    underline = " " * (span.column - 1) + "^" + "~" * (width - 1)
    lines = [head, f" {gutter} | {line_text}", f" {pad} | {underline}"]
    if diagnostic.hint:
        lines.append(f" {pad} = hint: {diagnostic.hint}")
    lines.extend(f" {pad} = note: {note}" for note in diagnostic.notes)
    return "\n".join(lines)


def render_json(groups: Iterable[tuple[Source, Iterable[Diagnostic]]]) -> str:
    import json

    return json.dumps(
        [d.to_json(source.path) for source, diagnostics in groups for d in diagnostics], indent=2
    )
