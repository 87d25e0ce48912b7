"""A small TextMate tokenizer, for testing the VS Code grammar with Python's `re`.

It implements the subset of the TextMate grammar format that editors/vscode uses, the way
vscode-textmate runs it: `match` rules with `name` and `captures`; `begin`/`end` rules with
`name`, `contentName`, `beginCaptures`, `endCaptures` and `patterns`; rules that only group
`patterns`; and `include` of `#repository` rules and `$self`. Each line is matched with a `\\n`
appended, one line at a time, with a stack of the `begin`/`end` rules still open. At each position
the earliest match wins; a tie goes to the open rule's `end`, then to the first pattern listed.
Anything else in a grammar (`while`, `applyEndPatternLast`, back-references from `end` to
`begin`, captures with their own patterns, injections, other grammars) raises GrammarError, so
a grammar cannot quietly rely on something this tokenizer does not check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_RULE_KEYS = {
    "name",
    "contentName",
    "match",
    "captures",
    "begin",
    "end",
    "beginCaptures",
    "endCaptures",
    "patterns",
    "include",
    "comment",
}
_ROOT_KEYS = {"$schema", "name", "scopeName", "fileTypes", "patterns", "repository", "comment"}


class GrammarError(Exception):
    """The grammar uses something outside the supported subset, or cannot be run."""


@dataclass(frozen=True, slots=True)
class Token:
    line: int  # 0-based
    start: int  # 0-based column, inclusive
    end: int  # exclusive
    text: str
    scopes: tuple[str, ...]  # outermost first: scopes[0] is the grammar's scopeName


@dataclass(frozen=True, slots=True)
class Tokenized:
    lines: list[list[Token]]
    open_rules: tuple[str, ...]  # the begin/end rules still open after the last line

    def tokens(self) -> list[Token]:
        return [token for line in self.lines for token in line]

    def at(self, line: int, column: int) -> Token:
        """The token covering a 0-based position."""
        for token in self.lines[line]:
            if token.start <= column < token.end:
                return token
        raise KeyError(f"no token at {line}:{column}")


def _scopes(name: object) -> tuple[str, ...]:
    if name is None:
        return ()
    if not isinstance(name, str):
        raise GrammarError(f"a scope name must be a string, not {name!r}")
    return tuple(name.split())


def _captures(raw: object) -> dict[int, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise GrammarError(f"captures must be an object, not {raw!r}")
    captures: dict[int, tuple[str, ...]] = {}
    for key, value in raw.items():
        if not isinstance(value, Mapping) or set(value) - {"name"}:
            raise GrammarError(f"capture {key}: only {{'name': ...}} is supported, not {value!r}")
        captures[int(key)] = _scopes(value.get("name"))
    return captures


def _compile(pattern: object, where: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise GrammarError(f"{where}: a regex must be a string, not {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise GrammarError(f"{where}: {pattern!r} is not a Python regex: {exc}") from None


class _Rule:
    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise GrammarError(f"{where}: unsupported keys {sorted(unknown)}")
        self.where = where
        self.raw = raw
        self.name = _scopes(raw.get("name"))
        self.content_name = _scopes(raw.get("contentName"))
        self.match = _compile(raw["match"], where) if "match" in raw else None
        self.begin = _compile(raw["begin"], where) if "begin" in raw else None
        self.end = _compile(raw["end"], where) if "end" in raw else None
        if (self.begin is None) != (self.end is None):
            raise GrammarError(f"{where}: 'begin' and 'end' go together")
        if self.match is not None and self.begin is not None:
            raise GrammarError(f"{where}: a rule has 'match' or 'begin', not both")
        if self.end is not None and re.search(r"\\[1-9]", self.end.pattern):
            raise GrammarError(f"{where}: back-references from 'end' are not supported")
        self.captures = _captures(raw.get("captures"))
        self.begin_captures = _captures(raw.get("beginCaptures", raw.get("captures")))
        self.end_captures = _captures(raw.get("endCaptures", raw.get("captures")))
        self.patterns: list[_Rule] | None = None  # leaf rules, resolved on first use

    @property
    def is_leaf(self) -> bool:
        return self.match is not None or self.begin is not None


@dataclass(slots=True)
class _Frame:
    rule: _Rule
    name_scopes: tuple[str, ...]
    content_scopes: tuple[str, ...]


class Grammar:
    def __init__(self, data: Mapping[str, Any]) -> None:
        unknown = set(data) - _ROOT_KEYS
        if unknown:
            raise GrammarError(f"unsupported top-level keys {sorted(unknown)}")
        self.scope_name: str = data["scopeName"]
        self._repository: Mapping[str, Any] = data.get("repository", {})
        self._rules: dict[int, _Rule] = {}
        self._root = self._rule({"patterns": data.get("patterns", [])}, "$self")
        for name, raw in self._repository.items():  # compile every rule, used or not
            self._leaves(self._rule(raw, f"#{name}"))

    def _rule(self, raw: Mapping[str, Any], where: str) -> _Rule:
        rule = self._rules.get(id(raw))
        if rule is None:
            rule = self._rules[id(raw)] = _Rule(raw, where)
        return rule

    def _resolve(self, include: str, where: str) -> _Rule:
        if include in ("$self", "$base"):
            return self._root
        if include.startswith("#") and include[1:] in self._repository:
            return self._rule(self._repository[include[1:]], include)
        raise GrammarError(f"{where}: cannot include {include!r}")

    def _leaves(self, rule: _Rule) -> list[_Rule]:
        """The match and begin rules a rule's patterns stand for, includes flattened."""
        if rule.patterns is None:
            rule.patterns = []  # guards against a cycle of grouping rules
            found: list[_Rule] = []
            self._flatten(rule.raw.get("patterns", []), rule.where, found, {id(rule)})
            rule.patterns = found
        return rule.patterns

    def _flatten(
        self, patterns: Sequence[Mapping[str, Any]], where: str, out: list[_Rule], seen: set[int]
    ) -> None:
        for index, raw in enumerate(patterns):
            here = f"{where}/patterns[{index}]"
            if "include" in raw:
                if set(raw) - {"include", "comment"}:
                    raise GrammarError(f"{here}: an include rule has nothing else")
                rule = self._resolve(raw["include"], here)
            else:
                rule = self._rule(raw, here)
            if rule.is_leaf:
                out.append(rule)
            elif id(rule) not in seen:
                seen.add(id(rule))
                self._flatten(rule.raw.get("patterns", []), rule.where, out, seen)

    def tokenize(self, text: str) -> Tokenized:
        stack = [_Frame(self._root, (self.scope_name,), (self.scope_name,))]
        lines = [
            self._tokenize_line(number, line, stack) for number, line in enumerate(text.split("\n"))
        ]
        return Tokenized(lines, tuple(frame.rule.where for frame in stack[1:]))

    def _tokenize_line(self, number: int, line: str, stack: list[_Frame]) -> list[Token]:
        text = line + "\n"
        tokens: list[Token] = []

        def emit(start: int, end: int, scopes: tuple[str, ...]) -> None:
            end = min(end, len(line))
            if start < end:
                tokens.append(Token(number, start, end, line[start:end], scopes))

        def emit_match(
            match: re.Match[str], base: tuple[str, ...], captures: dict[int, tuple[str, ...]]
        ) -> None:
            per_char = [list(base) for _ in range(match.start(), match.end())]
            for group, names in sorted(captures.items()):
                if group > (match.re.groups or 0) or match.start(group) < 0:
                    continue
                for i in range(match.start(group), match.end(group)):
                    per_char[i - match.start()].extend(names)
            run_start = match.start()
            for i in range(match.start() + 1, match.end() + 1):
                at_end = i == match.end()
                if at_end or per_char[i - match.start()] != per_char[run_start - match.start()]:
                    emit(run_start, i, tuple(per_char[run_start - match.start()]))
                    run_start = i

        position = 0
        stalled: set[tuple[int, int]] = set()  # (position, depth) after a zero-width step
        while position < len(text):
            frame = stack[-1]
            candidates: list[tuple[re.Pattern[str], _Rule | None]] = []
            if frame.rule.end is not None:
                candidates.append((frame.rule.end, None))
            for leaf in self._leaves(frame.rule):
                regex = leaf.match if leaf.match is not None else leaf.begin
                assert regex is not None
                candidates.append((regex, leaf))
            best: tuple[re.Match[str], _Rule | None] | None = None
            for regex, rule in candidates:
                found = regex.search(text, position)
                if found is not None and (best is None or found.start() < best[0].start()):
                    best = (found, rule)
            if best is None:
                emit(position, len(text), frame.content_scopes)
                break
            match, rule = best
            emit(position, match.start(), frame.content_scopes)
            if match.end() == match.start():
                state = (match.start(), len(stack))
                if state in stalled or (rule is not None and rule.match is not None):
                    where = frame.rule.where if rule is None else rule.where
                    raise GrammarError(
                        f"{where} matches the empty string at line {number + 1}, column "
                        f"{match.start() + 1} without moving on: {line!r}"
                    )
                stalled.add(state)
            if rule is None:  # the open rule ends
                emit_match(match, frame.name_scopes, frame.rule.end_captures)
                stack.pop()
            elif rule.match is not None:
                emit_match(match, frame.content_scopes + rule.name, rule.captures)
            else:
                name_scopes = frame.content_scopes + rule.name
                emit_match(match, name_scopes, rule.begin_captures)
                stack.append(_Frame(rule, name_scopes, name_scopes + rule.content_name))
            position = match.end()
        return tokens
