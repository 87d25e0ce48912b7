"""What an editor shows about a spec: hovers, inlay hints, completions, definitions and the
outline, computed from a compilation and character offsets.

Framework-free and protocol-free: the language server (`cnnspec.lsp`) converts positions and
wraps these in LSP types, and tests can call them directly. Every function tolerates a spec
that does not compile: it answers from whatever the compiler still knows.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from cnnspec import syntax as ast
from cnnspec.backbones import BACKBONES, BackboneArgs
from cnnspec.binding import Bound, describe
from cnnspec.compiler import Compilation
from cnnspec.ir import Graph, Node
from cnnspec.layers import format_shape
from cnnspec.lower import MODEL_SECTIONS, MODEL_SETTINGS, TOP_SECTIONS
from cnnspec.metrics import METRICS, Metrics
from cnnspec.reference import default_text, signature
from cnnspec.registry import (
    REGISTRY,
    LayerArgs,
    Params,
    activation_kinds,
    join_kinds,
    user_kinds,
)
from cnnspec.sections import SCHEMAS, SectionSchema
from cnnspec.source import Span
from cnnspec.wording import plural

# --------------------------------------------------------------------------------------------
# Hover


def hover(compilation: Compilation, offset: int) -> str | None:
    """Markdown for the thing at `offset`: a layer, a block, the backbone, or the model."""
    spec = compilation.spec
    if spec is None:
        return None
    graph = spec.model
    backbone = graph.backbone
    if backbone is not None and backbone.span.contains(offset):
        nodes = [n for n in graph.nodes if n.name in backbone.nodes]
        return _group_text(f"backbone {backbone.name}", nodes, backbone.library.keras_class)
    for block, span in graph.blocks.items():
        if span.contains(offset) and not block.startswith("backbone."):
            path = tuple(block.split("."))
            nodes = [n for n in graph.nodes if n.scope[: len(path)] == path]
            return _group_text(f"block {block}", nodes)
    for span, read in graph.references.items():
        if span.contains(offset):
            return _read_text(graph, read)
    made = _instance_at(graph, compilation.source.text, offset)
    if made:
        return _group_text(made[0], made[1])
    nodes = _nodes_at(graph, offset)
    if nodes:
        shapes = graph.value_shapes() if nodes[0].role == "join" and graph.input_shape else {}
        return _node_text(nodes, [shapes.get(i) for i in nodes[0].inputs] if shapes else None)
    word = _word_at(compilation.source.text, offset)
    if word in ("model", graph.name) and offset < _section_body_start(compilation, graph):
        return model_text(compilation)
    return None


def _read_text(graph: Graph, read: str) -> str:
    """What a `from NAME` reads: the value's producer and shape."""
    if read == graph.INPUT:
        return f"**from input**: the model's input, {_shape(graph.input_shape)}"
    if read in graph.blocks:
        path = tuple(read.split("."))
        nodes = [n for n in graph.nodes if n.scope[: len(path)] == path]
        last = nodes[-1] if nodes else None
        shape = _shape(last.output_shape) if last else "?"
        return f"**from {read}**: the output of block {read}, {shape}"
    node = next((n for n in graph.nodes if n.name == read), None)
    shape = _shape(node.output_shape) if node else "?"
    kind = f" ({node.kind})" if node else ""
    return f"**from {read}**: the output of {read}{kind}, {shape}"


def model_text(compilation: Compilation) -> str:
    """The whole model in a few lines: totals, output, and one line per phase."""
    spec = compilation.spec
    assert spec is not None
    graph = spec.model
    params = graph.params
    lines = [
        f"**model {graph.name}**: {plural(len(graph.nodes), 'layer')}, input "
        f"{_shape(graph.input_shape)}, output {_shape(graph.output_shape)}",
        "",
        f"- params: {_params(params)}",
        f"- MACs per example: {graph.macs:,}",
        f"- activation memory per example (float32): {graph.memory_bytes / 2**20:,.1f} MiB",
    ]
    for plan in spec.phases:
        unfrozen = f"; unfreezes {', '.join(plan.unfrozen)}" if plan.unfrozen else ""
        lines.append(
            f"- phase {plan.phase.name}: {plan.trainable_params:,} trainable params{unfrozen}"
        )
    return "\n".join(lines)


