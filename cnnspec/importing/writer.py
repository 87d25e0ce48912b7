"""The spec text of an imported network, written the way a person writes one:

- the arguments most layers of a kind share are a `defaults` line;
- consecutive layers whose names share a prefix (`conv2_block1_*`) are one block, and blocks of
  the same structure are calls of one `define` whose parameters are the arguments that differ
  between them (one a multiple of another is written so: `4 * filters`);
- consecutive calls with the same arguments, numbered names, are one `repeat`;
- a value used past its join is read again by its name, `from NAME` (cnnspec.nesting's
  `From`): by the name relative to a define's instance inside one, and by a parameter of the
  define where its instances read values before them (NASNet's cells, the two cells before).

Whatever it writes is compiled and compared with the source afterwards (cnnspec.importing)."""

from __future__ import annotations

import difflib
import itertools
import keyword
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cnnspec.importing.network import Layer, Network
from cnnspec.importing.structure import Item
from cnnspec.nesting import From, Join, Residual, froms_of, layers_of
from cnnspec.spelling import Spelled, call_text, field_default, same_value, simplest, value_text
from cnnspec.syntax import IDENTIFIER


def write(network: Network, items: list[Item], structured: bool = True) -> str:
    h, w, c = network.input_shape
    defaults = _defaults(network.layers) if structured else {}
    writer = _Writer(defaults, {layer.name for layer in network.layers})
    body = writer.model(items) if structured else writer.items(items, 1)
    lines = [*writer.definitions(), f"model {network.name} {{", f"  input {h}x{w}x{c}"]
    for kind, values in defaults.items():
        lines.append(f"  defaults {call_text(kind, values)}")
    lines += body
    lines.append("}")
    last = network.producer().get(network.output)
    if last is not None and "sigmoid" in (last.kind, last.args.get("activation")):
        lines.append("")  # one sigmoid unit: a binary classifier, trained on labels 0 and 1
        lines.append("data { labels binary }")
    lines += _freezes(network)
    return "\n".join(lines) + "\n"


def _freezes(network: Network) -> list[str]:
    """The layers with weights that the source does not train (Keras's trainable=False):
    `freeze` each, or `freeze all` and `unfreeze` the rest, whichever is shorter."""
    held = network.weighted()
    weighted = [layer.name for layer in network.layers if layer.name in held]
    frozen = [layer.name for layer in network.layers if layer.name in held and layer.frozen]
    if not frozen:
        return []
    trained = [name for name in weighted if name not in set(frozen)]
    if len(trained) < len(frozen):
        statements = ["freeze all", *(f"unfreeze {value_text(name)}" for name in trained)]
    else:
        statements = [f"freeze {value_text(name)}" for name in frozen]
    return ["", "train {", *(f"  {s}" for s in statements), "}"]


# ---- defaults ----------------------------------------------------------------------------------

_NOT_DEFAULTED = {"filters", "units", "rate", "target", "mean", "variance"}


def _defaults(layers: list[Layer]) -> dict[str, dict[str, Any]]:
    from cnnspec.registry import REGISTRY

    result: dict[str, dict[str, Any]] = {}
    by_kind: dict[str, list[Layer]] = {}
    for layer in layers:
        by_kind.setdefault(layer.kind, []).append(layer)
    for kind, members in sorted(by_kind.items()):
        if len(members) < 3 or kind not in REGISTRY:
            continue
        chosen: dict[str, Any] = {}
        for key, info in REGISTRY[kind].model_fields.items():
            if info.is_required() or key in _NOT_DEFAULTED:
                continue
            values = [repr(simplest(m.args.get(key, info.default))) for m in members]
            common, count = Counter(values).most_common(1)[0]
            if count * 2 > len(members):
                value = next(
                    m.args.get(key, info.default)
                    for m in members
                    if repr(simplest(m.args.get(key, info.default))) == common
                )
                if not same_value(value, field_default(kind, key)):
                    chosen[key] = value
        if chosen:
            result[kind] = chosen
    return result


# ---- templates of blocks -------------------------------------------------------------------------


@dataclass
class _Call:
    kind: str
    name: str | None  # relative to the block
    slots: dict[str, int]  # argument -> slot number


@dataclass
class _Read:
    """A `from` in a block: of a value of the block, by its name relative to the block; or of
    a value before the block, by the slot holding its name (a parameter where they differ)."""

    relative: str | None
    slot: int | None = None


# The argument a define's `from` parameter stands for (named after it: `source`, `source2`).
_FROM_KEY = "source"


@dataclass
class _Choice:
    """Where the members of a merged define differ in what they hold (_merged): the lines of
    the option whose value the slot holds, a layer kind (`relu` or `hard_swish` at one place)
    or true or false (a squeeze-and-excitation gate some have and others not)."""

    slot: int
    options: list[tuple[Any, list[_Line]]]
    key: str  # what it aligns with: the activation's place, or nothing (a unique key)


_Line = str | tuple[int, _Call] | tuple[int, _Read] | tuple[int, _Choice]

# A value a merged define's member does not have: one only an option it leaves out uses.
_ABSENT: Any = type("_Absent", (), {"__repr__": lambda self: "<absent>"})()


@dataclass
class _Template:
    # structure lines, or (indent, call), or (indent, from), or (indent, choice)
    lines: list[_Line]
    values: list[Any] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def skeleton(self) -> str:
        return "\n".join(_skeleton_line(line) for line in self.lines)

    def size(self) -> int:
        return _size(self.lines)


