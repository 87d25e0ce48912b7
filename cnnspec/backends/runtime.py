"""The fixed code of the generated scripts, copied from real modules (`cnnspec.runtime`).

Every function and class a script contains that is not spec-specific is ordinary Python in
`cnnspec/runtime/<module>.py`: ruff-clean, type-checked and unit-tested there. A backend asks
for definitions by name and gets their source text, exactly as written, to paste into the
script, so the scripts stay standalone (they import nothing from cnnspec). The modules are
read as text and parsed, never imported: reading `torch.py` must not import torch.

What a runtime module may contain, so that its text can be copied:
- top-level `def`, `class` and constant assignments (`NAME = ...`), each copied with its
  decorators and the comment lines directly above it;
- slots: a line that is only a comment `# <NAME>`, which the emitter replaces by lines of its
  own (indented to the comment) or drops. This is how a spec decides a statement or two of a
  fixed function (a validation split, a backbone's loading) without a template;
- its own imports, and the script's constants imported from `cnnspec.runtime.script`, which
  are there for the linter and the type checker only: the script writes its own.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

RUNTIME = Path(__file__).resolve().parent.parent / "runtime"

_SLOT = re.compile(r"^(?P<indent> *)# <(?P<name>[A-Z][A-Z0-9_]*)>\n", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Definition:
    """One top-level definition of a runtime module, as source text ending in a newline."""

    name: str
    text: str
    slots: tuple[str, ...] = field(default=())


@cache
def definitions(module: str) -> dict[str, Definition]:
    """The top-level definitions of `cnnspec/runtime/<module>.py`, by name, in file order."""
    path = RUNTIME / f"{module}.py"
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    found: dict[str, Definition] = {}
    for node in ast.parse(text, filename=str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names = [node.name]
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            first = node.lineno
        else:
            continue
        while first > 1 and lines[first - 2].lstrip().startswith("#"):
            first -= 1
        assert node.end_lineno is not None
        last = node.end_lineno
        # A slot that ends a body is a comment after the last statement, which the syntax
        # tree leaves out: the definition runs on over indented comment lines.
        while last < len(lines) and lines[last].startswith(" ") and lines[last].strip()[:1] == "#":
            last += 1
        source = "".join(lines[first - 1 : last])
        slots = tuple(match["name"] for match in _SLOT.finditer(source))
        for name in names:
            assert name not in found, f"{path.name} defines {name} twice"
            found[name] = Definition(name, source, slots)
    return found


def code(module: str, *names: str, rename: dict[str, str] | None = None, **slots: str) -> str:
    """The named definitions of runtime module `module`, in the order given, separated by two
    blank lines as ruff formats them. `rename` gives a definition the name the script calls it
    by (the runtime module has one `load_data` per data source, each under its own name);
    `slots` fill the definitions' `# <NAME>` lines (an empty value drops the line). Every slot
    of the named definitions must be given, and every value must fill one."""
    table = definitions(module)
    parts = []
    unfilled = dict(slots)
    for name in names:
        if name not in table:
            raise KeyError(f"cnnspec/runtime/{module}.py defines no {name}")
        definition = table[name]
        text = definition.text
        if rename and name in rename:
            text = _renamed(text, name, rename[name])
        for slot in definition.slots:
            if slot not in slots:
                raise KeyError(f"{module}.{name}: slot <{slot}> is not filled")
            text = _filled(text, slot, slots[slot])
            unfilled.pop(slot, None)
        parts.append(text)
    if unfilled:
        raise KeyError(f"no slot named {', '.join(sorted(unfilled))} in {', '.join(names)}")
    return "\n\n".join(parts)


def runtime_definitions(
    ref: str, module: str = "", table: Mapping[str, tuple[str, ...]] | None = None
) -> str:
    """What an entry's helper reference names: `module:name`, that definition of
    cnnspec/runtime/<module>.py; a bare name, the definitions of `module` that `table` lists
    for it (or the one definition of that name)."""
    if ":" in ref:
        module, ref = ref.split(":", 1)
        return code(module, ref)
    if not module:
        raise KeyError(f"{ref!r} names no runtime module (write module:name)")
    return code(module, *(table or {}).get(ref, (ref,)))


def _renamed(text: str, old: str, new: str) -> str:
    pattern = re.compile(rf"^(def|class) {re.escape(old)}\b", re.MULTILINE)
    renamed, count = pattern.subn(lambda match: f"{match[1]} {new}", text, count=1)
    assert count == 1, old
    return renamed


def _filled(text: str, slot: str, value: str) -> str:
    def line(match: re.Match[str]) -> str:
        if match["name"] != slot:
            return match[0]
        rows = value.strip("\n").split("\n") if value.strip() else []
        return "".join(f"{match['indent']}{row}\n" if row.strip() else "\n" for row in rows)

    return _SLOT.sub(line, text)