def _instance_at(graph: Graph, text: str, offset: int) -> tuple[str, list[Node]] | None:
    """The call of a defined block whose name is at `offset`, and the nodes it made."""
    nodes = [n for n in graph.nodes if n.site is not None and n.site.contains(offset)]
    if not nodes or nodes[0].site is None:
        return None
    site = nodes[0].site
    name = _word_at(text, site.start)
    if name not in graph.definitions or offset > site.start + len(name):
        return None
    return f"{name}({text[site.start + len(name) + 1 : site.end - 1]})", nodes


def _nodes_at(graph: Graph, offset: int) -> list[Node]:
    """The nodes made by the innermost call at `offset` (several when `repeat` copied it), or
    the join whose keyword is there."""
    hits = [n for n in graph.nodes if n.span.contains(offset) and n.role != "join"]
    if not hits:
        hits = [n for n in graph.nodes if n.span.contains(offset) and n.role == "join"]
    if not hits:
        return []
    innermost = min(hits, key=lambda n: n.span.end - n.span.start)
    return [n for n in hits if n.span == innermost.span]


def _node_text(nodes: list[Node], inputs: list[tuple[int, ...] | None] | None = None) -> str:
    """A layer's hover; a join's also shows the shapes of the branches it joins."""
    node = nodes[0]
    layer = node.layer
    activation = layer.fused_activation()
    kind = node.kind + (f" + {activation.kind}" if activation is not None else "")
    copies = f" (and {len(nodes) - 1} more copies)" if len(nodes) > 1 else ""
    field_text = (
        f"{node.receptive_field.size[0]}x{node.receptive_field.size[1]}, "
        f"jump {node.receptive_field.jump[0]}"
        if node.receptive_field
        else "?"
    )
    cls = type(layer)
    usage = f"`{cls.kind} {{ branch {{ ... }} ... }}`" if cls.is_join else None
    lines = [
        f"**{node.name}**{copies}: `{kind}`",
        "",
        *([f"- inputs: {', '.join(_shape(s) for s in inputs)}"] if inputs else []),
        f"- output: {_shape(node.output_shape)}",
        f"- params: {_params(node.params)}",
        f"- MACs: {node.macs:,}",
        f"- receptive field: {field_text}",
        "",
        "---",
        usage or f"`{cls.kind}({signature(cls)})`",
        "",
        cls.doc,
    ]
    return "\n".join(lines)


def _group_text(title: str, nodes: list[Node], keras: str | None = None) -> str:
    params = sum((n.params for n in nodes), Params())
    last = nodes[-1] if nodes else None
    lines = [
        f"**{title}**: {plural(len(nodes), 'layer')}",
        "",
        f"- output: {_shape(last.output_shape if last else None)}",
        f"- params: {_params(params)}",
        f"- MACs: {sum(n.macs for n in nodes):,}",
    ]
    if keras:
        lines.append(f"- keras.applications.{keras}, with its layer names")
    return "\n".join(lines)


def _section_body_start(compilation: Compilation, graph: Graph) -> int:
    brace = compilation.source.text.find("{", graph.span.start)
    return brace if brace >= 0 else graph.span.end


# --------------------------------------------------------------------------------------------
# Inlay hints