def _skeleton_line(line: _Line) -> str:
    if isinstance(line, str):
        return line
    depth, what = line
    if isinstance(what, _Read):
        return f"{depth} from {what.relative}" if what.relative is not None else f"{depth} from"
    if isinstance(what, _Choice):
        options = " | ".join(
            f"{value!r}: " + "; ".join(_skeleton_line(x) for x in lines)
            for value, lines in what.options
        )
        return f"{depth} choice {what.slot} [{options}]"
    return f"{depth} {what.kind} {what.name} " + ",".join(sorted(what.slots))


def _size(lines: list[_Line]) -> int:
    """The lines a template's text takes (a choice of one-line options is one line)."""
    total = 0
    for line in lines:
        if isinstance(line, tuple) and isinstance(line[1], _Choice):
            sizes = [_size(option) for _, option in line[1].options]
            total += 1 if all(n == 1 for n in sizes) else sum(sizes) + len(sizes) + 1
        else:
            total += 1
    return total


@dataclass
class _Group:
    key: str
    items: list[Item]
    template: _Template | None = None
    # Found by its structure inside a larger group (_Writer._split): its define is named
    # after what it is, since its module path names only where it is (`features_2_0`).
    structural: bool = False


@dataclass
class _Block:
    """A group split into its repeated units (_Writer._split): calls and the items left,
    written in `block KEY { ... }` where the group was a block."""

    key: str
    entries: list[Any]
    block: bool


@dataclass
class _Unit:
    """A candidate unit: items[start:end] of `group`, as a group of its own."""

    group: _Group
    start: int
    end: int
    unit: _Group

    def lines(self) -> int:
        assert self.unit.template is not None
        return self.unit.template.size()


def _chosen(candidates: list[_Unit]) -> list[_Unit]:
    """Of the candidate units, those written as calls: greedily, the skeleton whose calls
    save the most lines over writing its units out, with the units no chosen unit overlaps,
    until no skeleton shared by two units or more saves a line."""
    classes: dict[str, list[_Unit]] = {}
    for unit in candidates:
        assert unit.unit.template is not None
        classes.setdefault(unit.unit.template.skeleton(), []).append(unit)
    merged = _merged_classes(classes)
    chosen: list[_Unit] = []

    def free(unit: _Unit, taken: list[_Unit]) -> bool:
        return not any(
            other.group is unit.group and other.start < unit.end and unit.start < other.end
            for other in taken
        )

    while True:
        best: tuple[int, int, list[_Unit]] | None = None
        for members in merged:
            available: list[_Unit] = []
            for unit in sorted(members, key=lambda u: u.start):
                if free(unit, chosen) and free(unit, available):
                    available.append(unit)
            count = len(available)
            if count < 2:
                continue
            # Written out: count units of their lines each; as calls: the define (its
            # lines, its braces, a blank line) and one line a call.
            saved = (count - 1) * available[0].lines() - count - 3
            # Of two that save as much, the larger unit: the module that holds the other
            # (MobileNetV3's block, rather than the squeeze-and-excitation gate in it).
            score = (saved, available[0].lines(), available)
            if saved > 0 and (best is None or score[:2] > best[:2]):
                best = score
        if best is None:
            return chosen
        chosen += best[2]


# ---- merging the templates of units that differ a little ---------------------------------------

_Source = tuple[str, Any] | None  # ("slot", i) of a member's values, ("value", v), or absent
_CHOICES = itertools.count()


