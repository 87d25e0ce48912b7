"""Network diagrams from the checked IR, without a deep-learning framework or a Graphviz binary.

The layout follows the language's own nesting (cnnspec.nesting, the pass the importer's writer
reads too): a chain of layers runs top to bottom; the branches of a join stand side by side
above it; a residual's body and shortcut are two columns (an identity shortcut is an edge down
the side). Nested joins never cross, so no general graph-layout search is needed. A chain that
starts from an earlier value (`from NAME`) starts at a small `from NAME` tag rather than at an
edge from that value's box, which would cross the boxes between them. Each box shows the
layer's name, kind and main arguments, its output shape and parameter count; each edge carries
the shape it moves; blocks are labelled frames around their layers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from cnnspec.ir import Graph, Node, Spec
from cnnspec.layers import format_shape
from cnnspec.nesting import From, Item, Join, Residual, end_of, nest
from cnnspec.registry import Params, Shape
from cnnspec.spelling import Spelled, call_text
from cnnspec.wording import plural

BOX_W, BOX_H = 280, 56  # a layer's box: its name; kind and arguments; shape and parameters
GAP_Y, GAP_X = 40, 28  # between boxes down a chain, and between side-by-side branches
SKIP = 22  # the lane an identity shortcut takes beside its body
READ_H = 24  # a `from NAME` tag at the top of a chain
PAD = 10  # a block's frame around its layers
STYLE = (
    "text{font-family:ui-sans-serif,system-ui,sans-serif;font-size:12px;fill:#1d2433}"
    ".name{font-weight:600}.detail{fill:#4a5468;font-size:11px}"
    ".shape{fill:#6b7280;font-size:10px}.blocklabel{fill:#46507a;font-size:11px;"
    "font-weight:600}.edge{fill:none;stroke:#8a94a6;stroke-width:1.3}"
    ".skip{stroke-dasharray:4 3}"
)


@dataclass
class Shown:
    """One box: a layer, or a block collapsed to one box (`--depth`) with its totals."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    scope: tuple[str, ...]
    label: str
    shape: Shape | None
    params: Params
    frozen: bool = False
    members: tuple[str, ...] = ()
    details: str = ""  # what hovering shows


@dataclass
class Box:
    node: Shown
    x: float
    y: float


@dataclass
class Layout:
    boxes: dict[str, Box] = field(default_factory=dict)
    # Identity shortcuts: (from value, to join) drawn down a side lane at x.
    skips: list[tuple[str, str, float]] = field(default_factory=list)
    # `from NAME` tags: key (`from 1`, `from 2`, ... in placement order) -> (value, x, y).
    reads: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    # Where an edge is drawn from other than its value's box: (reader, value) -> a tag's key.
    redirect: dict[tuple[str, str], str] = field(default_factory=dict)
    width: float = 0.0
    height: float = 0.0


def shown(graph: Graph, frozen: frozenset[str], depth: int | None = None) -> list[Shown]:
    """The boxes to draw, in order: every layer, or with `depth`, every block nested deeper
    than `depth` collapsed into one box (a block that does not take one input and give one
    output in order, which a join can make, stays open)."""
    boxes = [_layer_box(n, frozen) for n in graph.nodes]
    if depth is None:
        return boxes
    scopes = [tuple(name.split(".")) for name in preset(graph, frozen, depth)]
    return collapsed_boxes(graph, boxes, scopes, frozen)


def preset(graph: Graph, frozen: frozenset[str], depth: int) -> list[str]:
    """The blocks `--depth N` (and the page's `blocks N deep`) collapses: each block N + 1
    deep that can be one box, in model order."""
    scopes = dict.fromkeys(n.scope[: depth + 1] for n in graph.nodes if len(n.scope) > depth)
    return [".".join(s) for s in scopes if block_box(graph, s, frozen) is not None]


def outermost(collapsed: set[str]) -> list[tuple[str, ...]]:
    """The collapsed blocks drawn as boxes: those inside no other collapsed block (a layer
    belongs to the outermost collapsed block around it)."""
    scopes = sorted(tuple(name.split(".")) for name in collapsed)
    return [
        scope
        for scope in scopes
        if not any(".".join(scope[:depth]) in collapsed for depth in range(1, len(scope)))
    ]


def placement(
    graph: Graph, frozen: frozenset[str], collapsed: set[str]
) -> tuple[list[Shown], Layout, set[str]]:
    """The boxes and their places with the blocks in `collapsed` (each one that can be a box;
    the outermost of nested ones) drawn as one box each; and the blocks that were. A block
    whose layers turn out not to be one run of the drawing's chains stays open, and the rest
    are placed again without it (the page does the same)."""
    wanted = {name for name in collapsed if _collapsible(graph, name, frozen)}
    while True:
        boxes = [_layer_box(n, frozen) for n in graph.nodes]
        boxes = collapsed_boxes(graph, boxes, outermost(wanted), frozen)
        try:
            return boxes, layout(graph, boxes), wanted
        except NotOneRun as error:
            wanted.discard(error.block)


def _collapsible(graph: Graph, name: str, frozen: frozenset[str]) -> bool:
    return block_box(graph, tuple(name.split(".")), frozen) is not None