def inlay_hints(compilation: Compilation) -> list[tuple[int, str]]:
    """(offset, label) after each layer call: its output shape, and its parameters if any;
    one hint for a whole backbone."""
    spec = compilation.spec
    if spec is None:
        return []
    graph = spec.model
    # Joins and automatic projections point at their `residual`, a backbone's layers at its
    # line: only nodes made by a layer call written in the spec get a hint of their own.
    calls = _call_spans(compilation.document.items) if compilation.document else set()
    by_span: dict[Span, list[Node]] = {}
    sites: dict[Span, list[Node]] = {}
    for node in graph.nodes:
        if node.site is not None:
            # A define's lines are shared by its calls: the hint goes after each call.
            sites.setdefault(node.site, []).append(node)
        elif node.span in calls and node.output_shape is not None:
            by_span.setdefault(node.span, []).append(node)
    # A join's output shows after its closing brace.
    ends = _section_ends(compilation.document.items) if compilation.document else {}
    for node in graph.nodes:
        if (
            node.role == "join"
            and node.site is None
            and node.span in ends
            and node.output_shape is not None
        ):
            by_span.setdefault(ends[node.span], []).append(node)
    hints = []
    for site, nodes in sites.items():
        params = sum(n.params.total for n in nodes)
        hints.append((site.end, f" → {_shape(nodes[-1].output_shape)} · {params:,} params"))
    for span, nodes in by_span.items():
        params = nodes[0].params.total
        copies = f" each, {len(nodes)} copies" if len(nodes) > 1 else ""
        label = f" → {_shape(nodes[-1].output_shape)}"
        if params:
            label += f" · {params:,} params{copies}"
        hints.append((span.end, label))
    if graph.backbone is not None:
        nodes = [n for n in graph.nodes if n.name in graph.backbone.nodes]
        params = sum((n.params.total for n in nodes), 0)
        hints.append(
            (graph.backbone.span.end, f" → {_shape(nodes[-1].output_shape)} · {params:,} params")
        )
    return sorted(hints)


def _section_ends(items: tuple[ast.Item, ...]) -> dict[Span, Span]:
    """Each section's keyword span to the section's whole span."""
    ends: dict[Span, Span] = {}
    for item in items:
        if isinstance(item, ast.Section):
            ends[item.key.span] = item.span
            ends.update(_section_ends(item.items))
    return ends


def _call_spans(items: tuple[ast.Item, ...]) -> set[Span]:
    spans: set[Span] = set()
    for item in items:
        if isinstance(item, ast.Call):
            spans.add(item.span)
        elif isinstance(item, ast.Section):
            spans |= _call_spans(item.items)
    return spans


# --------------------------------------------------------------------------------------------
# Completion


@dataclass(frozen=True, slots=True)
class Completion:
    label: str
    kind: Literal["layer", "keyword", "argument", "value", "backbone", "setting", "call"]
    detail: str = ""
    documentation: str = ""
    insert_text: str | None = None


_WORD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)\s*$")


def completions(text: str, offset: int) -> list[Completion]:
    """What may be typed at `offset`, from the text before it (which need not parse)."""
    if _inside_string_or_comment(text[:offset]):
        return []
    before = ast.STRING_OR_COMMENT.sub(lambda m: " " * len(m.group(0)), text[:offset])
    sections, call = _context(before)
    partial = re.search(r"[A-Za-z0-9_.]*$", before)
    start = partial.start() if partial else offset
    previous = _WORD_BEFORE.search(before[:start])
    defined = _defined_blocks(ast.STRING_OR_COMMENT.sub(lambda m: " " * len(m.group(0)), text))
    if call is not None:
        if call[0] in defined and sections[:1] == ["model"]:
            return [
                Completion(
                    f"{param}=", "argument", f"parameter of {call[0]}", insert_text=f"{param}="
                )
                for param in (*defined[call[0]], "name")
            ]
        return _call_completions(sections, call, before)
    prior = (
        previous.group(1) if previous and not before[:start].rstrip().endswith(("}", ")")) else None
    )
    items = _item_completions(sections, prior)
    if sections[:1] == ["model"] and prior != "backbone" and sections[-1] not in join_kinds():
        items += [
            Completion(name, "call", f"{name}({', '.join(params)})", "a defined block")
            for name, params in defined.items()
        ]
    return items


_DEFINE = re.compile(r"(?<![\w.])define\s+([A-Za-z_]\w*)\s*(?:\(([^)]*)\))?")


