"""Located diagnostics, their codes, and the two ways they are printed (compiler text and JSON)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from cnnspec.codes import CODES, ErrorCode
from cnnspec.source import Source, Span

__all__ = ["CODES", "Diagnostic", "Diagnostics", "ErrorCode", "Severity"]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: ErrorCode
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

    def error(self, code: ErrorCode, message: str, span: Span, hint: str | None = None) -> None:
        assert isinstance(code, ErrorCode) and code.is_error, code
        self._add(Diagnostic(Severity.ERROR, code, message, span, hint))

    def warning(self, code: ErrorCode, message: str, span: Span, hint: str | None = None) -> None:
        assert isinstance(code, ErrorCode) and not code.is_error, code
        self._add(Diagnostic(Severity.WARNING, code, message, span, hint))

    def _add(self, diagnostic: Diagnostic) -> None:
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