def collapsed_boxes(
    graph: Graph, boxes: list[Shown], scopes: list[tuple[str, ...]], frozen: frozenset[str]
) -> list[Shown]:
    """`boxes` with the layers of each block in `scopes` (collapsible, none inside another)
    replaced by the block's box, where its last layer was; inputs renamed to match."""
    renamed: dict[str, str] = {}
    last: dict[str, Shown] = {}
    for scope in scopes:
        box = block_box(graph, scope, frozen)
        assert box is not None
        renamed.update({member: box.name for member in box.members})
        last[box.members[-1]] = box
    result = []
    for box in boxes:
        if box.name in renamed and box.name not in last:
            continue
        box = last.get(box.name, box)
        box.inputs = tuple(renamed.get(i, i) for i in box.inputs)
        result.append(box)
    return result


def block_box(graph: Graph, scope: tuple[str, ...], frozen: frozenset[str]) -> Shown | None:
    """The block at `scope` as one box with its totals, or None when it cannot be one: it must
    take one input and give one output, used only after its last layer."""
    indices = [i for i, n in enumerate(graph.nodes) if n.scope[: len(scope)] == scope]
    if not indices:
        return None
    members = {graph.nodes[i].name for i in indices}
    position = {node.name: index for index, node in enumerate(graph.nodes)}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.nodes):
        for source in node.inputs:
            consumers.setdefault(source, []).append(index)
    outside = [
        n
        for n in members
        if any(graph.nodes[c].name not in members for c in consumers.get(n, []))
        or n == graph.output
    ]
    last = max(indices)
    inputs = list(
        dict.fromkeys(
            source for i in indices for source in graph.nodes[i].inputs if source not in members
        )
    )
    later = all(c > last for n in outside for c in consumers.get(n, []) if c not in indices)
    name = ".".join(scope)
    if len(outside) != 1 or len(inputs) != 1 or not later or name in position:
        return None
    params = Params()
    for i in indices:
        params = params + graph.nodes[i].params
    out = graph.node(outside[0])
    count = len(indices)
    return Shown(
        name,
        "block",
        tuple(inputs),
        scope[:-1],
        plural(count, "layer"),
        out.output_shape,
        params,
        params.total > 0
        and all(m in frozen for m in members if graph.nodes[position[m]].params.total),
        tuple(graph.nodes[i].name for i in indices),
        f"block {name}: {plural(count, 'layer')}, {plural(params.total, 'parameter')} "
        f"({params.trainable:,} trainable); click to expand",
    )


def _layer_box(node: Node, frozen: frozenset[str]) -> Shown:
    return Shown(
        node.name,
        node.kind,
        node.inputs,
        node.scope,
        _label(node),
        node.output_shape,
        node.params,
        node.name in frozen and node.params.total > 0,
        (node.name,),
        _details(node, frozen),
    )


@dataclass
class Fork:
    """A join or a residual as the drawing places it: its layer, its columns side by side (a
    join's branches; a residual's body, then its shortcut), and the value an identity path
    (an empty branch, a residual without a shortcut) starts from, drawn in a lane of its own."""

    layer: str
    columns: list[list[Any]]
    skip: str | None = None


@dataclass(frozen=True)
class Read:
    """A chain that starts from an earlier value (`from NAME`), drawn as a tag at its top."""

    value: str


def tree_of(graph: Graph) -> list[Any]:
    """Every layer nested as the language nests them (cnnspec.nesting): a chain of names,
    Forks and Reads."""

    def converted(items: list[Item[Node]]) -> list[Any]:
        result: list[Any] = []
        for item in items:
            if isinstance(item, From):
                result.append(Read(item.value))
            elif isinstance(item, Join):
                empty = [i for i, branch in enumerate(item.branches) if not branch]
                skip = item.layer.inputs[empty[0]] if empty else None
                result.append(Fork(item.layer.name, [converted(b) for b in item.branches], skip))
            elif isinstance(item, Residual):
                skip = None
                if item.shortcut is None:
                    end = end_of(item.body, "")
                    skip = next(i for i in item.layer.inputs if i != end)
                columns = [converted(item.body), converted(item.shortcut or [])]
                result.append(Fork(item.layer.name, columns, skip))
            else:
                result.append(item.name)
        return result

    return converted(nest(graph.nodes, graph.INPUT, graph.output or graph.INPUT))


class NotOneRun(ValueError):
    """A collapsed block whose layers are not one run of a chain of the drawing (a join
    splits it, or other layers run between them): it cannot be one box, and stays open."""

    def __init__(self, block: str, why: str) -> None:
        super().__init__(f"block {block} {why}")
        self.block = block


def collapsed(items: list[Any], owner: dict[str, str]) -> list[Any]:
    """The tree with each collapsed block's layers (`owner`: layer -> its block) replaced by
    the block's name, where they ran. NotOneRun when a block's layers are not one run of a
    chain (the drawing keeps such a block open)."""
    placed: set[str] = set()

    def owner_of(item: Any) -> str | None:
        if isinstance(item, Fork):
            # A tag belongs to the block whose layers are around it.
            owners = {owner.get(item.layer)} | {
                owner_of(inner)
                for column in item.columns
                for inner in column
                if not isinstance(inner, Read)
            }
            return owners.pop() if len(owners) == 1 else None
        if isinstance(item, Read):
            return None
        return owner.get(item)

    def walk(chain: list[Any]) -> list[Any]:
        result: list[Any] = []
        for item in chain:
            block = owner_of(item)
            if block is not None:
                if result and result[-1] == block:
                    continue
                if block in placed:
                    raise NotOneRun(block, "is not one run of layers")
                placed.add(block)
                result.append(block)
            elif isinstance(item, Fork):
                if item.layer in owner:
                    raise NotOneRun(owner[item.layer], "splits a join")
                result.append(Fork(item.layer, [walk(c) for c in item.columns], item.skip))
            elif isinstance(item, Read):
                result.append(item)
            elif item in owner:
                raise NotOneRun(owner[item], "is not one run of layers")
            else:
                result.append(item)
        return result

    return walk(items)