def _defined_blocks(text: str) -> dict[str, tuple[str, ...]]:
    """The blocks the text defines (`define mbconv(filters, expand=1)`), with their
    parameters: read from the text, which need not parse."""
    found: dict[str, tuple[str, ...]] = {}
    for match in _DEFINE.finditer(text):
        params = re.findall(r"([A-Za-z_]\w*)\s*(?:=[^,]*)?(?:,|$)", match.group(2) or "")
        found.setdefault(match.group(1), tuple(params))
    return found


def _inside_string_or_comment(before: str) -> bool:
    """Whether text ending here is inside a comment or an unclosed string."""
    matches = list(ast.STRING_OR_COMMENT.finditer(before))
    last = matches[-1] if matches else None
    if last is None or last.end() != len(before):
        return False
    token = last.group(0)
    return token.startswith("#") or len(token) == 1 or token[-1] != token[0]


# Keys that open a section: the section a `{` opens is the last of these before it.
_SECTION_KEYS = frozenset(
    [*TOP_SECTIONS, *MODEL_SECTIONS, "shortcut", "branch"]
    + [key for schema in SCHEMAS.values() for key in schema.sections]
)


def _context(before: str) -> tuple[list[str], tuple[str, int] | None]:
    """The enclosing section keys, outermost first, and the innermost unclosed call (its name
    and where its arguments start)."""
    sections: list[str] = []
    parens: list[tuple[str, int]] = []
    for index, char in enumerate(before):
        if char == "{":
            header = re.split(r"[{}()]", before[:index])[-1]
            words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", header)
            keys = [w for w in words if w in _SECTION_KEYS]
            sections.append(keys[-1] if keys else (words[0] if words else ""))
            parens.clear()
        elif char == "}":
            if sections:
                sections.pop()
            parens.clear()
        elif char == "(":
            name = _WORD_BEFORE.search(before[:index])
            parens.append((name.group(1) if name else "", index + 1))
        elif char == ")" and parens:
            parens.pop()
    return sections, (parens[-1] if parens else None)


def _item_completions(sections: list[str], prior: str | None) -> list[Completion]:
    if not sections:
        return [Completion(key, "keyword", "section") for key in TOP_SECTIONS]
    top = sections[0]
    if top == "model":
        if prior == "backbone":
            return [
                Completion(name, "backbone", f"keras.applications.{b.keras_class}")
                for name, b in BACKBONES.items()
            ]
        if sections[-1] in join_kinds():
            return [Completion("branch", "keyword", "section: a path from the join's input")]
        items = [_layer_completion(kind) for kind in user_kinds()]
        items += [Completion(key, "keyword", "section") for key in MODEL_SECTIONS]
        if sections[-1] == "residual":
            items.append(Completion("shortcut", "keyword", "section: the skip path"))
        items += [Completion(key, "setting", "setting") for key in MODEL_SETTINGS]
        return items
    schema = SCHEMAS.get(top)
    if schema is None:
        return []
    if len(sections) > 1 and sections[-1] in schema.sections:
        schema = schema.sections[sections[-1]][1]
    if prior is not None and prior in schema.choices:
        return [
            Completion(name, "value", signature(model), _doc(model))
            for name, model in schema.choices[prior].items()
        ]
    if prior is not None and prior in schema.model.model_fields:
        return _value_completions(schema.model, prior)
    items = [Completion(key, "setting", "setting") for key in schema.settings()]
    items += [
        Completion(name, "call", signature(model), _doc(model))
        for name, (_, model) in schema.calls.items()
    ]
    items += [Completion(key, "keyword", "section") for key in schema.sections]
    return items


