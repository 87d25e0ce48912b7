"""Network diagrams from the checked IR, without a deep-learning framework or a Graphviz binary.

The layout follows the language's own nesting (cnnspec.importing.structure nests any DAG the
same way): a chain of layers runs top to bottom; the branches of a join stand side by side
above it; a residual's body and shortcut are two columns (an identity shortcut is an edge down
the side). Nested joins never cross, so no general graph-layout search is needed. Each box
shows the layer's name, kind and main arguments, its output shape and parameter count; each
edge carries the shape it moves; blocks are labelled frames around their layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

from cnnspec.ir import Graph, Node, Spec
from cnnspec.layers import format_shape
from cnnspec.registry import Params, Shape

BOX_W, BOX_H = 280, 56  # a layer's box: its name; kind and arguments; shape and parameters
GAP_Y, GAP_X = 40, 28  # between boxes down a chain, and between side-by-side branches
SKIP = 22  # the lane an identity shortcut takes beside its body
PAD = 10  # a block's frame around its layers


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
    width: float = 0.0
    height: float = 0.0


def shown(graph: Graph, frozen: frozenset[str], depth: int | None = None) -> list[Shown]:
    """The boxes to draw, in order: every layer, or with `depth`, every block nested deeper
    than `depth` collapsed into one box (a block that does not take one input and give one
    output in order, which a join can make, stays open)."""
    boxes = [
        Shown(
            n.name,
            n.kind,
            n.inputs,
            n.scope,
            _label(n),
            n.output_shape,
            n.params,
            n.name in frozen and n.params.total > 0,
            (n.name,),
            _details(n, frozen),
        )
        for n in graph.nodes
    ]
    if depth is None:
        return boxes
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, node in enumerate(graph.nodes):
        if len(node.scope) > depth:
            groups.setdefault(node.scope[: depth + 1], []).append(index)
    position = {node.name: index for index, node in enumerate(graph.nodes)}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.nodes):
        for source in node.inputs:
            consumers.setdefault(source, []).append(index)
    renamed: dict[str, str] = {}
    replaced: dict[int, Shown | None] = {}
    for scope, indices in groups.items():
        members = {graph.nodes[i].name for i in indices}
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
        if len(outside) != 1 or len(inputs) != 1 or not later:
            continue
        name = ".".join(scope)
        if name in position:
            continue
        params = Params()
        for i in indices:
            params = params + graph.nodes[i].params
        out = graph.node(outside[0])
        count = len(indices)
        replaced.update({i: None for i in indices})
        replaced[last] = Shown(
            name,
            "block",
            tuple(inputs),
            scope[:-1],
            f"{count} layer{'s' * (count != 1)}",
            out.output_shape,
            params,
            params.total > 0
            and all(m in frozen for m in members if graph.nodes[position[m]].params.total),
            tuple(graph.nodes[i].name for i in indices),
            f"block {name}: {count} layers, {params.total:,} parameters "
            f"({params.trainable:,} trainable); click to expand",
        )
        renamed.update({n: name for n in members})
    result = []
    for index, box in enumerate(boxes):
        if index in replaced:
            if replaced[index] is None:
                continue
            box = replaced[index]  # type: ignore[assignment]
        box.inputs = tuple(renamed.get(i, i) for i in box.inputs)
        result.append(box)
    return result


def layout(graph: Graph, boxes: list[Shown]) -> Layout:
    from cnnspec.importing.network import Layer, Network
    from cnnspec.importing.structure import nest

    by_name = {box.name: box for box in boxes}
    output = graph.output or graph.INPUT
    output = next((b.name for b in boxes if output in b.members), output)
    network = Network(
        graph.name,
        graph.input_shape or (1, 1, 1),
        [Layer(b.name, b.kind, {}, b.inputs) for b in boxes],
        output,
    )
    result = Layout()
    # Room under the input for the labels of the blocks that start the model.
    depth = max((len(b.scope) for b in boxes[:1]), default=0)
    width, height = _place(nest(network), 0.0, BOX_H + GAP_Y + 14 * depth, by_name, result)
    result.width, result.height = max(width, BOX_W) + 2 * PAD, height + 2 * PAD
    return result


def _place(items: list[Any], x: float, y: float, nodes: dict[str, Shown], out: Layout):
    """Place a chain from (x, y) down; returns its (width, bottom)."""
    from cnnspec.importing.structure import Join, Residual

    width = BOX_W
    for item in items:
        if isinstance(item, Join | Residual):
            columns = item.branches if isinstance(item, Join) else [item.body, item.shortcut or []]
            left = x
            bottom = y
            for column in columns:
                if column:
                    w, b = _place(column, left, y, nodes, out)
                    left += w + GAP_X
                    bottom = max(bottom, b)
            empty = (
                [i for i, branch in enumerate(item.branches) if not branch]
                if isinstance(item, Join)
                else ([1] if item.shortcut is None else [])
            )
            if empty:
                # The identity path runs down a lane of its own, right of the branches.
                source = item.layer.inputs[empty[0]] if isinstance(item, Join) else None
                source = source or next(i for i in item.layer.inputs if i not in _ends(item))
                out.skips.append((source, item.layer.name, left - GAP_X + SKIP))
                left += SKIP
            width = max(width, left - x - GAP_X)
            y = bottom
            node = item.layer
        else:
            node = item
        out.boxes[node.name] = Box(nodes[node.name], x, y)
        y += BOX_H + GAP_Y
    return width, y


def _ends(item: Any) -> set[str]:
    """The values a join's non-empty branches end in."""
    from cnnspec.importing.structure import Join, end_of

    branches = item.branches if isinstance(item, Join) else [item.body, item.shortcut or []]
    return {end_of(branch, "") for branch in branches if branch}