def layout(graph: Graph, boxes: list[Shown]) -> Layout:
    by_name = {box.name: box for box in boxes}
    owner = {m: b.name for b in boxes if b.kind == "block" for m in b.members}
    tree = collapsed(tree_of(graph), owner)
    result = Layout()
    # Room under the input for the labels of the blocks around the first layer's box.
    first = graph.nodes[0].name if graph.nodes else None
    depth = len(by_name[owner.get(first, first)].scope) if first is not None else 0
    top = BOX_H + GAP_Y + 14 * depth
    width, height = _place(tree, 0.0, top, by_name, result, lambda v: owner.get(v, v))
    result.width, result.height = max(width, BOX_W) + 2 * PAD, height + 2 * PAD
    return result


def _place(
    items: list[Any],
    x: float,
    y: float,
    nodes: dict[str, Shown],
    out: Layout,
    visible: Callable[[str], str],
    incoming: tuple[str, str] | None = None,
) -> tuple[float, float]:
    """Place a chain from (x, y) down; returns its (width, bottom). `incoming`: the value the
    chain starts from and the tag it is drawn from, where an enclosing chain started from a
    `from`. The page's script places the same way (`place` in _DRAW_SCRIPT)."""
    width: float = BOX_W
    for item in items:
        if isinstance(item, Read):
            key = f"from {len(out.reads) + 1}"
            out.reads[key] = (item.value, x, y)
            incoming = (visible(item.value), key)
            y += READ_H + GAP_Y
            continue
        if isinstance(item, Fork):
            left, bottom = x, y
            for column in item.columns:
                if column:
                    w, b = _place(column, left, y, nodes, out, visible, incoming)
                    left += w + GAP_X
                    bottom = max(bottom, b)
                    if len(column) == 1 and isinstance(column[0], Read):
                        # A branch that is a value itself: the join reads it from the tag.
                        read = (item.layer, visible(column[0].value))
                        out.redirect[read] = f"from {len(out.reads)}"
            if item.skip is not None:
                # The identity path runs down a lane of its own, right of the branches.
                source = visible(item.skip)
                if incoming is not None and incoming[0] == source:
                    out.redirect[(item.layer, source)] = incoming[1]
                    source = incoming[1]
                out.skips.append((source, item.layer, left - GAP_X + SKIP))
                left += SKIP
            width = max(width, left - x - GAP_X)
            y = bottom
            name = item.layer
        else:
            name = item
            if incoming is not None:
                out.redirect[(name, incoming[0])] = incoming[1]
        incoming = None
        out.boxes[name] = Box(nodes[name], x, y)
        y += BOX_H + GAP_Y
    return width, y


def _label(node: Node) -> str:
    """The layer as a spec writes it, with the arguments the spec gave: `conv2d(64, kernel=1)`."""
    args = {}
    for key, value in node.layer.explicit().items():
        if hasattr(value, "kind"):  # an activation, with its own arguments if any
            inner = value.explicit()
            value = Spelled(call_text(value.kind, inner) if inner else value.kind)
        args[key] = value
    text = call_text(node.kind, args) if node.kind in _kinds() else node.kind
    return text if len(text) <= 42 else text[:41] + "…"


def _details(node: Node, frozen: frozenset[str]) -> str:
    """A layer in full, as hovering shows it."""
    lines = [f"{node.name}: {_label(node)}"]
    if node.output_shape is not None:
        lines.append(f"output {format_shape(node.output_shape)}")
    lines.append(
        f"{plural(node.params.total, 'parameter')} ({node.params.trainable:,} trainable, "
        f"{node.params.non_trainable:,} not)"
    )
    if node.macs:
        lines.append(f"{node.macs:,} MACs")
    if node.receptive_field is not None:
        size, jump = node.receptive_field.size, node.receptive_field.jump
        lines.append(f"receptive field {size[0]}x{size[1]}, jump {jump[0]}x{jump[1]}")
    if node.scope:
        lines.append(f"block {'.'.join(node.scope)}")
    if node.name in frozen:
        lines.append("frozen in this phase")
    return "\n".join(lines)


def _kinds() -> set[str]:
    from cnnspec.registry import REGISTRY

    return set(REGISTRY)