class _Merge:
    """Two templates as one (_Choice): lines aligned by what they are (kind and name; an
    activation by its place alone); a layer's arguments the union of both sides' (a missing
    one its default); a run of lines that only one side has, or that differs, an option
    picked by a true/false parameter; parameterless layers of different kinds at one place
    a kind picked by a word parameter. `sources` says where each slot's value comes from."""

    def __init__(self, keys: tuple[list[str], list[str]]) -> None:
        self.sources: list[tuple[_Source, _Source, str]] = []
        self.keys = keys  # each side's slots' keys
        self.shared = 0  # lines both sides have
        self.fitting = False  # inside an option: no options inside options

    def slot(self, a: _Source, b: _Source, key: str) -> int:
        self.sources.append((a, b, key))
        return len(self.sources) - 1

    def lines(self, a: list[_Line], b: list[_Line]) -> list[_Line] | None:
        out: list[_Line] = []
        matcher = difflib.SequenceMatcher(None, _align_keys(a), _align_keys(b), autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                self.shared += i2 - i1
                for x, y in zip(a[i1:i2], b[j1:j2], strict=True):
                    line = self.pair(x, y)
                    if line is None:
                        return None
                    out.append(line)
                continue
            ha, hb = a[i1:i2], b[j1:j2]
            if not (_balanced(ha) and _balanced(hb)):
                return None
            fitted = self.fit(ha, hb)
            if fitted is not None:
                out.append(fitted)
                continue
            if self.fitting or any(
                isinstance(x, tuple) and isinstance(x[1], _Choice) for x in ha + hb
            ):
                return None  # options inside options: not what a person writes
            # The longer run is what some have (the gate), true where they have it.
            side = 0 if _size(ha) >= _size(hb) else 1
            longer, shorter = (ha, hb) if side == 0 else (hb, ha)
            kinds = [x[1].kind for x in longer if isinstance(x, tuple) and isinstance(x[1], _Call)]
            pooled = any(kind in ("global_avg_pool", "global_max_pool") for kind in kinds)
            key = "se" if pooled else "has_" + (kinds[0] if kinds else "option")
            slot = self.slot(("value", side == 0), ("value", side == 1), key)
            options: list[tuple[Any, list[_Line]]] = [(True, self.only(longer, side))]
            if shorter:
                options.append((False, self.only(shorter, 1 - side)))
            out.append((0, _Choice(slot, options, f"choice{next(_CHOICES)}")))
        return out

    def fit(self, ha: list[_Line], hb: list[_Line]) -> _Line | None:
        """A's true/false choice with B's run as one of its options."""
        if len(ha) != 1 or not isinstance(ha[0], tuple) or not isinstance(ha[0][1], _Choice):
            return None
        choice = ha[0][1]
        if not isinstance(choice.options[0][0], bool):
            return None
        for value, option in choice.options:
            mark, shared = len(self.sources), self.shared
            self.fitting = True
            merged = self.lines(option, hb)
            self.fitting = False
            if merged is not None:
                slot = self.slot(("slot", choice.slot), ("value", value), self.keys[0][choice.slot])
                options = [
                    (v, merged if v == value else self.only(lines, 0))
                    for v, lines in choice.options
                ]
                return (0, _Choice(slot, options, choice.key))
            del self.sources[mark:]
            self.shared = shared
        if not hb and len(choice.options) == 1:
            slot = self.slot(("slot", choice.slot), ("value", False), self.keys[0][choice.slot])
            return (0, _Choice(slot, [(True, self.only(choice.options[0][1], 0))], choice.key))
        return None

    def pair(self, x: _Line, y: _Line) -> _Line | None:
        if isinstance(x, str) or isinstance(y, str):
            return x if x == y else None
        (depth, a), (_, b) = x, y
        if isinstance(a, _Read) or isinstance(b, _Read):
            if not (isinstance(a, _Read) and isinstance(b, _Read)):
                return None
            if a.slot is None or b.slot is None:
                return x if a.slot is None and b.slot is None else None
            return (depth, _Read(None, self.slot(("slot", a.slot), ("slot", b.slot), _FROM_KEY)))
        if isinstance(a, _Call) and isinstance(b, _Call) and a.kind == b.kind:
            from cnnspec.registry import REGISTRY

            fields = REGISTRY[a.kind].model_fields
            slots: dict[str, int] = {}
            for key, info in sorted(fields.items(), key=lambda f: not f[1].is_required()):
                if key not in a.slots and key not in b.slots:
                    continue
                default = ("value", info.default)
                sa = ("slot", a.slots[key]) if key in a.slots else default
                sb = ("slot", b.slots[key]) if key in b.slots else default
                slots[key] = self.slot(sa, sb, key)
            return (depth, _Call(a.kind, a.name, slots))
        # Parameterless layers of different kinds at one place: a kind to pick.
        options: list[tuple[Any, list[_Line]]] = []
        sources: list[_Source] = []
        for line in (x, y):
            what = line[1]
            if isinstance(what, _Call):
                if what.slots:
                    return None
                sources.append(("value", what.kind))
                options.append((what.kind, [line]))
            elif isinstance(what, _Choice) and not isinstance(what.options[0][0], bool):
                sources.append(("slot", what.slot))
                options += what.options
            else:
                return None
        kept: dict[Any, list[_Line]] = {}
        for value, lines in options:
            kept.setdefault(value, lines)
        slot = self.slot(sources[0], sources[1], "act")
        key = a.key if isinstance(a, _Choice) else f"{depth} ~ {getattr(a, 'name', '')}"
        return (depth, _Choice(slot, list(kept.items()), key))

    def only(self, lines: list[_Line], side: int) -> list[_Line]:
        """Lines of one side, their slots this template's (absent for the other side)."""

        def source(slot: int) -> tuple[_Source, _Source]:
            return (("slot", slot), None) if side == 0 else (None, ("slot", slot))

        out: list[_Line] = []
        for line in lines:
            if isinstance(line, str):
                out.append(line)
                continue
            depth, what = line
            if isinstance(what, _Read):
                if what.slot is None:
                    out.append(line)
                else:
                    out.append((depth, _Read(None, self.slot(*source(what.slot), _FROM_KEY))))
            elif isinstance(what, _Call):
                slots = {key: self.slot(*source(i), key) for key, i in what.slots.items()}
                out.append((depth, _Call(what.kind, what.name, slots)))
            else:
                slot = self.slot(*source(what.slot), self.keys[side][what.slot])
                options = [(v, self.only(option, side)) for v, option in what.options]
                out.append((depth, _Choice(slot, options, what.key)))
        return out


def _align_keys(lines: list[_Line]) -> list[str]:
    """What aligns two templates' lines: a structure line at its nesting, a layer by its kind
    and name (a parameterless one by its place alone: its kind may differ), a `from`."""
    keys: list[str] = []
    depth = 0
    for line in lines:
        if isinstance(line, str):
            depth -= line.count("}")
            keys.append(f"{depth}:{line}")
            depth += line.count("{")
            continue
        place, what = line
        if isinstance(what, _Choice):
            keys.append(f"{depth}:{what.key}")
        elif isinstance(what, _Call) and not what.slots:
            keys.append(f"{depth}:{place} ~ {what.name}")
        elif isinstance(what, _Call):
            keys.append(f"{depth}:{place} {what.kind} {what.name}")
        else:
            keys.append(f"{depth}:{_skeleton_line(line)}")
    return keys


def _balanced(lines: list[_Line]) -> bool:
    depth = 0
    for line in lines:
        if isinstance(line, str):
            depth += line.count("{") - line.count("}")
            if depth < 0:
                return False
    return depth == 0


def _merge_templates(a: _Template, b: _Template) -> tuple[list[_Line], list[str], Any] | None:
    """The merged lines, their slots' keys, and how to make a member's values of either side."""
    merge = _Merge((a.keys, b.keys))
    lines = merge.lines(a.lines, b.lines)
    # Two units that share less than half the smaller one are two things, not one with options.
    if lines is None or merge.shared * 2 < min(len(a.lines), len(b.lines)):
        return None
    sources = merge.sources

    def values(row: list[Any], side: int) -> list[Any]:
        out: list[Any] = []
        for source in sources:
            where = source[side]
            if where is None:
                out.append(_ABSENT)
            elif where[0] == "slot":
                out.append(row[int(where[1])])
            else:
                out.append(where[1])
        return out

    return lines, [key for _, _, key in sources], values


def _merged_classes(classes: dict[str, list[_Unit]]) -> list[list[_Unit]]:
    """Classes of alike units merged, two at a time, while a merge saves lines: each unit's
    template becomes the merged one, with its own values."""
    groups = [list(members) for members in classes.values()]

    def saved(count: int, size: int) -> int:
        return max(0, (count - 1) * size - count - 3)

    while True:
        best: tuple[int, int, int, Any] | None = None
        for i, a in enumerate(groups):
            for j in range(i + 1, len(groups)):
                b = groups[j]
                if any(
                    x.group is y.group and x.start < y.end and y.start < x.end for x in a for y in b
                ):
                    continue  # one holds the other (the gate in its block): never one define
                ta, tb = a[0].unit.template, b[0].unit.template
                assert ta is not None and tb is not None
                # B's run may fit an option of A's, or A's of B's: either way round.
                flip = False
                merged = _merge_templates(ta, tb)
                if merged is None:
                    flip, merged = True, _merge_templates(tb, ta)
                if merged is None:
                    continue
                size = _size(merged[0])
                gain = (
                    saved(len(a) + len(b), size)
                    - saved(len(a), ta.size())
                    - saved(len(b), tb.size())
                )
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, i, j, (merged, flip))
        if best is None:
            return groups
        _, i, j, ((lines, keys, values), flip) = best
        a, b = groups[i], groups[j]
        for side, members in ((0, a), (1, b)):
            for unit in members:
                template = unit.unit.template
                assert template is not None
                own = values(template.values, side if not flip else 1 - side)
                unit.unit.template = _Template(lines, own, keys)
        groups = [g for k, g in enumerate(groups) if k not in (i, j)] + [a + b]