def _label(node: Node) -> str:
    """The layer as a spec writes it, with the arguments the spec gave: `conv2d(64, kernel=1)`."""
    from cnnspec.importing.network import Spelled
    from cnnspec.importing.render import call_text

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
        f"{node.params.total:,} parameters ({node.params.trainable:,} trainable, "
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


def svg(spec: Spec, phase: str | None = None, depth: int | None = None) -> str:
    """The diagram; with `phase`, the layers that phase freezes are shaded and each block's
    label says how many of its parameters the phase trains; with `depth`, blocks nested
    deeper are one box each."""
    graph = spec.model
    plan = next((p for p in spec.phases if p.phase.name == phase), None) if phase else None
    frozen = plan.frozen if plan is not None else frozenset()
    boxes = shown(graph, frozen, depth)
    from cnnspec.importing.network import ImportFailure

    try:
        placed = layout(graph, boxes)
    except ImportFailure:  # a collapse that breaks the nesting: every layer, then
        boxes = shown(graph, frozen)
        placed = layout(graph, boxes)
    shapes: dict[str, Any] = dict(graph.value_shapes()) if graph.input_shape else {}
    shapes.update({b.name: b.shape for b in boxes})
    parts: list[str] = []
    offset = PAD

    def center(name: str) -> tuple[float, float, float]:
        if name == graph.INPUT:
            return offset + BOX_W / 2, offset + BOX_H / 2, offset + BOX_H
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
            f'<text x="{left + 8:.0f}" y="{top + 12:.0f}" class="blocklabel">{escape(title)}</text>'
        )
    parts += labels
    # Edges: down from the source, across in the gap above the target, down into it; each
    # value's shape is written once, under the box that makes it.
    labelled: set[str] = set()
    for box in placed.boxes.values():
        for source in box.node.inputs:
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
    for box in placed.boxes.values():
        node = box.node
        shape = format_shape(node.shape) if node.shape else "?"
        params = f"{node.params.total:,} params" if node.params.total else ""
        parts.append(
            _box(
                offset + box.x,
                offset + box.y,
                node.name,
                node.label,
                f"{shape}  {params}",
                node.kind,
                node.frozen,
                node.details,
            )
        )
    width, height = placed.width + 40, placed.height + BOX_H
    style = (
        "text{font-family:ui-sans-serif,system-ui,sans-serif;font-size:12px;fill:#1d2433}"
        ".name{font-weight:600}.detail{fill:#4a5468;font-size:11px}"
        ".shape{fill:#6b7280;font-size:10px}.blocklabel{fill:#46507a;font-size:11px;"
        "font-weight:600}.edge{fill:none;stroke:#8a94a6;stroke-width:1.3}"
        ".skip{stroke-dasharray:4 3}"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}">'
        f"<title>{escape(spec.name)}</title><style>{style}</style>" + "".join(parts) + "</svg>\n"
    )


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