def svg(
    spec: Spec,
    phase: str | None = None,
    depth: int | None = None,
    collapsed: Iterable[str] = (),
) -> str:
    """The diagram; with `phase`, the layers that phase freezes are shaded and each block's
    label says how many of its parameters the phase trains; with `depth`, blocks nested
    deeper are one box each; with `collapsed` (block names, such as `stage2.unit1`), those
    blocks are, as the page draws them after clicks (or its URL's `#collapsed=`)."""
    graph = spec.model
    plan = next((p for p in spec.phases if p.phase.name == phase), None) if phase else None
    frozen = plan.frozen if plan is not None else frozenset()
    wanted = set(preset(graph, frozen, depth) if depth is not None else collapsed)
    boxes, placed, _ = placement(graph, frozen, wanted)
    shapes: dict[str, Any] = dict(graph.value_shapes()) if graph.input_shape else {}
    shapes.update({b.name: b.shape for b in boxes})
    parts: list[str] = []
    offset = PAD

    def center(name: str) -> tuple[float, float, float]:
        if name == graph.INPUT:
            return offset + BOX_W / 2, offset + BOX_H / 2, offset + BOX_H
        if name in placed.reads:
            _, x, y = placed.reads[name]
            return offset + x + BOX_W / 2, offset + y, offset + y + READ_H
        box = placed.boxes[name]
        return offset + box.x + BOX_W / 2, offset + box.y, offset + box.y + BOX_H

    # Blocks: a frame around each block's boxes, outermost first.
    frames: dict[tuple[str, ...], list[Box]] = {}
    labels: list[str] = []
    for box in placed.boxes.values():
        for depth in range(1, len(box.node.scope) + 1):
            frames.setdefault(box.node.scope[:depth], []).append(box)
    for scope, members in sorted(frames.items(), key=lambda item: len(item[0])):
        inset = PAD * (len(scope) - 1) / 2
        # Room above for the labels of the blocks inside it.
        inner = max(len(b.node.scope) for b in members) - len(scope)
        left = min(b.x for b in members) + offset - PAD + inset
        top = min(b.y for b in members) + offset - PAD - 14 - 14 * inner + inset
        right = max(b.x for b in members) + offset + BOX_W + PAD - inset
        bottom = max(b.y for b in members) + offset + BOX_H + PAD - inset
        parts.append(
            f'<g class="block" data-block="{escape(".".join(scope))}">'
            f'<rect x="{left:.0f}" y="{top:.0f}" width="{right - left:.0f}" '
            f'height="{bottom - top:.0f}" rx="8" fill="#f4f6fb" stroke="#9aa7c7"/></g>'
        )
        # Labels after every frame, so that an inner frame never covers an outer label.
        title = ".".join(scope)
        if plan is not None:
            trained = sum(b.node.params.trainable for b in members if not b.node.frozen)
            title += f"  ({trained:,} trainable in {plan.phase.name})"
        labels.append(
            f'<text x="{left + 8:.0f}" y="{top + 12:.0f}" class="blocklabel" '
            f'data-block="{escape(".".join(scope))}">{escape(title)}</text>'
        )
    parts += labels
    # Edges: down from the source, across in the gap above the target, down into it; each
    # value's shape is written once, under the box that makes it.
    labelled: set[str] = set()
    for box in placed.boxes.values():
        for value in box.node.inputs:
            source = placed.redirect.get((box.node.name, value), value)
            if any(source == s and box.node.name == j for s, j, _ in placed.skips):
                continue
            x1, _, y1 = center(source)
            x2, y2, _ = center(box.node.name)
            turn = y2 - GAP_Y / 2
            parts.append(
                f'<path class="edge" d="M{x1:.0f},{y1:.0f} L{x1:.0f},{turn:.0f} '
                f'L{x2:.0f},{turn:.0f} L{x2:.0f},{y2:.0f}"/>'
            )
            shape = shapes.get(source)
            if shape is not None and source not in labelled:
                labelled.add(source)
                parts.append(
                    f'<text class="shape" x="{x1 + 6:.0f}" y="{y1 + 12:.0f}">'
                    f"{escape(format_shape(shape))}</text>"
                )
    for source, join, lane in placed.skips:
        x1, _, y1 = center(source)
        x2, y2, _ = center(join)
        x = offset + lane
        parts.append(
            f'<path class="edge skip" d="M{x1:.0f},{y1:.0f} L{x:.0f},{y1 + 10:.0f} '
            f'L{x:.0f},{y2 - 10:.0f} L{x2:.0f},{y2:.0f}"/>'
        )
    # Boxes: the input, then every layer.
    h, w, c = graph.input_shape or (0, 0, 0)
    parts.append(_box(offset, offset, "input", f"{h}x{w}x{c}", "", "input"))
    for value, x, y in placed.reads.values():
        parts.append(_read(offset + x, offset + y, value))
    for box in placed.boxes.values():
        node = box.node
        parts.append(
            _box(
                offset + box.x,
                offset + box.y,
                node.name,
                node.label,
                _summary(node),
                node.kind,
                node.frozen,
                node.details,
            )
        )
    width, height = placed.width + 40, placed.height + BOX_H
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}">'
        f"<title>{escape(spec.name)}</title><style>{STYLE}</style>" + "".join(parts) + "</svg>\n"
    )


def _summary(node: Shown) -> str:
    """A box's third line: its output shape and parameters."""
    shape = format_shape(node.shape) if node.shape else "?"
    params = plural(node.params.total, "param") if node.params.total else ""
    return f"{shape}  {params}"


