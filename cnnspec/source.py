"""Source text and positions: every later stage points back into the spec through a `Span`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open region of a source file. Lines and columns are 1-based; `end_column` is the
    column just past the last character, so a one-character span has `end_column == column + 1`."""

    line: int
    column: int
    end_line: int
    end_column: int
    start: int
    end: int

    def to(self, other: Span) -> Span:
        """The span from the start of `self` to the end of `other`."""
        return Span(self.line, self.column, other.end_line, other.end_column, self.start, other.end)

    def contains(self, offset: int) -> bool:
        return self.start <= offset < self.end


@dataclass(frozen=True, slots=True)
class Source:
    """A spec's text and the name it is reported under."""

    path: str
    text: str

    @classmethod
    def read(cls, path: str | Path) -> Source:
        # utf-8-sig drops the byte-order mark some Windows editors write.
        return cls(str(path), Path(path).read_text(encoding="utf-8-sig"))

    @property
    def sha256(self) -> str:
        import hashlib  # only exports need it: keep it off `cnnspec check`'s start-up

        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 1 <= line <= len(lines) else ""

    def span_at(self, offset: int, length: int = 1) -> Span:
        """A span for `length` characters starting at `offset`, clamped to the text."""
        offset = max(0, min(offset, len(self.text)))
        end = max(offset, min(offset + length, len(self.text)))
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        end_line = self.text.count("\n", 0, end) + 1
        end_column = end - (self.text.rfind("\n", 0, end) + 1) + 1
        if end == offset:
            end_column = column + 1
        return Span(line, column, end_line, end_column, offset, max(end, offset + 1))

    def end_span(self) -> Span:
        """A one-character span just past the last non-blank character: where 'unexpected end
        of file' points."""
        stripped = len(self.text.rstrip())
        return self.span_at(stripped, 1)