def _what(items: list[Item]) -> str:
    """A define's name from what its body is: a squeeze-and-excitation gate, an inverted
    residual (a depthwise convolution between 1x1 ones; with a squeeze-and-excitation gate,
    EfficientNet's MBConv), its fused form (a full convolution, then a 1x1 one), a residual
    unit or a unit."""
    layers = layers_of(items)
    kinds = {layer.kind for layer in layers}
    first = items[0]
    if (
        len(items) == 1
        and isinstance(first, Join)
        and first.layer.kind == "multiply"
        and any(
            isinstance(branch[0], Layer)
            and branch[0].kind in ("global_avg_pool", "global_max_pool")
            for branch in first.branches
            if branch
        )
    ):
        return "squeeze_excite"  # a gate of the input by its pooled channels
    if "depthwise_conv2d" in kinds:
        return "mbconv" if "multiply" in kinds else "inverted_residual"
    convs = [layer for layer in layers if layer.kind == "conv2d"]
    if len(convs) >= 2 and _square(convs[-1]) == 1 and _square(convs[0]) not in (None, 1):
        return "fused_mbconv"
    return "residual_unit" if len(items) == 1 and isinstance(items[0], Residual) else "unit"


def _square(layer: Layer) -> int | None:
    kernel = layer.args.get("kernel")
    if isinstance(kernel, tuple) and len(set(kernel)) == 1:
        kernel = kernel[0]
    return kernel if isinstance(kernel, int) else None