def _box(
    x: float,
    y: float,
    name: str,
    label: str,
    detail: str,
    kind: str,
    frozen: bool = False,
    details: str = "",
) -> str:
    fill = "#d9dde6" if frozen else "#ffffff"
    state = ' data-frozen="true"' if frozen else ""
    hover = f"<title>{escape(details)}</title>" if details else ""
    return (
        f'<g class="layer" data-layer="{escape(name)}" data-kind="{escape(kind)}"{state}>{hover}'
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="5" '
        f'fill="{fill}" stroke="#5b6b8c"/>'
        f'<text class="name" x="{x + 8:.0f}" y="{y + 16:.0f}">{escape(name)}</text>'
        f'<text class="detail" x="{x + 8:.0f}" y="{y + 32:.0f}">{escape(label)}</text>'
        f'<text class="detail" x="{x + 8:.0f}" y="{y + 48:.0f}">{escape(detail)}</text></g>'
    )


def _read(x: float, y: float, value: str) -> str:
    return (
        f'<g class="read" data-from="{escape(value)}"><rect x="{x:.0f}" y="{y:.0f}" '
        f'width="{BOX_W}" height="{READ_H}" rx="12" fill="#f4f6fb" stroke="#9aa7c7" '
        f'stroke-dasharray="4 3"/><text class="detail" x="{x + 12:.0f}" y="{y + 16:.0f}">'
        f"from {escape(value)}</text></g>"
    )


def html(spec: Spec, phase: str | None = None, depth: int | None = None) -> str:
    """One self-contained page that works offline: the network's layers, blocks and nesting as
    data, drawn by the page's script exactly as `svg` draws (_DRAW_SCRIPT, the placement
    ported; tests/test_diagram_port.py runs it in Node.js against `svg`), so that each block
    collapses and expands on its own: click a block's label to collapse it,
    a collapsed block to expand it; buttons collapse every block deeper than a level. Drag to
    pan, the wheel zooms around the pointer, hover shows a layer's details; the URL's
    `#depth=N` or `#collapsed=a,b.c` opens a view, and `depth` is the view it opens without
    one."""
    graph = spec.model
    plan = next((p for p in spec.phases if p.phase.name == phase), None) if phase else None
    frozen = plan.frozen if plan is not None else frozenset()
    scopes = dict.fromkeys(
        n.scope[:depth] for n in graph.nodes for depth in range(1, len(n.scope) + 1)
    )
    blocks = {}
    for scope in scopes:
        box = block_box(graph, scope, frozen)
        blocks[".".join(scope)] = _box_data(box) if box else {"collapsible": False}
    h, w, c = graph.input_shape or (0, 0, 0)
    data = {
        "name": spec.name,
        "input": f"{h}x{w}x{c}",
        "inputShape": format_shape(graph.input_shape) if graph.input_shape else None,
        "layers": {n.name: _box_data(_layer_box(n, frozen)) for n in graph.nodes},
        "blocks": blocks,
        "order": [n.name for n in graph.nodes],
        "tree": _tree_data(tree_of(graph)),
        "phase": plan.phase.name if plan is not None else None,
        # The blocks each "blocks N deep" button collapses, for N = 0, 1, ... (as --depth N).
        "presets": [
            preset(graph, frozen, level)
            for level in range(max((len(n.scope) for n in graph.nodes), default=0))
        ],
        "start": depth,
        "style": STYLE,
        "sizes": {
            "BOX_W": BOX_W,
            "BOX_H": BOX_H,
            "GAP_X": GAP_X,
            "GAP_Y": GAP_Y,
            "SKIP": SKIP,
            "READ_H": READ_H,
            "PAD": PAD,
        },
    }
    totals = graph.params
    caption = (
        f"{escape(spec.name)}: {plural(len(graph.nodes), 'layer')}, "
        f"{plural(totals.total, 'parameter')} "
        f"({totals.trainable:,} trainable)" + (f", phase {escape(phase)}" if phase else "")
    )
    # Inside <script>, only "</" could end the element early.
    network = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        _PAGE.replace("{draw}", _DRAW_SCRIPT.rstrip("\n"))
        .replace("{title}", escape(spec.name))
        .replace("{caption}", caption)
        .replace("{network}", network)
    )


def _box_data(box: Shown) -> dict[str, Any]:
    """What the page needs to draw a box, with the texts `svg` writes."""
    return {
        "collapsible": box.kind == "block",
        "kind": box.kind,
        "inputs": list(box.inputs),
        "scope": list(box.scope),
        "label": box.label,
        "summary": _summary(box),
        "shape": format_shape(box.shape) if box.shape else None,
        "frozen": box.frozen,
        "trainable": box.params.trainable,
        "details": box.details,
    }


def _tree_data(items: list[Any]) -> list[Any]:
    return [
        {
            "fork": item.layer,
            "columns": [_tree_data(column) for column in item.columns],
            "skip": item.skip,
        }
        if isinstance(item, Fork)
        else {"from": item.value}
        if isinstance(item, Read)
        else item
        for item in items
    ]