def _call_completions(sections: list[str], call: tuple[str, int], before: str) -> list[Completion]:
    name, start = call
    model = _call_model(sections, name)
    if model is None:
        return []
    argument = before[start:].rsplit(",", 1)[-1]
    if model is Metrics and "=" not in argument:
        # Its arguments are the metrics themselves: metrics(accuracy, f1(average=micro)).
        return [
            Completion(kind, "value", signature(entry), _doc(entry))
            for kind, entry in METRICS.items()
        ]
    key = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*[A-Za-z0-9_.]*$", argument)
    if key:
        return _value_completions(model, key.group(1))
    fields = model.model_fields
    items = [
        Completion(
            f"{field_name}=",
            "argument",
            f"{field_name}: {_type_text(info.annotation)}"
            + ("" if info.is_required() else f" = {default_text(info.default)}"),
            insert_text=f"{field_name}=",
        )
        for field_name, info in fields.items()
    ]
    if issubclass(model, LayerArgs):
        items.append(Completion("name=", "argument", "name: an identifier", insert_text="name="))
    return items


def _call_model(sections: list[str], name: str) -> type[Bound] | None:
    top = sections[0] if sections else ""
    if top == "model":
        if name in BACKBONES:
            return BackboneArgs
        cls = REGISTRY.get(name)
        return cls if cls is not None and not cls.internal else None
    schema: SectionSchema | None = SCHEMAS.get(top)
    if schema is None:
        return None
    if len(sections) > 1 and sections[-1] in schema.sections:
        schema = schema.sections[sections[-1]][1]
    if name in schema.calls:
        return schema.calls[name][1]
    if top == "train" and name in METRICS:  # an item of metrics(...)
        return METRICS[name]
    for choices in schema.choices.values():
        if name in choices:
            return choices[name]
    return None


def _value_completions(model: type[Bound], key: str) -> list[Completion]:
    info = model.model_fields.get(key)
    if info is None:
        return []
    if key == "activation":
        return [Completion(kind, "value", "activation") for kind in ["linear", *activation_kinds()]]
    if model is BackboneArgs and key == "weights":
        return [Completion(v, "value", "weights") for v in ("imagenet", "none")]
    values = _literal_values(info.annotation)
    return [Completion(describe(v), "value", f"{key}") for v in values]