def _path(item: Item) -> tuple[str, ...]:
    """The module path an item is under: its names' common tokens, less the last for a
    layer's own name (`features_2_conv_3` is under features_2_conv)."""
    names = [layer.name for layer in layers_of([item])]
    tokens = [name.split("_") for name in names]
    common: list[str] = []
    for column in zip(*tokens, strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    if len(common) == min(len(t) for t in tokens):
        common = common[:-1]
    return tuple(common)


def _relative_names(template: _Template) -> bool:
    """Whether every name a template writes is one a call can make relative: a name, not a
    module's number (`0_1`, the stem's `features_0_1` under features_0)."""
    for line in template.lines:
        if isinstance(line, tuple) and isinstance(line[1], _Call):
            name = line[1].name
            if name is None or IDENTIFIER.match(name) is None:
                return False
    return True


_NUMBER_SUFFIX = re.compile(r"^(.*?)_?(\d+)$")


def _key(item: Item) -> str:
    """The block an item belongs to: its names' common prefix (`conv2_block1`); none for a
    `from`, which names no layer of its own."""
    names = [layer.name for layer in layers_of([item])]
    if not names:
        return ""
    tokens = [name.split("_") for name in names]
    if len(names) == 1:
        parts = tokens[0]
        if len(parts) > 1 and parts[-1].isdigit():
            parts = parts[:-1]
        return "_".join(parts[:-1])
    common: list[str] = []
    for column in zip(*tokens, strict=False):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    if len(common) == min(len(t) for t in tokens):
        common = common[:-1]
    return "_".join(common)


class _Writer:
    def __init__(self, defaults: dict[str, dict[str, Any]], names: set[str]) -> None:
        self.defaults = defaults
        self.names = names
        # skeleton -> the define's name, parameters and text; and the slots its parameters take
        self.defined: dict[str, tuple[str, list[str], list[str]]] = {}
        self.param_slots: dict[str, list[int]] = {}
        self.unique_keys: set[str] = set()

    # ---- plain items

    def items(self, items: list[Item], depth: int, prefix: str = "") -> list[str]:
        pad = "  " * depth
        lines: list[str] = []
        for item in items:
            if isinstance(item, From):
                lines.append(pad + f"from {value_text(_relative(item.value, prefix))}")
            elif isinstance(item, Layer):
                name = _relative(item.name, prefix)
                lines.append(
                    pad + call_text(item.kind, item.args, name, self.defaults.get(item.kind))
                )
            elif isinstance(item, Residual):
                lines.append(pad + "residual {")
                lines += self._join_name(item.layer, "add", prefix, pad)
                lines += self.items(item.body, depth + 1, prefix)
                if item.shortcut is not None:
                    lines.append(pad + "  shortcut {")
                    lines += self.items(item.shortcut, depth + 2, prefix)
                    lines.append(pad + "  }")
                lines.append(pad + "}")
            elif isinstance(item, Join):
                lines.append(pad + f"{item.layer.kind} {{")
                lines += self._join_name(item.layer, item.layer.kind, prefix, pad)
                for branch in item.branches:
                    lines.append(pad + "  branch {")
                    lines += self.items(branch, depth + 2, prefix)
                    lines.append(pad + "  }")
                lines.append(pad + "}")
        return lines

    def _join_name(self, layer: Layer, kind: str, prefix: str, pad: str) -> list[str]:
        name = _relative(layer.name, prefix)
        if prefix and name == kind:
            return []  # a define's instance names its join <instance>_<kind>
        return [pad + f"  name {value_text(name)}"]

    # ---- the model, with blocks made definitions

    def model(self, items: list[Item]) -> list[str]:
        entries = self._group(items)
        groups = list(_groups_in(entries))
        # A prefix split by other layers (MobileNetV3's re_lu_3 inside expanded_conv_1) would
        # name two calls alike: such layers stay as they are.
        keys = Counter(g.key for g in groups)
        self.unique_keys = {key for key, count in keys.items() if count == 1}
        for group in groups:
            if len(layers_of(group.items)) > 1 and keys[group.key] == 1:
                group.template = self._template(group)
        shared: dict[str, list[_Group]] = {}
        for group in groups:
            if group.template is not None:
                shared.setdefault(group.template.skeleton(), []).append(group)
        entries = self._split(entries, shared)
        shared = {}
        for group in _groups_in(entries):
            if group.template is not None:
                shared.setdefault(group.template.skeleton(), []).append(group)
        return self._calls(self._resolve(entries, shared), 1)

    # ---- repeated units inside a block: from the structure, not the name prefix alone

    def _split(self, entries: list[Any], shared: dict[str, list[_Group]]) -> list[Any]:
        """Each group that the name prefixes leave whole and unshared (torchvision's `features`:
        every layer of `features.N.M` shares the prefix `features`) split into the units
        inside it whose structure repeats, the calls of a define: a unit is the layers under
        one module path (`features_2_0`), and of all the module paths those whose skeletons
        (kinds, nesting, names relative to the unit, which arguments are given) are equal
        save the most lines, chosen greedily (torchvision's MBConv, not the stages of one to
        four MBConvs that hold them: more of them are alike). What is left of the group stays
        as it was, around the calls."""
        flat = [
            entry
            for entry in _groups_in(entries)
            if entry.template is None or len(shared[entry.template.skeleton()]) == 1
        ]
        candidates = [unit for group in flat for unit in self._units(group)]
        chosen = _chosen(candidates)
        if not chosen:
            return entries
        by_group: dict[int, list[_Unit]] = {}
        for unit in chosen:
            by_group.setdefault(id(unit.group), []).append(unit)

        def rebuilt(entry: Any) -> Any:
            if isinstance(entry, _Nested):
                return _Nested(entry.residual, [rebuilt(e) for e in entry.entries])
            if not isinstance(entry, _Group) or id(entry) not in by_group:
                return entry
            units = sorted(by_group[id(entry)], key=lambda unit: unit.start)
            inside: list[Any] = []
            position = 0
            for unit in units:
                inside += entry.items[position : unit.start]
                inside.append(unit.unit)
                position = unit.end
            inside += entry.items[position:]
            return _Block(entry.key, inside, self._is_block(entry))

        return [rebuilt(entry) for entry in entries]

    def _units(self, group: _Group) -> list[_Unit]:
        """The candidate units of a group: each module path below the group's prefix whose
        items are consecutive and hold two layers or more, with its template; of the paths
        with the same items (`features_1` holds only `features_1_0`), the longest."""
        if any(isinstance(item, From) for item in group.items):
            return []  # a `from` reads by name: the units stay as the prefixes make them
        base = len(group.key.split("_")) if group.key else 0
        paths = [_path(item) for item in group.items]
        spans: dict[tuple[int, int], set[tuple[str, ...]]] = {}
        for path in paths:
            for length in range(base + 1, len(path) + 1):
                node = path[:length]
                members = [i for i, p in enumerate(paths) if p[:length] == node]
                span = (members[0], members[-1] + 1)
                if len(members) == span[1] - span[0]:  # else split by other layers
                    spans.setdefault(span, set()).add(node)
        units: list[_Unit] = []
        for (start, end), nodes in spans.items():
            items = group.items[start:end]
            if len(layers_of(items)) < 2:
                continue
            # The longest path whose names below it are names: features_2 rather than
            # features_2_conv, whose layers would be `0_0`, `0_1`.
            for node in sorted(nodes, key=len, reverse=True):
                unit = _Group("_".join(node), items, structural=True)
                unit.template = self._template(unit)
                if unit.template is not None and _relative_names(unit.template):
                    units.append(_Unit(group, start, end, unit))
                    break
        return units

    def _group(self, items: list[Item]) -> list[Any]:
        """Consecutive items of one name prefix as groups; a residual whose add is named apart
        from its body (ConvNeXt's `add_3` around stage_1_block_0) keeps the add here and
        groups its body inside. A `from` goes with the item after it, which reads it: DPN's
        block reads its two paths by name, in one block."""
        groups: list[Any] = []
        read: list[Item] = []  # the `from` before the item
        for item in items:
            if isinstance(item, From):
                read = [item]
                continue
            key = _key(item)
            last = groups[-1] if groups else None
            if (
                not key
                and isinstance(item, Residual)
                and item.shortcut is None
                and len(layers_of(item.body)) > 1
            ):
                groups += read
                groups.append(_Nested(item, self._group(item.body)))
            elif key and isinstance(last, _Group) and _nested(key, last.key):
                last.items += [*read, item]
            elif (
                key
                and isinstance(last, _Group)
                and _nested(last.key, key)
                and not _NUMBER_SUFFIX.match(last.key[len(key) :])
            ):
                # `block_1_expand` then `block_1`: one block, block_1; but a numbered block
                # then its parent's layer (`encoder_layers_1` then `encoder_ln`) stay apart.
                last.items += [*read, item]
                last.key = key
            elif key:
                groups.append(_Group(key, [*read, item]))
            else:
                groups += [*read, item]
            read = []
        return groups + read

    def _resolve(self, entries: list[Any], shared: dict[str, list[_Group]]) -> list[Any]:
        """Groups that share their structure with another as calls of one define."""
        resolved: list[Any] = []
        for entry in entries:
            if isinstance(entry, _Nested):
                resolved.append(_Nested(entry.residual, self._resolve(entry.entries, shared)))
            elif isinstance(entry, _Block):
                entries = self._resolve(entry.entries, shared)
                resolved.append(_Block(entry.key, entries, entry.block))
            elif isinstance(entry, _Group) and entry.template is not None:
                members = shared[entry.template.skeleton()]
                resolved.append(self._call(entry, members) if len(members) > 1 else entry)
            else:
                resolved.append(entry)
        return resolved

    def _template(self, group: _Group) -> _Template | None:
        template = _Template([])
        prefix = group.key + "_"
        inside = {layer.name for layer in layers_of(group.items)}
        if not all(name.startswith(prefix) for name in inside):
            return None
        # A `from` in an instance looks for the name relative to the instance first: a value
        # before the block is read by its own name only where no layer is named so in it.
        if any(
            prefix + value in self.names for value in froms_of(group.items) if value not in inside
        ):
            return None

        def walk(items: list[Item], depth: int) -> None:
            for item in items:
                if isinstance(item, From):
                    if item.value in inside:
                        read = _Read(_relative(item.value, group.key))
                    else:
                        read = _Read(None, len(template.values))
                        template.values.append(item.value)
                        template.keys.append(_FROM_KEY)
                    template.lines.append((depth, read))
                elif isinstance(item, Layer):
                    call = _Call(item.kind, _relative(item.name, group.key), {})
                    from cnnspec.registry import REGISTRY

                    fields = REGISTRY[item.kind].model_fields
                    # Required arguments first: `block(filters, stride)`, as people order them.
                    ordered = sorted(fields.items(), key=lambda f: not f[1].is_required())
                    for key, info in ordered:
                        if key in item.args or info.is_required():
                            call.slots[key] = len(template.values)
                            template.values.append(item.args.get(key))
                            template.keys.append(key)
                    template.lines.append((depth, call))
                elif isinstance(item, Residual):
                    template.lines.append("residual {")
                    template.lines += [
                        line.strip() for line in self._join_name(item.layer, "add", group.key, "")
                    ]
                    walk(item.body, depth + 1)
                    if item.shortcut is not None:
                        template.lines.append("shortcut {")
                        walk(item.shortcut, depth + 2)
                        template.lines.append("}")
                    template.lines.append("}")
                else:
                    template.lines.append(f"{item.layer.kind} {{")
                    template.lines += [
                        line.strip()
                        for line in self._join_name(item.layer, item.layer.kind, group.key, "")
                    ]
                    for branch in item.branches:
                        template.lines.append("branch {")
                        walk(branch, depth + 2)
                        template.lines.append("}")
                    template.lines.append("}")

        walk(group.items, 0)
        return template

    def _call(self, group: _Group, members: list[_Group]) -> tuple[str, list[Any], str]:
        template = group.template
        assert template is not None
        skeleton = template.skeleton()
        if skeleton not in self.defined:
            self.defined[skeleton] = self._define(members)
        name, _params, _ = self.defined[skeleton]
        slots = self.param_slots[skeleton]
        values = [simplest(template.values[slot]) for slot in slots]
        return name, values, group.key

    def _define(self, members: list[_Group]) -> tuple[str, list[str], list[str]]:
        first = members[0].template
        assert first is not None
        count = len(first.values)
        columns = [
            [simplest(m.template.values[i]) for m in members if m.template] for i in range(count)
        ]
        params: list[str] = []
        param_slots: list[int] = []
        expressions: dict[int, str] = {}
        # A member without the option a value is in (_ABSENT) agrees with any value there.
        constants = [next((v for v in column if v is not _ABSENT), None) for column in columns]
        for index, column in enumerate(columns):
            present = [v for v in column if v is not _ABSENT]
            if all(repr(v) == repr(present[0]) for v in present):
                continue
            found = None
            for param, slot in zip(params, param_slots, strict=True):
                if (first.keys[slot] == _FROM_KEY) != (first.keys[index] == _FROM_KEY):
                    continue  # a name read by `from` is no layer's argument
                # What the parameter holds in each call so far: the first of the slots it
                # stands for that the call's options use.
                held = [
                    next(
                        (
                            columns[i][row]
                            for i, text in expressions.items()
                            if text == param and columns[i][row] is not _ABSENT
                        ),
                        _ABSENT,
                    )
                    for row in range(len(column))
                ]
                pairs = [
                    (b, c)
                    for b, c in zip(held, column, strict=True)
                    if b is not _ABSENT and c is not _ABSENT
                ]
                # Where one is absent, the same argument only (the projection's filters in
                # either option): a call passes what its option uses.
                partial = any(c is _ABSENT for c in (*held, *column))
                if all(repr(b) == repr(c) for b, c in pairs) and (
                    not partial or first.keys[slot] == first.keys[index]
                ):
                    found = param
                    break
                if (
                    pairs
                    and all(c is not _ABSENT for c in columns[slot])
                    and all(
                        isinstance(v, int) and not isinstance(v, bool)
                        for pair in pairs
                        for v in pair
                    )
                    and all(b != 0 for b, _ in pairs)
                    and len({c / b for b, c in pairs}) == 1
                    and (pairs[0][1] / pairs[0][0]).is_integer()
                ):
                    found = f"{int(pairs[0][1] / pairs[0][0])} * {param}"
                    break
            if found is None:
                key = first.keys[index]
                found = _fresh(key, params)
                params.append(found)
                param_slots.append(index)
            expressions[index] = found
        # A call passes the value of its option's slot for the parameter, else (no option of
        # its uses it) the first value.
        for param, slot in zip(params, param_slots, strict=True):
            uses = [index for index, text in expressions.items() if text == param]
            for member in members:
                assert member.template is not None
                values = member.template.values
                if values[slot] is _ABSENT:
                    given = [values[i] for i in uses if values[i] is not _ABSENT]
                    values[slot] = given[0] if given else constants[slot]
        if not members[0].structural:
            name = self._define_name(members[0].key)
        else:
            # What the body is (`mbconv`), or else the module's own word where its path ends
            # in one (DenseNet's `features_transition1`), never the word of the group it is
            # in (`features` of `features_2_0`).
            what = _what(members[0].items)
            last = re.sub(r"\d+$", "", members[0].key.split("_")[-1])
            if what in ("unit", "residual_unit") and last.isidentifier():
                what = last.lower()
            name = self._define_name(what, words=True)
        lines = [f"define {name}({', '.join(params)}) {{"]
        lines += self._body(first.lines, first, params, expressions, constants, columns)
        lines.append("}")
        skeleton = first.skeleton()
        self.param_slots[skeleton] = param_slots
        return name, params, lines

    def _body(
        self,
        template_lines: list[_Line],
        first: _Template,
        params: list[str],
        expressions: dict[int, str],
        constants: list[Any],
        columns: list[list[Any]],
    ) -> list[str]:
        lines: list[str] = []
        for line in template_lines:
            if isinstance(line, str):
                lines.append(line)
                continue
            _depth, call = line
            if isinstance(call, _Choice):
                taken = {repr(v) for v in columns[call.slot]}
                options = [
                    (value, self._body(option, first, params, expressions, constants, columns))
                    for value, option in call.options
                    if repr(value) in taken  # an option no call takes is left out
                ]
                if call.slot not in expressions:  # every member has the same option
                    lines += next((o for v, o in options if v == constants[call.slot]), [])
                    continue
                lines += _if_text(expressions[call.slot], options)
                continue
            if isinstance(call, _Read):
                if call.slot is not None and call.slot in expressions:
                    lines.append(f"from {expressions[call.slot]}")
                else:
                    read = call.relative if call.slot is None else constants[call.slot]
                    assert isinstance(read, str)
                    lines.append(f"from {_name_text(read, params)}")
                continue
            args = {}
            for key, slot in call.slots.items():
                args[key] = Spelled(expressions[slot]) if slot in expressions else constants[slot]
            lines.append(call_text(call.kind, args, call.name, self.defaults.get(call.kind)))
        return lines

    def _is_block(self, group: _Group) -> bool:
        from cnnspec.registry import REGISTRY

        return (
            len(layers_of(group.items)) > 1
            and group.key in self.unique_keys
            and IDENTIFIER.match(group.key) is not None
            and group.key not in self.names
            and group.key not in REGISTRY
            and group.key not in _KEYWORDS
            and not keyword.iskeyword(group.key)
        )

    def _define_name(self, key: str, words: bool = False) -> str:
        """A define's name: `key`'s last word (`conv2_block1` is `block`), or `key` itself
        where it is already the name's words (`mbconv`); with a letter where it is taken."""
        stem = ""
        for token in reversed([t for t in key.split("_") if t]):
            stem = re.sub(r"\d+$", "", token)
            # A name's word, never a token a name cannot start with (inception's `3x3`).
            if stem.isidentifier():
                break
            stem = ""
        stem = key if words else (stem or "unit").lower()
        from cnnspec.registry import REGISTRY

        taken = {name for name, _, _ in self.defined.values()} | set(REGISTRY) | self.names
        taken |= _KEYWORDS
        candidate = stem
        letter = 0
        while candidate in taken or keyword.iskeyword(candidate):
            candidate = f"{stem}_{chr(ord('a') + letter)}"
            letter += 1
        return candidate

    def definitions(self) -> list[str]:
        lines: list[str] = []
        for _, _, text in self.defined.values():
            lines += text
            lines.append("")
        return lines

    def _calls(self, entries: list[Any], depth: int) -> list[str]:
        pad = "  " * depth
        lines: list[str] = []
        index = 0
        while index < len(entries):
            entry = entries[index]
            run = _numbered_run(entries, index)
            if len(run) > 1:
                body = self._calls([_numbered(run)], depth + 1)
                single = f"{pad}repeat {len(run)} {{ {body[0].strip()} }}"
                if len(body) == 1 and len(single) <= 99:
                    lines.append(single)  # as people write a one-call repeat
                else:
                    lines += [pad + f"repeat {len(run)} {{", *body, pad + "}"]
                index += len(run)
                continue
            if isinstance(entry, tuple):
                name, values, instance = entry
                args = "".join(f"{value_text(v)}, " for v in values)
                lines.append(pad + f"{name}({args}name={value_text(instance)})")
            elif isinstance(entry, _Nested):
                lines.append(pad + "residual {")
                lines.append(pad + f"  name {value_text(entry.residual.layer.name)}")
                lines += self._calls(entry.entries, depth + 1)
                lines.append(pad + "}")
            elif isinstance(entry, _Block) and entry.block:
                lines.append(pad + f"block {entry.key} {{")
                lines += self._calls(entry.entries, depth + 1)
                lines.append(pad + "}")
            elif isinstance(entry, _Block):
                lines += self._calls(entry.entries, depth)
            elif isinstance(entry, _Group) and self._is_block(entry):
                # A prefix used once is a block of that name, as conv1 { conv1_conv ... }.
                lines.append(pad + f"block {entry.key} {{")
                lines += self.items(entry.items, depth + 1)
                lines.append(pad + "}")
            elif isinstance(entry, _Group):
                lines += self.items(entry.items, depth)
            else:
                lines += self.items([entry], depth)
            index += 1
        return lines


@dataclass
class _Nested:
    """A residual written around its body's groups (see _Writer._group)."""

    residual: Residual
    entries: list[Any]


def _groups_in(entries: list[Any]) -> Any:
    for entry in entries:
        if isinstance(entry, _Group):
            yield entry
        elif isinstance(entry, _Nested | _Block):
            yield from _groups_in(entry.entries)


def _shape_of(entry: Any) -> tuple[Any, ...] | None:
    """What two entries of a repeat must share, and the numbered names they may differ in:
    (define, arguments) and [instance name] for a call; with the add's name for a residual
    around one call."""
    if isinstance(entry, tuple):
        return (entry[0], repr(entry[1])), [entry[2]]
    if (
        isinstance(entry, _Nested)
        and len(entry.entries) == 1
        and isinstance(entry.entries[0], tuple)
    ):
        call = entry.entries[0]
        return ("residual", call[0], repr(call[1])), [entry.residual.layer.name, call[2]]
    return None


def _numbered_run(entries: list[Any], start: int) -> list[Any]:
    """The entries from `start` on that differ only in names numbered one up each time."""
    first = _shape_of(entries[start])
    if first is None:
        return [entries[start]]
    shape, names = first
    if not all(isinstance(name, str) for name in names):
        return [entries[start]]  # already a repeat's body
    matches = [_NUMBER_SUFFIX.match(name) for name in names]
    if not all(matches):
        return [entries[start]]
    run = [entries[start]]
    while start + len(run) < len(entries):
        following = _shape_of(entries[start + len(run)])
        if following is None or following[0] != shape:
            break
        step = len(run)
        expected = [
            f"{name[: m.start(2)]}{int(m.group(2)) + step}"
            for name, m in zip(names, matches, strict=True)
            if m is not None
        ]
        if following[1] != expected:
            break
        run.append(entries[start + len(run)])
    return run


def _numbered(run: list[Any]) -> Any:
    """The first entry of a run, its numbered names written as expressions of `index`."""

    def label(name: str) -> Spelled:
        match = _NUMBER_SUFFIX.match(name)
        assert match is not None
        start = int(match.group(2))
        offset = f" + {start}" if start else ""
        head = name[: match.start(2)].replace("\\", "\\\\").replace('"', '\\"')
        return Spelled(f'"{head}" + str(index{offset})')

    first = run[0]
    if isinstance(first, tuple):
        return (first[0], first[1], label(first[2]))
    call = first.entries[0]
    residual = Residual(
        Layer(label(first.residual.layer.name), "add", {}, ()),  # type: ignore[arg-type]
        first.residual.body,
        None,
    )
    return _Nested(residual, [(call[0], call[1], label(call[2]))])


_KEYWORDS = {
    "block",
    "residual",
    "repeat",
    "branch",
    "shortcut",
    "head",
    "model",
    "define",
    "input",
    "defaults",
    "name",
    "index",
    "let",
    "if",
    "else",
    "backbone",
    "all",
    "true",
    "false",
    "none",
}


def _if_text(param: str, options: list[tuple[Any, list[str]]]) -> list[str]:
    """`if` on a parameter: true or false (`if se { ... }`), or the kind it names, one
    option after another (`if act == relu { relu() } else { hard_swish() }`)."""
    value, body = options[0]
    condition = param if value is True else f"{param} == {value_text(value)}"
    if value is False:
        condition = f"not({param})"
    rest = options[1:]
    if not rest:
        return [f"if {condition} {{", *body, "}"]
    otherwise = rest[0][1] if len(rest) == 1 else _if_text(param, rest)
    if len(body) == 1 and len(otherwise) == 1:
        return [f"if {condition} {{ {body[0]} }} else {{ {otherwise[0]} }}"]
    return [f"if {condition} {{", *body, "} else {", *otherwise, "}"]


def _nested(key: str, block: str) -> bool:
    return key == block or key.startswith(block + "_")


def _fresh(key: str, taken: list[str]) -> str:
    candidate, number = key, 1
    while candidate in taken or candidate in ("name", "index"):
        number += 1
        candidate = f"{key}{number}"
    return candidate


def _name_text(name: str, params: list[str]) -> str:
    """A name `from` reads, in quotes where a bare word would be a variable of the define."""
    if name in params or name == "index":
        return '"' + name + '"'
    return value_text(name)


def _relative(name: str, prefix: str) -> str:
    if prefix and name.startswith(prefix + "_"):
        return name[len(prefix) + 1 :]
    return name