# The drawing the page shows for a set of collapsed blocks: a port of `placement` (with
# `collapsed` and `_place`) and `svg`, which tests/test_diagram_port.py holds equal to them on
# every shipped spec and many sets of collapsed blocks, in Node.js (no browser needed). A
# function of the page's data alone, without the document, so that it runs there too.
_DRAW_SCRIPT = """\
class NotOneRun extends Error {
  constructor(block) {
    super(`block ${block} is not one run of layers`);
    this.block = block;
  }
}

// As diagram.placement and diagram.svg: the drawing with the blocks in `wanted` collapsed
// (the outermost of nested ones; a block that is not one run of layers stays open), and
// the blocks that were: {width, height, svg, collapsed}.
const cnnspecDrawing = (data, wanted) => {
  const S = data.sizes;
  const esc = (text) => String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;")
    .replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#x27;");
  const f = (value) => value.toFixed(0);

  // As diagram.collapsed: each collapsed block's run of items becomes the block's name.
  const isRead = (item) => typeof item !== "string" && "from" in item;
  const collapse = (items, owner) => {
    const placed = new Set();
    const itemOwner = (item) => {
      if (typeof item === "string") return owner[item] ?? null;
      if (isRead(item)) return null;
      const owners = new Set([owner[item.fork] ?? null]);
      for (const column of item.columns) {
        for (const inner of column) if (!isRead(inner)) owners.add(itemOwner(inner));
      }
      return owners.size === 1 ? [...owners][0] : null;
    };
    const walk = (chain) => {
      const result = [];
      for (const item of chain) {
        const block = itemOwner(item);
        if (block !== null) {
          if (result.length && result[result.length - 1] === block) continue;
          if (placed.has(block)) throw new NotOneRun(block);
          placed.add(block);
          result.push(block);
        } else if (isRead(item)) {
          result.push(item);
        } else if (typeof item !== "string") {
          if (item.fork in owner) throw new NotOneRun(owner[item.fork]);
          result.push({fork: item.fork, columns: item.columns.map(walk), skip: item.skip});
        } else if (item in owner) {
          throw new NotOneRun(owner[item]);
        } else {
          result.push(item);
        }
      }
      return result;
    };
    return walk(items);
  };

  // Keys of (reader, value) pairs, joined by a character no name holds, written as an
  // escape: a NUL byte in the file would make it binary to grep and to editors.
  const pair = (a, b) => `${a}\\u0000${b}`;

  // As diagram._place: a chain from (x, y) down; returns its [width, bottom].
  const place = (items, x, y, out, visible, incoming = null) => {
    let width = S.BOX_W;
    for (const item of items) {
      if (isRead(item)) {
        const key = `from ${out.reads.size + 1}`;
        out.reads.set(key, {value: item.from, x, y});
        incoming = [visible(item.from), key];
        y += S.READ_H + S.GAP_Y;
        continue;
      }
      let name = item;
      if (typeof item !== "string") {
        let left = x, bottom = y;
        for (const column of item.columns) {
          if (column.length) {
            const [w, b] = place(column, left, y, out, visible, incoming);
            left += w + S.GAP_X;
            bottom = Math.max(bottom, b);
            if (column.length === 1 && isRead(column[0])) {
              out.redirect.set(pair(item.fork, visible(column[0].from)), `from ${out.reads.size}`);
            }
          }
        }
        if (item.skip !== null) {
          let source = visible(item.skip);
          if (incoming !== null && incoming[0] === source) {
            out.redirect.set(pair(item.fork, source), incoming[1]);
            source = incoming[1];
          }
          out.skips.push([source, item.fork, left - S.GAP_X + S.SKIP]);
          left += S.SKIP;
        }
        width = Math.max(width, left - x - S.GAP_X);
        y = bottom;
        name = item.fork;
      } else if (incoming !== null) {
        out.redirect.set(pair(name, incoming[0]), incoming[1]);
      }
      incoming = null;
      out.boxes.set(name, {x, y});
      y += S.BOX_H + S.GAP_Y;
    }
    return [width, y];
  };

  const box = (x, y, name, info) => {
    const fill = info.frozen ? "#d9dde6" : "#ffffff";
    const state = info.frozen ? ' data-frozen="true"' : "";
    const hover = info.details ? `<title>${esc(info.details)}</title>` : "";
    return `<g class="layer" data-layer="${esc(name)}" data-kind="${esc(info.kind)}"${state}>` +
      `${hover}<rect x="${f(x)}" y="${f(y)}" width="${S.BOX_W}" height="${S.BOX_H}" rx="5" ` +
      `fill="${fill}" stroke="#5b6b8c"/>` +
      `<text class="name" x="${f(x + 8)}" y="${f(y + 16)}">${esc(name)}</text>` +
      `<text class="detail" x="${f(x + 8)}" y="${f(y + 32)}">${esc(info.label)}</text>` +
      `<text class="detail" x="${f(x + 8)}" y="${f(y + 48)}">${esc(info.summary)}</text></g>`;
  };

  // As diagram.svg, for the blocks in `collapsed`; the outermost collapsed block around a
  // layer owns it.
  const drawing = (collapsed) => {
    const owner = {};
    for (const name of data.order) {
      const scope = data.layers[name].scope;
      for (let depth = 1; depth <= scope.length; depth++) {
        const block = scope.slice(0, depth).join(".");
        if (collapsed.has(block)) {
          owner[name] = block;
          break;
        }
      }
    }
    const tree = collapse(data.tree, owner);
    const visible = (value) => owner[value] ?? value;
    const info = (name) => (name in data.layers && !(name in owner) ? data.layers[name]
      : data.blocks[name]);
    const first = visible(data.order[0]);
    const depth = info(first).scope.length;
    const placed = {boxes: new Map(), skips: [], reads: new Map(), redirect: new Map()};
    const [w, h] = place(tree, 0, S.BOX_H + S.GAP_Y + 14 * depth, placed, visible);
    const width = Math.max(w, S.BOX_W) + 2 * S.PAD + 40;
    const height = h + 2 * S.PAD + S.BOX_H;
    const offset = S.PAD;
    const center = (name) => {
      if (name === "input") return [offset + S.BOX_W / 2, offset + S.BOX_H / 2, offset + S.BOX_H];
      const read = placed.reads.get(name);
      if (read !== undefined) {
        return [offset + read.x + S.BOX_W / 2, offset + read.y, offset + read.y + S.READ_H];
      }
      const b = placed.boxes.get(name);
      return [offset + b.x + S.BOX_W / 2, offset + b.y, offset + b.y + S.BOX_H];
    };
    const parts = [];
    const frames = new Map();
    for (const [name, at] of placed.boxes) {
      const scope = info(name).scope;
      for (let d = 1; d <= scope.length; d++) {
        const key = scope.slice(0, d).join(".");
        if (!frames.has(key)) frames.set(key, {scope: scope.slice(0, d), members: []});
        frames.get(key).members.push({name, at, scope});
      }
    }
    const labels = [];
    const ordered = [...frames.values()].sort((a, b) => a.scope.length - b.scope.length);
    for (const {scope, members} of ordered) {
      const inset = (S.PAD * (scope.length - 1)) / 2;
      const inner = Math.max(...members.map((m) => m.scope.length)) - scope.length;
      const left = Math.min(...members.map((m) => m.at.x)) + offset - S.PAD + inset;
      const top = Math.min(...members.map((m) => m.at.y)) + offset - S.PAD - 14 - 14 * inner + inset;
      const right = Math.max(...members.map((m) => m.at.x)) + offset + S.BOX_W + S.PAD - inset;
      const bottom = Math.max(...members.map((m) => m.at.y)) + offset + S.BOX_H + S.PAD - inset;
      const key = scope.join(".");
      parts.push(`<g class="block" data-block="${esc(key)}"><rect x="${f(left)}" ` +
        `y="${f(top)}" width="${f(right - left)}" height="${f(bottom - top)}" rx="8" ` +
        `fill="#f4f6fb" stroke="#9aa7c7"/></g>`);
      let title = key;
      if (data.phase !== null) {
        const trained = members.reduce((sum, m) => sum + (info(m.name).frozen ? 0
          : info(m.name).trainable), 0);
        title += `  (${trained.toLocaleString("en-US")} trainable in ${data.phase})`;
      }
      const can = data.blocks[key].collapsible ? " collapsible" : "";
      labels.push(`<text x="${f(left + 8)}" y="${f(top + 12)}" class="blocklabel${can}" ` +
        `data-block="${esc(key)}">${esc(title)}</text>`);
    }
    parts.push(...labels);
    const labelled = new Set();
    const skipped = new Set(placed.skips.map(([source, join]) => pair(source, join)));
    for (const name of placed.boxes.keys()) {
      for (const input of info(name).inputs) {
        const value = visible(input);
        const source = placed.redirect.get(pair(name, value)) ?? value;
        if (skipped.has(pair(source, name))) continue;
        const [x1, , y1] = center(source);
        const [x2, y2] = center(name);
        const turn = y2 - S.GAP_Y / 2;
        parts.push(`<path class="edge" d="M${f(x1)},${f(y1)} L${f(x1)},${f(turn)} ` +
          `L${f(x2)},${f(turn)} L${f(x2)},${f(y2)}"/>`);
        const shape = source === "input" ? data.inputShape
          : placed.reads.has(source) ? null : info(source).shape;
        if (shape !== null && !labelled.has(source)) {
          labelled.add(source);
          parts.push(`<text class="shape" x="${f(x1 + 6)}" y="${f(y1 + 12)}">${esc(shape)}</text>`);
        }
      }
    }
    for (const [source, join, lane] of placed.skips) {
      const [x1, , y1] = center(source);
      const [x2, y2] = center(join);
      const x = offset + lane;
      parts.push(`<path class="edge skip" d="M${f(x1)},${f(y1)} L${f(x)},${f(y1 + 10)} ` +
        `L${f(x)},${f(y2 - 10)} L${f(x2)},${f(y2)}"/>`);
    }
    parts.push(box(offset, offset, "input",
      {kind: "input", label: data.input, summary: "", frozen: false, details: ""}));
    for (const {value, x, y} of placed.reads.values()) {
      parts.push(`<g class="read" data-from="${esc(value)}"><rect x="${f(offset + x)}" ` +
        `y="${f(offset + y)}" width="${S.BOX_W}" height="${S.READ_H}" rx="12" fill="#f4f6fb" ` +
        `stroke="#9aa7c7" stroke-dasharray="4 3"/><text class="detail" x="${f(offset + x + 12)}" ` +
        `y="${f(offset + y + 16)}">from ${esc(value)}</text></g>`);
    }
    for (const [name, at] of placed.boxes) parts.push(box(offset + at.x, offset + at.y, name, info(name)));
    return {width, height, svg: `<svg xmlns="http://www.w3.org/2000/svg" data-width="${f(width)}" ` +
      `data-height="${f(height)}" viewBox="0 0 ${f(width)} ${f(height)}" ` +
      `preserveAspectRatio="xMinYMin meet"><title>${esc(data.name)}</title>` +
      `<style>${data.style}</style>${parts.join("")}</svg>`};
  };

  // As diagram.placement: a block that is not one run of layers stays open.
  const collapsed = new Set(wanted);
  for (;;) {
    try {
      return {...drawing(collapsed), collapsed};
    } catch (error) {
      if (!(error instanceof NotOneRun)) throw error;
      collapsed.delete(error.block);
    }
  }
};
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{margin:0;font-family:ui-sans-serif,system-ui,sans-serif;color:#1d2433;background:#fff}
header{padding:8px 12px;border-bottom:1px solid #d5dae6;display:flex;gap:8px;
align-items:center;flex-wrap:wrap}
header span{margin-right:12px;font-weight:600}
button{border:1px solid #9aa7c7;background:#f4f6fb;border-radius:4px;padding:3px 8px}
button.on{background:#46507a;color:#fff}
#view{position:absolute;top:48px;left:0;right:0;bottom:0;overflow:hidden;cursor:grab}
#view svg{width:100%;height:100%}
g.layer[data-kind=block],text.blocklabel.collapsible{cursor:pointer}
</style></head><body>
<header><span>{caption}</span><span id="presets"></span><button id="fit">fit</button></header>
<div id="view"></div>
<script type="application/json" id="network">{network}</script>
<script>
{draw}
(() => {
  const data = JSON.parse(document.getElementById("network").textContent);
  const view = document.getElementById("view");

  // The blocks drawn as one box each (as a click, a button or the URL asked).
  let collapsed = new Set();

  // What is on screen: the region of the drawing the view shows (pan and zoom keep it).
  let region = null;
  let full = null;
  const apply = () => view.querySelector("svg").setAttribute("viewBox",
    `${region.x} ${region.y} ${region.w} ${region.h}`);
  // "every layer", then "blocks N deep" as --depth N collapses (diagram.preset).
  const presets = [["every layer", () => new Set()]];
  data.presets.forEach((blocks, depth) => {
    presets.push([`blocks ${depth} deep`, () => new Set(blocks)]);
  });
  const same = (a, b) => a.size === b.size && [...a].every((name) => b.has(name));
  const render = () => {
    const drawn = cnnspecDrawing(data, collapsed);
    collapsed = drawn.collapsed;
    view.innerHTML = drawn.svg;
    full = {x: 0, y: 0, w: drawn.width, h: drawn.height};
    if (region === null) {
      // Opened at full size from the top, as a page reads; "fit" shows it whole.
      region = {x: 0, y: 0, w: view.clientWidth || drawn.width, h: view.clientHeight || drawn.height};
    }
    apply();
    document.querySelectorAll("#presets button").forEach((button, index) =>
      button.classList.toggle("on", same(presets[index][1](), collapsed)));
    const hash = collapsed.size ? `#collapsed=${[...collapsed].sort().join(",")}` : "";
    if (location.hash !== hash) history.replaceState(null, "", hash || location.pathname);
  };
  const buttons = document.getElementById("presets");
  presets.forEach(([title, blocks]) => {
    const button = document.createElement("button");
    button.textContent = title;
    button.addEventListener("click", () => {
      collapsed = blocks();
      render();
    });
    buttons.appendChild(button);
  });
  document.getElementById("fit").addEventListener("click", () => {
    region = {...full};
    apply();
  });
  let drag = null;
  view.addEventListener("pointerdown", (e) => {
    drag = {x: e.clientX, y: e.clientY, moved: false};
  });
  view.addEventListener("pointermove", (e) => {
    if (!drag || (e.buttons & 1) === 0) return;
    const scale = region.w / view.clientWidth;
    if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 2) drag.moved = true;
    region.x -= (e.clientX - drag.x) * scale;
    region.y -= (e.clientY - drag.y) * scale;
    drag = {x: e.clientX, y: e.clientY, moved: drag.moved};
    apply();
  });
  view.addEventListener("wheel", (e) => {
    e.preventDefault();
    const factor = e.deltaY > 0 ? 1.15 : 1 / 1.15;
    const rect = view.querySelector("svg").getBoundingClientRect();
    const scale = Math.max(region.w / rect.width, region.h / rect.height);
    const px = region.x + (e.clientX - rect.left) * scale;
    const py = region.y + (e.clientY - rect.top) * scale;
    region.x = px - (px - region.x) * factor;
    region.y = py - (py - region.y) * factor;
    region.w *= factor;
    region.h *= factor;
    apply();
  }, {passive: false});
  // A collapsed block expands; a block's label collapses it (not at the end of a drag).
  view.addEventListener("click", (e) => {
    if (drag && drag.moved) return;
    const block = e.target.closest("g.layer[data-kind=block]");
    const label = e.target.closest("text.blocklabel.collapsible");
    if (block) {
      collapsed.delete(block.dataset.layer);
    } else if (label) {
      const name = label.dataset.block;
      collapsed = new Set([...collapsed].filter((other) => !other.startsWith(`${name}.`)));
      collapsed.add(name);
    } else {
      return;
    }
    render();
  });
  const asked = decodeURIComponent(location.hash.slice(1)) ||
    (data.start === null ? "" : `depth=${data.start}`);
  if (asked.startsWith("depth=")) {
    const preset = presets[Number(asked.slice(6)) + 1];
    if (preset) collapsed = preset[1]();
  } else if (asked.startsWith("collapsed=")) {
    collapsed = new Set(asked.slice(10).split(",").filter((name) =>
      data.blocks[name] && data.blocks[name].collapsible));
  }
  render();
})();
</script></body></html>
"""