def _literal_values(annotation: Any) -> list[Any]:
    """The values a field's type allows by name: Literal members, true/false, none."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return list(typing.get_args(annotation))
    if annotation is bool:
        return [True, False]
    if annotation is type(None):
        return [None]
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        values: list[Any] = []
        for arg in typing.get_args(annotation):
            values += [v for v in _literal_values(arg) if v not in values]
        return values
    return []


def _type_text(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    return re.sub(r"Annotated\[([^,\]]+)[^\]]*\]", r"\1", text)


def _layer_completion(kind: str) -> Completion:
    cls = REGISTRY[kind]
    return Completion(kind, "layer", f"{kind}({signature(cls)})", cls.doc)


def _doc(model: type[Bound]) -> str:
    return str(getattr(model, "doc", "") or (model.__doc__ or "").strip())


# --------------------------------------------------------------------------------------------
# Go to definition


def definition(compilation: Compilation, offset: int) -> list[Span]:
    """Where the thing at `offset` is declared: the block a freeze statement names, the value
    a `from` reads, or the `defaults` that give a layer call its arguments."""
    document = compilation.document
    if document is None:
        return []
    found = _enclosing(document.items, offset, [])
    if found is None:
        return []
    item, ancestors = found
    spec = compilation.spec
    if isinstance(item, ast.Setting) and item.key.text in ("freeze", "unfreeze") and spec:
        target = item.value
        name = target.text if isinstance(target, ast.Name) else getattr(target, "value", None)
        if not isinstance(name, str):
            return []
        graph = spec.model
        if name in graph.blocks:
            return [graph.blocks[name]]
        return [n.span for n in graph.nodes if n.name == name][:1]
    if isinstance(item, ast.Setting) and item.key.text == "from" and spec:
        graph = spec.model
        read = graph.references.get(item.value.span)
        if read is None or read == graph.INPUT:
            return [graph.input_span] if read == graph.INPUT and graph.input_span else []
        if read in graph.blocks:
            return [graph.blocks[read]]
        return [n.span for n in graph.nodes if n.name == read][:1]
    if (
        isinstance(item, ast.Call)
        and item.name.span.contains(offset)
        and spec
        and item.name.text in spec.model.definitions
    ):
        return [spec.model.definitions[item.name.text]]
    if isinstance(item, ast.Call) and item.name.span.contains(offset):
        kind = item.name.text
        spans = []
        for section in ancestors:
            for sibling in section.items:
                if sibling.span.start >= item.span.start:
                    break
                value = getattr(sibling, "value", None)
                if (
                    isinstance(sibling, ast.Setting)
                    and sibling.key.text == "defaults"
                    and isinstance(value, ast.Call)
                    and value.name.text == kind
                ):
                    spans.append(sibling.span)
        return spans
    return []


def _enclosing(
    items: tuple[ast.Item, ...], offset: int, ancestors: list[ast.Section]
) -> tuple[ast.Item, list[ast.Section]] | None:
    for item in items:
        if not item.span.contains(offset):
            continue
        if isinstance(item, ast.Section):
            inner = _enclosing(item.items, offset, [*ancestors, item])
            return inner if inner is not None else (item, ancestors)
        return item, ancestors
    return None


# --------------------------------------------------------------------------------------------
# Outline


@dataclass
class Symbol:
    name: str
    kind: Literal["module", "namespace", "class", "function", "property"]
    span: Span
    selection: Span
    detail: str = ""
    children: list[Symbol] = field(default_factory=list)


def outline(compilation: Compilation) -> list[Symbol]:
    """Sections, blocks and layers, nested as written; layers carry their IR names."""
    document = compilation.document
    if document is None:
        return []
    names: dict[int, list[Node]] = {}
    if compilation.spec is not None:
        for node in compilation.spec.model.nodes:
            if node.site is None:  # a define's lines are shared by all its calls
                names.setdefault(node.span.start, []).append(node)
    return [_symbol(item, names, top=True) for item in document.items]


def _symbol(item: ast.Item, nodes: dict[int, list[Node]], top: bool = False) -> Symbol:
    if isinstance(item, ast.Section):
        label = item.label
        label_text = _label_text(label)
        kind: Literal["module", "namespace", "class"] = (
            "module" if item.key.text == "model" else "namespace" if top else "class"
        )
        # A residual's or a join's node starts at its keyword: its output is the section's.
        made = [n for n in nodes.get(item.span.start, []) if n.role == "join"]
        return Symbol(
            f"{item.key.text} {label_text}".strip(),
            kind,
            item.span,
            label.span if label is not None else item.key.span,
            detail=f"→ {_shape(made[-1].output_shape)}" if made else "",
            children=[_symbol(child, nodes) for child in item.items],
        )
    if isinstance(item, ast.Call):
        made = nodes.get(item.span.start, [])
        shape = _shape(made[-1].output_shape) if made else ""
        return Symbol(
            made[0].name if made else item.name.text,
            "function",
            item.span,
            item.name.span,
            detail=f"{item.name.text} → {shape}" if made else item.name.text,
        )
    return Symbol(item.key.text, "property", item.span, item.key.span)


def _label_text(label: ast.Value | None) -> str:
    match label:
        case None:
            return ""
        case ast.Name(text=text) | ast.Number(text=text):
            return text
        case ast.Call(name=name, args=args):  # define mbconv(filters, expand=1)
            return f"{name.text}({', '.join(a.key.text if a.key else _label_text(a.value) for a in args)})"
        case ast.BinOp(op=op, left=left, right=right):
            return f"{_label_text(left)} {op} {_label_text(right)}"
        case ast.Paren(value=inner):
            return f"({_label_text(inner)})"
        case ast.String(value=text):
            return repr(text)
    return "…"


# --------------------------------------------------------------------------------------------
# Shared


def _shape(shape: tuple[int, ...] | None) -> str:
    return format_shape(shape) if shape is not None else "?"


def _params(params: Params) -> str:
    return (
        f"{params.total:,} ({params.trainable:,} trainable, {params.non_trainable:,} non-trainable)"
    )


def _word_at(text: str, offset: int) -> str:
    start = offset
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    end = offset
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[start:end]