def html(spec: Spec, phase: str | None = None) -> str:
    """One self-contained page that works offline: the diagram at every depth (all layers,
    then each level of blocks collapsed), drag to pan, wheel to zoom, hover for a layer's
    details; clicking a collapsed block opens the next level, clicking a block's label closes
    its level."""
    deepest = max((len(node.scope) for node in spec.model.nodes), default=0)
    views = [("every layer", svg(spec, phase, None))]
    views += [(f"blocks {depth} deep", svg(spec, phase, depth)) for depth in range(deepest)]
    buttons = "".join(
        f'<button data-view="{index}">{escape(title)}</button>'
        for index, (title, _) in enumerate(views)
    )
    panes = "".join(
        f'<div class="view" data-view="{index}" data-depth="{index - 1}"'
        f"{' hidden' if index else ''}>{drawing}</div>"
        for index, (_, drawing) in enumerate(views)
    )
    totals = spec.model.params
    caption = (
        f"{escape(spec.name)}: {len(spec.model.nodes)} layers, {totals.total:,} parameters "
        f"({totals.trainable:,} trainable)" + (f", phase {escape(phase)}" if phase else "")
    )
    return (
        _PAGE.replace("{title}", escape(spec.name))
        .replace("{caption}", caption)
        .replace("{buttons}", buttons)
        .replace("{panes}", panes)
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{margin:0;font-family:ui-sans-serif,system-ui,sans-serif;color:#1d2433}
header{padding:8px 12px;border-bottom:1px solid #d5dae6;display:flex;gap:8px;
align-items:center;flex-wrap:wrap}
header span{margin-right:12px;font-weight:600}
button{border:1px solid #9aa7c7;background:#f4f6fb;border-radius:4px;padding:3px 8px}
button.on{background:#46507a;color:#fff}
.view{position:absolute;top:48px;left:0;right:0;bottom:0;overflow:hidden;cursor:grab}
.view svg{width:100%;height:100%}
g.layer[data-kind=block]{cursor:pointer}
text.blocklabel{cursor:pointer}
</style></head><body>
<header><span>{caption}</span>{buttons}<button id="fit">fit</button></header>
{panes}
<script>
(() => {
  const views = [...document.querySelectorAll(".view")];
  const boxes = new Map();
  for (const view of views) {
    const svg = view.querySelector("svg");
    const [x, y, w, h] = svg.getAttribute("viewBox").split(" ").map(Number);
    boxes.set(view, {x, y, w, h, full: {x, y, w, h}});
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");
  }
  const apply = (view) => {
    const b = boxes.get(view);
    view.querySelector("svg").setAttribute("viewBox", `${b.x} ${b.y} ${b.w} ${b.h}`);
  };
  const show = (index) => {
    views.forEach((v, i) => (v.hidden = i !== index));
    const view = views[index];
    const b = boxes.get(view);
    if (!b.shown) {
      // Opened at full size from the top, as a page reads; "fit" shows it whole.
      const svg = view.querySelector("svg");
      Object.assign(b, {x: 0, y: 0, w: svg.clientWidth || b.w, h: svg.clientHeight || b.h});
      b.shown = true;
      apply(view);
    }
    document.querySelectorAll("header button[data-view]").forEach((b, i) =>
      b.classList.toggle("on", i === index));
  };
  document.querySelectorAll("header button[data-view]").forEach((button) =>
    button.addEventListener("click", () => show(Number(button.dataset.view))));
  document.getElementById("fit").addEventListener("click", () => {
    for (const view of views) {
      Object.assign(boxes.get(view), boxes.get(view).full);
      apply(view);
    }
  });
  for (const view of views) {
    const svg = view.querySelector("svg");
    let drag = null;
    view.addEventListener("pointerdown", (e) => {
      drag = {x: e.clientX, y: e.clientY};
      view.setPointerCapture(e.pointerId);
    });
    view.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const b = boxes.get(view);
      const scale = b.w / svg.clientWidth;
      b.x -= (e.clientX - drag.x) * scale;
      b.y -= (e.clientY - drag.y) * scale;
      drag = {x: e.clientX, y: e.clientY};
      apply(view);
    });
    view.addEventListener("pointerup", () => (drag = null));
    view.addEventListener("wheel", (e) => {
      e.preventDefault();
      const b = boxes.get(view);
      const factor = e.deltaY > 0 ? 1.15 : 1 / 1.15;
      const rect = svg.getBoundingClientRect();
      const px = b.x + ((e.clientX - rect.left) / rect.width) * b.w;
      const py = b.y + ((e.clientY - rect.top) / rect.height) * b.h;
      b.x = px - (px - b.x) * factor;
      b.y = py - (py - b.y) * factor;
      b.w *= factor;
      b.h *= factor;
      apply(view);
    }, {passive: false});
    // A collapsed block opens one level deeper; a block's label closes the level it is on.
    svg.addEventListener("click", (e) => {
      const block = e.target.closest("g.layer[data-kind=block]");
      const depth = Number(view.dataset.depth);
      if (block) {
        show(depth + 2 < views.length ? depth + 2 : 0);
      } else if (e.target.classList.contains("blocklabel")) {
        const level = e.target.textContent.split("  ")[0].split(".").length - 1;
        show(level + 1);
      }
    });
  }
  show(0);
})();
</script></body></html>
"""
