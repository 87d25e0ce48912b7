"""Lowering: the syntax tree of a spec becomes the typed IR.

The model section is elaborated into a DAG in one walk that carries the current tensor's shape,
so every layer gets its output shape, parameters, MACs and receptive field as it is created, a
residual can decide on the spot whether its shortcut needs a 1x1 projection, and every error is
reported at the call that caused it. A layer whose input shape is unknown (because an earlier
layer failed) is still created, but not checked, so one mistake gives one error.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from cnnspec import codes
from cnnspec import syntax as ast
from cnnspec.backbones import BACKBONES, BackboneArgs
from cnnspec.binding import BoundArg, bind_call, collect_args, validate
from cnnspec.definitions import MAX_DEPTH, Definition, bind_instance, read_definitions
from cnnspec.diagnostics import Diagnostics, did_you_mean
from cnnspec.expressions import BUILTINS, EMPTY, Context, ExpressionError, evaluate, resolve
from cnnspec.ir import BackboneUse, Graph, Node, ReceptiveField
from cnnspec.layers import BatchNorm, Conv2D, format_shape
from cnnspec.registry import (
    REGISTRY,
    LayerArgs,
    Shape,
    ShapeError,
    join_kinds,
    kind_named_by_framework,
    token_kinds,
    user_kinds,
)
from cnnspec.sections import (
    SCHEMAS,
    SPACE,
    AugmentSection,
    DataSection,
    EvaluateSection,
    SweepSection,
    TrackSection,
    TrainSection,
    bind_section,
)
from cnnspec.source import Span

MODEL_SETTINGS = ("input", "defaults", "backbone", "let", "name", "from")
MODEL_SECTIONS = ("block", "head", "residual", "repeat", "if", "else", "define", *join_kinds())
TOP_SECTIONS = ("model", "data", "augment", "train", "evaluate", "track", "sweep", "define")
# Bounds that keep a typo such as `repeat 100000` from hanging an editor.
MAX_REPEAT = 1000
MAX_NODES = 20_000


@dataclass(slots=True)
class Tensor:
    """The value flowing through the walk: the node that produced it and what is known of it."""

    source: str
    shape: Shape | None
    field: ReceptiveField | None


@dataclass
class Scope:
    path: tuple[str, ...]
    parent: Scope | None = None
    defaults: dict[str, dict[str, BoundArg]] = field(default_factory=dict)
    # The variable generated code keeps this scope's chain in (see `Node.lane`).
    lane: str = "x"
    # The variables here: a define's parameters, `let`s, repeat's `index`.
    context: Context = EMPTY
    # The name of the innermost named instance of a define: layer names inside it are relative
    # to it (`name=dwconv` in the instance block2a is block2a_dwconv), as keras.applications'.
    instance: str | None = None
    # The definitions being expanded here, outermost first (for recursion).
    expanding: tuple[str, ...] = ()

    def child(self, name: str | None, lane: str | None = None) -> Scope:
        return Scope(
            self.path + ((name,) if name else ()),
            self,
            lane=lane or self.lane,
            context=self.context,
            instance=self.instance,
            expanding=self.expanding,
        )

    def defaults_for(self, kind: str) -> dict[str, BoundArg]:
        inherited = self.parent.defaults_for(kind) if self.parent else {}
        return {**inherited, **self.defaults.get(kind, {})}

    @property
    def prefix(self) -> str:
        return "_".join(self.path) + "_" if self.path else ""


class ModelLowering:
    def __init__(self, diagnostics: Diagnostics, image_size: tuple[int, int] | None = None) -> None:
        self.diagnostics = diagnostics
        self.image_size = image_size
        self.nodes: list[Node] = []
        self.names: dict[str, Span] = {}
        self.counters: dict[tuple[tuple[str, ...], str], int] = {}
        self.blocks: dict[str, Span] = {}
        self.too_big = False
        self.backbone: BackboneUse | None = None
        self.image: tuple[int, int] | None = None  # the input's height and width
        # Whether the most recent layer call could not be built.
        self.unbuilt = False
        # The blocks defined with parameters that this model can call (see cnnspec.definitions).
        self.definitions: dict[str, Definition] = {}
        # The values `from` can name: every layer's output by the layer's name, every named
        # block's output by its dotted path, and the input.
        self.values: dict[str, Tensor] = {}
        self.block_values: dict[str, Tensor] = {}
        # `from`s that named nothing computed before them, told apart once the walk is over:
        # a value that comes later (a cycle) or none at all.
        self.unresolved: list[tuple[tuple[str, ...], Span]] = []
        self.references: dict[Span, str] = {}
        self.read_by_name: set[str] = set()

    # ---- entry point -------------------------------------------------------------------------

    def lower(
        self,
        section: ast.Section,
        fallback_name: str,
        top: tuple[ast.Item, ...] = (),
    ) -> Graph:
        """The model `section`; `top` holds the file's other top-level items, whose `define`s
        the model can use."""
        self.definitions = {}
        read_definitions(top, self.diagnostics, _reserved_names(), self.definitions)
        read_definitions(section.items, self.diagnostics, _reserved_names(), self.definitions)
        name = section.label.text if isinstance(section.label, ast.Name) else fallback_name
        if isinstance(section.label, ast.Number):
            self.diagnostics.error(
                codes.WRONG_KIND, "a model's name must be a name, not a number", section.label.span
            )
        input_shape, input_span = self._input(section)
        declared = None
        if input_shape is not None and self.image_size is not None:
            declared, input_shape = input_shape, (*self.image_size, input_shape[2])
        graph = Graph(
            name=name,
            span=section.span,
            input_shape=input_shape,
            input_span=input_span,
            declared_input=declared,
        )
        self.image = (input_shape[0], input_shape[1]) if input_shape else None
        start_field = ReceptiveField(size=(1, 1), jump=(1, 1)) if input_shape else None
        start = Tensor(Graph.INPUT, input_shape, start_field)
        self.values[Graph.INPUT] = start
        errors = len(self.diagnostics.errors)
        out = self._walk(section.items, Scope(()), start)
        self._report_unresolved()
        # A layer left unread is only worth reporting in a model that is otherwise right: after
        # an error, a `from` that failed or a layer that was not built leaves such layers too.
        if len(self.diagnostics.errors) == errors:
            self._report_unused(out.source)
        graph.nodes = self.nodes
        graph.output = out.source
        graph.blocks = self.blocks
        graph.definitions = {name: d.span for name, d in self.definitions.items()}
        graph.ends_unbuilt = self.unbuilt
        graph.backbone = self.backbone
        graph.references = self.references
        graph.read_by_name = frozenset(self.read_by_name)
        return graph

    def _input(self, section: ast.Section) -> tuple[tuple[int, int, int] | None, Span | None]:
        inputs = [i for i in section.items if isinstance(i, ast.Setting) and i.key.text == "input"]
        if not inputs:
            self.diagnostics.error(
                codes.MISSING_SETTING,
                f"model '{getattr(section.label, 'text', '')}' has no input",
                section.key.span,
                "declare the input size first, e.g. `input 32x32x3` (height x width x channels)",
            )
            return None, None
        for extra in inputs[1:]:
            self.diagnostics.error(
                codes.SETTING_TWICE,
                "the model's input is declared twice",
                extra.key.span,
                f"first declared at line {inputs[0].span.line}",
            )
        value = inputs[0].value
        if isinstance(value, ast.Dims) and len(value.values) == 3 and min(value.values) > 0:
            h, w, c = value.values
            return (h, w, c), value.span
        hint = "write height x width x channels, e.g. 32x32x3 or 28x28x1"
        if isinstance(value, ast.Dims) and len(value.values) == 2:
            hint = f"add the channel count: {value.values[0]}x{value.values[1]}x3 or x1"
        self.diagnostics.error(
            codes.WRONG_KIND, "input must be a size like 32x32x3", value.span, hint
        )
        return None, None

    # ---- the walk ----------------------------------------------------------------------------

    def _walk(self, items: tuple[ast.Item, ...], scope: Scope, x: Tensor) -> Tensor:
        # After an `if`: whether it took its body (None when its condition was wrong).
        taken: bool | Literal["no if"] | None = "no if"
        for item in items:
            if isinstance(item, ast.Section) and item.key.text == "else":
                x = self._else(item, taken, scope, x)
                taken = "no if"
                continue
            taken = "no if"
            if isinstance(item, ast.Call) and item.name.text in self.definitions:
                x = self._instance(item, scope, x)
            elif isinstance(item, ast.Call):
                x = self._layer(item, scope, x)
            elif isinstance(item, ast.Setting) and item.key.text == "backbone":
                x = self._backbone(item, scope, x)
            elif isinstance(item, ast.Setting) and item.key.text == "from":
                x = self._from(item, scope, x)
            elif isinstance(item, ast.Setting):
                self._setting(item, scope, x)
            elif item.key.text == "if":
                # As in Python, an `if` opens no scope: a `let` inside it holds after it.
                taken = self._condition(item, scope, x)
                if taken:
                    x = self._walk(item.items, scope, x)
            elif item.key.text == "define":
                continue  # read before the walk
            else:
                x = self._section(item, scope, x)
        return x

    # ---- defined blocks, variables and conditions -------------------------------------------

    def _context(self, scope: Scope, x: Tensor) -> Context:
        channels = x.shape[-1] if x.shape else None
        return replace(scope.context, channels=channels)

    def _instance(self, call: ast.Call, scope: Scope, x: Tensor) -> Tensor:
        """A call of a defined block: its body, walked with its parameters as variables, in a
        block named after the instance when it has `name=`."""
        self.unbuilt = True
        unknown = Tensor(x.source, None, None)
        definition = self.definitions[call.name.text]
        if definition.name in scope.expanding:
            chain = " → ".join((*scope.expanding, definition.name))
            self.diagnostics.error(
                codes.INVALID_VALUE,
                f"{definition.name} uses itself ({chain})",
                call.name.span,
                "a defined block cannot contain itself, directly or through another",
            )
            return unknown
        if len(scope.expanding) >= MAX_DEPTH:
            self.diagnostics.error(
                codes.INVALID_VALUE,
                f"defined blocks nest deeper than {MAX_DEPTH}",
                call.name.span,
                "check the defines that call one another",
            )
            return unknown
        what = f"{definition.name}(...)"
        with self.diagnostics.expanding(what, call.span):
            instance = bind_instance(call, definition, self._context(scope, x), self.diagnostics)
            if instance is None:
                return unknown
            if instance.name is not None and instance.name_span is not None:
                if ".".join((*scope.path, instance.name)) in self.blocks:
                    # Reported once, for the block; its layers' names would only repeat it.
                    self._open_block(instance.name, instance.name_span, scope)
                    return unknown
                inner = self._open_block(instance.name, instance.name_span, scope)
                inner.instance = (
                    f"{scope.instance}_{instance.name}" if scope.instance else instance.name
                )
            else:
                inner = scope.child(None)
            own_name = inner.instance or definition.name
            inner.context = Context(
                variables={**instance.variables, "name": ast.String(own_name, call.span)}
            )
            inner.expanding = (*scope.expanding, definition.name)
            first = len(self.nodes)
            out = self._walk(definition.body, inner, x)
            if instance.name is not None:
                self._closed(inner, out)
        for node in self.nodes[first:]:
            node.site = call.span  # the outermost call wins: it is the one in the model's text
        return out

    def _condition(self, item: ast.Section, scope: Scope, x: Tensor) -> bool | None:
        """Whether an `if`'s condition holds; None (reported) when it is not true or false."""
        if item.label is None:
            self.diagnostics.error(
                codes.WRONG_KIND, "if needs a condition", item.key.span, "if stride == 1 { ... }"
            )
            return None
        try:
            value = evaluate(item.label, self._context(scope, x))
        except ExpressionError as error:
            self.diagnostics.error(error.code, error.message, error.span, error.hint)
            return None
        if not isinstance(value, bool):
            self.diagnostics.error(
                codes.WRONG_KIND,
                "an if's condition must be true or false",
                item.label.span,
                "compare: if expand != 1 { ... }",
            )
            return None
        return value

    def _else(
        self, item: ast.Section, taken: bool | Literal["no if"] | None, scope: Scope, x: Tensor
    ) -> Tensor:
        if item.label is not None:
            self.diagnostics.error(
                codes.WRONG_KIND,
                "else takes no condition",
                item.label.span,
                "nest another if inside the else: else { if ... { } }",
            )
            return x
        if taken == "no if":
            self.diagnostics.error(
                codes.NOT_USABLE_HERE, "else must follow an if's closing brace", item.key.span
            )
            return x
        return x if taken is not False else self._walk(item.items, scope, x)

    def _decided(
        self, items: tuple[ast.Item, ...], scope: Scope, x: Tensor
    ) -> tuple[ast.Item, ...]:
        """`items` with each if/else replaced by the items of the branch taken: how a residual
        finds a `shortcut` and a join its `branch`es written under a condition."""
        if not any(isinstance(i, ast.Section) and i.key.text in ("if", "else") for i in items):
            return items
        decided: list[ast.Item] = []
        taken: bool | None = None
        for item in items:
            if isinstance(item, ast.Section) and item.key.text == "if":
                taken = self._condition(item, scope, x)
                if taken:
                    decided.extend(self._decided(item.items, scope, x))
                continue
            if isinstance(item, ast.Section) and item.key.text == "else" and taken is not None:
                if not taken and item.label is None:
                    decided.extend(self._decided(item.items, scope, x))
                taken = None
                continue
            taken = None
            decided.append(item)
        return tuple(decided)

    def _let(self, item: ast.Setting, scope: Scope, x: Tensor) -> None:
        if item.target is None:
            self.diagnostics.error(
                codes.WRONG_KIND,
                "let names a value",
                item.value.span,
                "let filters = 32 * width",
            )
            return
        name = item.target.text
        if not name.isidentifier() or name in BUILTINS or name == "name":
            self.diagnostics.error(
                codes.WRONG_KIND,
                f"'{name}' cannot be a variable's name",
                item.target.span,
                "a variable is a plain name that is not a function or `name`",
            )
            return
        try:
            value = resolve(item.value, self._context(scope, x))
        except ExpressionError as error:
            self.diagnostics.error(error.code, error.message, error.span, error.hint)
            return
        scope.context = scope.context.bind(**{name: value})

    def _label(self, label: ast.Value | None, scope: Scope, x: Tensor) -> ast.Value | None:
        """A section's label with its expression evaluated: `block "stage" + str(index)`."""
        if label is None or (
            isinstance(label, ast.Name) and label.text not in scope.context.variables
        ):
            return label
        try:
            value = resolve(label, self._context(scope, x))
        except ExpressionError as error:
            self.diagnostics.error(error.code, error.message, error.span, error.hint)
            return None
        return ast.Name(value.value, value.span) if isinstance(value, ast.String) else value

    def _setting(self, item: ast.Setting, scope: Scope, x: Tensor) -> None:
        key = item.key.text
        if key == "let":
            self._let(item, scope, x)
            return
        if item.target is not None:
            self.diagnostics.error(
                codes.WRONG_KIND,
                f"only let takes `name = value`, not {key}",
                item.target.span,
                f"let {item.target.text} = ...",
            )
            return
        if key == "name":
            self.diagnostics.error(
                codes.NOT_USABLE_HERE,
                "name names a residual's or a join's node, inside it",
                item.key.span,
                "residual { name add  ... }; a layer takes name=...",
            )
            return
        if key == "input":
            if scope.path or scope.parent is not None:
                self.diagnostics.error(
                    codes.NOT_USABLE_HERE,
                    "input can only be declared at the top of the model",
                    item.key.span,
                )
            return
        if key == "defaults":
            self._defaults(item, scope)
            return
        if key in REGISTRY:
            hint = f"write {key}() to add the layer"
        else:
            hint = did_you_mean(key, [*MODEL_SETTINGS, *MODEL_SECTIONS]) or (
                "a model holds layers like conv2d(32), `defaults`, and block/head/residual/repeat"
            )
        self.diagnostics.error(
            codes.UNKNOWN_SETTING, f"unknown setting '{key}' in model", item.key.span, hint
        )

    def _defaults(self, item: ast.Setting, scope: Scope) -> None:
        call = item.value
        if not isinstance(call, ast.Call):
            self.diagnostics.error(
                codes.WRONG_KIND,
                "defaults takes a layer call, e.g. `defaults conv2d(kernel=3, padding=same)`",
                item.value.span,
            )
            return
        cls = self._kind(call)
        if cls is None:
            return
        args, _ = collect_args(call, cls, call.name.text, self.diagnostics, context=scope.context)
        scope.defaults.setdefault(cls.kind, {}).update(args)

    def _backbone(self, item: ast.Setting, scope: Scope, x: Tensor) -> Tensor:
        """Inline a library network (cnnspec/backbones) in a `backbone` block, where its
        layers keep keras.applications' names."""
        # Whatever goes wrong here, the tensor after it is unknown: guessing that a broken
        # backbone passes its input through would only add errors that are not there.
        unknown = Tensor(x.source, None, None)
        call = item.value
        if isinstance(call, ast.Name):  # `backbone vgg16`: the defaults, as `optimizer adam`
            call = ast.Call(call, (), call.span)
        if not isinstance(call, ast.Call):
            self.diagnostics.error(
                codes.WRONG_KIND,
                "backbone takes a network, e.g. `backbone vgg16(weights=imagenet)`",
                item.value.span,
                f"backbones: {', '.join(BACKBONES)}",
            )
            return unknown
        name = call.name.text
        library = BACKBONES.get(name)
        if library is None:
            self.diagnostics.error(
                codes.UNKNOWN_LAYER,
                f"unknown backbone '{name}'",
                call.name.span,
                did_you_mean(name, BACKBONES) or f"backbones: {', '.join(BACKBONES)}",
            )
            return unknown
        args = bind_call(call, BackboneArgs, f"backbone {name}", self.diagnostics)
        if args is None or not self._weights_named(call):
            return unknown
        if self.backbone is not None:
            self.diagnostics.error(
                codes.SETTING_TWICE,
                "a model has one backbone",
                item.key.span,
                f"first declared at line {self.backbone.span.line}",
            )
            return unknown
        model = library.model()
        # A misfit is reported and the network still built, so what follows is checked; only
        # a feature vector cannot go through it at all.
        if x.shape is not None and not self._backbone_fits(name, model, args, x.shape, call):
            return unknown
        # The library's own diagnostics point into its text: collect them apart, and report
        # the first at the user's `backbone` line.
        outer, self.diagnostics = self.diagnostics, Diagnostics(library.source())
        first = len(self.nodes)
        known_blocks = set(self.blocks)
        inner = self._open_block("backbone", item.key.span, scope)
        # The library network is keras.applications' as it is: the user's `defaults` (an
        # activation, padding, no bias) and defines must not reach into it. It sees the
        # backbone's arguments, as keras.applications' constructors do (EfficientNet adds a
        # layer for ImageNet weights only).
        inner.parent = None
        inner.context = Context(
            variables={
                "include_top": ast.Name(str(args.include_top).lower(), call.span),
                "weights": ast.Name("none", call.span)
                if args.weights is None
                else ast.String(args.weights, call.span),
                "pooling": ast.Name(args.pooling or "none", call.span),
            }
        )
        outer_definitions, self.definitions = self.definitions, {}
        read_definitions(library.top_items(), self.diagnostics, _reserved_names(), self.definitions)
        read_definitions(model.items, self.diagnostics, _reserved_names(), self.definitions)
        try:
            body = tuple(
                i
                for i in model.items
                if not (isinstance(i, ast.Setting) and i.key.text == "input")
                and not (isinstance(i, ast.Section) and i.key.text == "head")
            )
            out = self._walk(body, inner, x)
            head = [i for i in model.items if isinstance(i, ast.Section) and i.key.text == "head"]
            pooled = out.shape is not None and len(out.shape) == 1
            if args.include_top:
                out = self._walk(head[0].items, inner, out)
            elif args.pooling is not None and not pooled:
                # (A library that pools itself, as ConvNeXt does before its last layer norm,
                # reads `pooling` and ends with a vector: nothing is left to pool.)
                kind = "global_avg_pool" if args.pooling == "avg" else "global_max_pool"
                pool = REGISTRY[kind]().located(call.span, {})
                pool_name = f"{args.pooling}_pool"
                if pool_name in self.names:
                    pool_name = self._auto_name(inner, kind)
                out = self._add(pool_name, pool, [out], call.span, inner)
        finally:
            problems, self.diagnostics = self.diagnostics, outer
            self.definitions = outer_definitions
        for problem in problems.errors[:1]:
            hint = problem.hint
            if (
                problem.code == codes.SHRINKS_BELOW_ONE
            ):  # a shrinking map: the fix is a larger input
                hint = f"{name} needs larger images (keras.applications takes 32x32 and up)"
            self.diagnostics.error(
                problem.code, f"backbone {name}: {problem.message}", call.span, hint
            )
        # Editors and messages point at the `backbone` line for every layer it brought.
        for node in self.nodes[first:]:
            node.span = item.span
            self.names[node.name] = item.span
        for block in set(self.blocks) - known_blocks:
            self.blocks[block] = item.key.span
        self.backbone = BackboneUse(
            name=name,
            args=args,
            nodes=tuple(n.name for n in self.nodes[first:]),
            span=item.span,
        )
        return out

    def _weights_named(self, call: ast.Call) -> bool:
        """`weights=` takes the names imagenet and none, or a file path as a string: a
        misspelt name (`weights=imagnet`) is an error, not a file that is missing later."""
        for arg in call.args:
            value = arg.value
            if (
                arg.key is not None
                and arg.key.text == "weights"
                and isinstance(value, ast.Name)
                and value.text not in ("imagenet", "none")
            ):
                self.diagnostics.error(
                    codes.INVALID_VALUE,
                    f"weights must be imagenet, none or a file path, not '{value.text}'",
                    value.span,
                    did_you_mean(value.text, ["imagenet", "none"])
                    or 'write a weight file as a string: weights="vgg16_notop.h5"',
                )
                return False
        return True

    def _backbone_fits(
        self,
        name: str,
        model: ast.Section,
        args: BackboneArgs,
        shape: Shape,
        call: ast.Call,
    ) -> bool:
        native = next(
            i.value.values
            for i in model.items
            if isinstance(i, ast.Setting)
            and i.key.text == "input"
            and isinstance(i.value, ast.Dims)
        )
        if len(shape) != 3:
            self.diagnostics.error(
                codes.NEEDS_SPATIAL,
                f"backbone {name} needs an (H, W, C) input, but gets {format_shape(shape)}",
                call.span,
                "put the backbone first in the model",
            )
            return False
        library = BACKBONES[name]
        if args.pooling is not None and args.pooling not in library.poolings:
            self.diagnostics.error(
                codes.INVALID_VALUE,
                f"{name} pools its tokens by their mean (pooling=avg), not pooling={args.pooling}",
                args.span_of("pooling") or call.span,
                "pooling=avg, or leave pooling out and read the class token: "
                "head { token_pool(class) ... }",
            )
            return False
        if args.include_top and shape != native:
            self.diagnostics.error(
                codes.INPUT_MISMATCH,
                f"{name} with its ImageNet classifier takes {'x'.join(map(str, native))} "
                f"images, but gets {'x'.join(map(str, shape))}",
                args.span_of("include_top") or call.span,
                "leave include_top out and add a head of your own",
            )
        if args.weights == "imagenet" and shape[2] != 3:
            self.diagnostics.error(
                codes.INPUT_MISMATCH,
                f"ImageNet weights need 3 input channels, but {name} gets {shape[2]}",
                args.span_of("weights") or call.span,
                "declare the input HxWx3 (a directory source converts grayscale with "
                "grayscale_to_rgb=true), or use weights=none",
            )
        return True

    def _kind(self, call: ast.Call) -> type[LayerArgs] | None:
        kind = call.name.text
        cls = REGISTRY.get(kind)
        if cls is not None and not cls.internal:
            return cls
        hint = did_you_mean(kind, [*user_kinds(), *self.definitions])
        known = kind_named_by_framework(kind)
        if known is not None:
            hint = f"cnnspec calls {kind} {known}()"
        if hint is None:
            elsewhere = [s for s, schema in SCHEMAS.items() if kind in schema.calls]
            if elsewhere:
                hint = f"{kind}(...) belongs in the {elsewhere[0]} section"
        self.diagnostics.error(codes.UNKNOWN_LAYER, f"unknown layer '{kind}'", call.name.span, hint)
        return None

    def _section(self, item: ast.Section, scope: Scope, x: Tensor) -> Tensor:
        key = item.key.text
        if key == "repeat":
            return self._repeat(item, scope, x)
        label = self._label(item.label, scope, x)
        if label is not item.label:
            item = replace(item, label=label)
        if key == "block":
            if not isinstance(label, ast.Name) or "." in label.text:
                self.diagnostics.error(
                    codes.WRONG_KIND, "a block needs a name: `block conv1 { ... }`", item.key.span
                )
                return self._walk(item.items, scope.child(None), x)
            inner = self._open_block(label.text, label.span, scope)
            return self._closed(inner, self._walk(item.items, inner, x))
        if key == "head":
            if label is not None:
                self.diagnostics.error(codes.WRONG_KIND, "head takes no name", label.span)
            inner = self._open_block("head", item.key.span, scope)
            return self._closed(inner, self._walk(item.items, inner, x))
        if key == "residual":
            if label is not None and not isinstance(label, ast.Name):
                self.diagnostics.error(
                    codes.WRONG_KIND, "a residual's name must be a name", label.span
                )
                label = None
            inner = (
                self._open_block(label.text, label.span, scope)
                if isinstance(label, ast.Name)
                else scope.child(None)
            )
            return self._closed(inner, self._residual(item, inner, x))
        if key in REGISTRY and REGISTRY[key].is_join:
            return self._join(item, scope, x)
        hint = did_you_mean(key, [*MODEL_SECTIONS, *MODEL_SETTINGS])
        if key == "shortcut":
            hint = "a shortcut { ... } goes directly inside a residual"
        if key == "branch":
            hint = f"a branch {{ ... }} goes directly inside a join: {', '.join(join_kinds())}"
        if key in ("concatenate", "cat", "mul"):
            hint = did_you_mean(key, join_kinds()) or "write concat { branch { ... } ... }"
        if key in TOP_SECTIONS:
            hint = f"the {key} section goes at the top level, after the model's closing brace"
        self.diagnostics.error(
            codes.UNKNOWN_SETTING,
            f"unknown section '{key}' in model",
            item.key.span,
            hint
            or "a model holds layers, `defaults`, block/head/residual/repeat sections "
            "and joins (add, concat, multiply)",
        )
        return x

    def _repeat(self, item: ast.Section, scope: Scope, x: Tensor) -> Tensor:
        """`repeat N { ... }`: the body N times, each with `index` 0, 1, ... N-1."""
        label = item.label
        try:
            count = evaluate(label, self._context(scope, x)) if label is not None else None
        except ExpressionError as error:
            self.diagnostics.error(error.code, error.message, error.span, error.hint)
            return Tensor(x.source, None, None)
        if isinstance(count, float) and count.is_integer() and not isinstance(label, ast.Number):
            count = int(count)
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or count < 0
            or (count == 0 and isinstance(label, ast.Number))
        ):
            self.diagnostics.error(
                codes.WRONG_KIND,
                "repeat needs a positive count: `repeat 2 { ... }`",
                label.span if label is not None else item.key.span,
                f"the count here is {count!r}"
                if label is not None and not isinstance(label, ast.Number)
                else None,
            )
            return x
        assert label is not None
        if count > MAX_REPEAT:
            self.diagnostics.error(
                codes.INVALID_VALUE, f"repeat count {count} is more than {MAX_REPEAT}", label.span
            )
            return x
        for index in range(count):
            if len(self.nodes) > MAX_NODES:
                if not self.too_big:
                    self.too_big = True
                    self.diagnostics.error(
                        codes.INVALID_VALUE,
                        f"the model grows beyond {MAX_NODES:,} layers",
                        item.key.span,
                        "check the repeat counts",
                    )
                return x
            inner = scope.child(None)
            inner.context = scope.context.bind(index=ast.Number(index, str(index), label.span))
            x = self._walk(item.items, inner, x)
        return x

    def _closed(self, scope: Scope, out: Tensor) -> Tensor:
        """`out`, the output of the named block `scope` has just walked, which `from` may now
        read by the block's name."""
        if scope.parent is not None and scope.path != scope.parent.path:
            self.block_values[".".join(scope.path)] = out
        return out

    # ---- named values --------------------------------------------------------------------------

    def _from(self, item: ast.Setting, scope: Scope, x: Tensor) -> Tensor:
        """`from NAME`: the chain goes on from an earlier value (a layer's output, a named
        block's, or the input) rather than from the item before, which is how a join reads
        values of different places (NASNet's cells read the two cells before them)."""
        unknown = Tensor(x.source, None, None)
        if item.target is not None:
            self.diagnostics.error(
                codes.WRONG_KIND,
                "from names a value; only let takes `name = value`",
                item.target.span,
                "from conv1",
            )
            return unknown
        value = item.value
        variable = isinstance(value, ast.Name) and value.text in scope.context.variables
        if variable or not isinstance(value, ast.Name | ast.String):
            try:
                value = resolve(value, self._context(scope, x))
            except ExpressionError as error:
                self.diagnostics.error(error.code, error.message, error.span, error.hint)
                return unknown
        text = value.text if isinstance(value, ast.Name) else getattr(value, "value", None)
        if not isinstance(text, str) or not text:
            self.diagnostics.error(
                codes.WRONG_KIND,
                "from takes the name of a layer, a block or the input",
                item.value.span,
                "from input, from conv1, from stage2",
            )
            return unknown
        candidates = self._candidates(text, scope)
        for candidate in candidates:
            found = self.values.get(candidate) or self.block_values.get(candidate)
            if found is not None:
                self.references[item.value.span] = candidate
                self.read_by_name.add(found.source)
                return found
        self.unresolved.append((candidates, item.value.span))
        return unknown

    @staticmethod
    def _candidates(text: str, scope: Scope) -> tuple[str, ...]:
        """Where `from text` looks, nearest first: the innermost define instance's layers (whose
        names are relative to it) and blocks, then each enclosing scope's, then the model's."""
        found: list[str] = []
        at: Scope | None = scope
        while at is not None:
            if at.instance:
                found.append(f"{at.instance}_{text}")
            if at.path:
                found.append(".".join((*at.path, text)))
            at = at.parent
        found.append(text)
        return tuple(dict.fromkeys(found))

    def _report_unresolved(self) -> None:
        for candidates, span in self.unresolved:
            text = candidates[-1]
            later = next(
                (c for c in candidates if c in self.values or c in self.block_values), None
            )
            if later is not None:
                where = self.names.get(later) or self.blocks.get(later)
                line = f", at line {where.line}" if where is not None else ""
                self.diagnostics.error(
                    codes.UNKNOWN_VALUE,
                    f"'{text}' is computed later{line}",
                    span,
                    "from reads a value computed before it; reading a later one would make a cycle",
                )
                continue
            # Suggest names as they would be written here: relative to the instance or block.
            names = [*self.values, *self.block_values]
            prefixes = [c[: -len(text)] for c in candidates[:-1]]
            visible = [n[len(p) :] for p in prefixes for n in names if n.startswith(p)]
            self.diagnostics.error(
                codes.UNKNOWN_VALUE,
                f"no layer or block named '{text}' comes before this",
                span,
                did_you_mean(text, [*visible, *names])
                or "from takes `input`, a layer's name or a named block's",
            )

    def _report_unused(self, output: str) -> None:
        """A layer whose output nothing reads would be dropped by Keras and still computed by
        PyTorch: the backends would disagree, so it is an error."""
        read = {value for node in self.nodes for value in node.inputs} | {output}
        for node in self.nodes:
            if node.name not in read:
                self.diagnostics.error(
                    codes.UNUSED_VALUE,
                    f"the output of {node.name} is never read",
                    node.site or node.span,
                    f"a `from` moved the chain on without it; read it with `from {node.name}` "
                    "in a branch, or remove the layer",
                )

    def _open_block(self, name: str, span: Span, scope: Scope) -> Scope:
        inner = scope.child(name)
        dotted = ".".join(inner.path)
        if dotted in self.blocks:
            first = self.blocks[dotted]
            self.diagnostics.error(
                codes.DUPLICATE_NAME,
                f"block '{dotted}' is declared twice",
                span,
                'each copy made by repeat needs a name of its own: "unit" + str(index + 1)'
                if first == span
                else f"first declared at line {first.line}",
            )
        else:
            self.blocks[dotted] = span
        return inner

    # ---- layers and joins ----------------------------------------------------------------------

    def _layer(self, call: ast.Call, scope: Scope, x: Tensor) -> Tensor:
        # A layer that cannot be built (unknown kind, bad arguments) leaves the shape unknown:
        # the layers after it are still created and their arguments checked, but their shapes
        # are not, since a layer that was meant to pool or flatten would otherwise make every
        # later one look wrong (`GlobalAveragePooling2D()` then `dense(10)`).
        self.unbuilt = True
        unknown = Tensor(x.source, None, None)
        cls = self._kind(call)
        if cls is None:
            return unknown
        args, complete = collect_args(
            call,
            cls,
            cls.kind,
            self.diagnostics,
            reserved=frozenset({"name"}),
            context=self._context(scope, x),
        )
        explicit = args.pop("name", None)
        layer = validate(
            cls,
            {**scope.defaults_for(cls.kind), **args},
            cls.kind,
            call.span,
            self.diagnostics,
            call.name.span,
            complete,
        )
        if layer is None:
            return unknown
        self.unbuilt = False
        if explicit is not None and scope.instance and isinstance(explicit.value, str):
            explicit = replace(explicit, value=f"{scope.instance}_{explicit.value}")
        name = self._explicit_name(explicit) if explicit else None
        if name is not None and explicit is not None:
            self.names[name] = explicit.span
        return self._add(name or self._auto_name(scope, cls.kind), layer, [x], call.span, scope)

    def _explicit_name(self, arg: BoundArg) -> str | None:
        value = arg.value
        if not isinstance(value, str) or not ast.IDENTIFIER.match(value) or value == Graph.INPUT:
            self.diagnostics.error(
                codes.INVALID_VALUE,
                "a layer name must be an identifier such as block5_conv3",
                arg.span,
            )
            return None
        if value == "training":
            # nn.Module's own flag: the PyTorch script could not hold a layer of that name.
            self.diagnostics.error(
                codes.INVALID_VALUE,
                "a layer name cannot be 'training'",
                arg.span,
                "for example training_1",
            )
            return None
        if keyword.iskeyword(value):
            # The PyTorch script names each module attribute after its layer: self.<name>.
            self.diagnostics.error(
                codes.INVALID_VALUE,
                f"a layer name cannot be the Python keyword '{value}'",
                arg.span,
                f"for example {value}_1",
            )
            return None
        if value in self.names:
            first = self.names[value]
            self.diagnostics.error(
                codes.DUPLICATE_NAME,
                f"layer name '{value}' is used twice",
                arg.span,
                "each copy made by repeat needs its own name; leave name= out to number them"
                if first == arg.span
                else f"first used at line {first.line}",
            )
            return None
        return value

    def _auto_name(self, scope: Scope, base: str) -> str:
        key = (scope.path, base)
        while True:
            self.counters[key] = self.counters.get(key, 0) + 1
            name = f"{scope.prefix}{base}_{self.counters[key]}"
            if name not in self.names:
                return name

    def _add(
        self,
        name: str,
        layer: LayerArgs,
        inputs: list[Tensor],
        span: Span,
        scope: Scope,
        role: str = "layer",
        input_spans: list[Span] | None = None,
    ) -> Tensor:
        """A node; `input_spans` locate a mismatch of a join's inputs at the branch."""
        self.names.setdefault(name, span)
        node = Node(
            name=name,
            kind=layer.kind,
            layer=layer,
            inputs=tuple(t.source for t in inputs),
            span=span,
            scope=scope.path,
            role=role,  # type: ignore[arg-type]
            lane="shortcut" if role == "shortcut" else scope.lane,
        )
        shapes = [t.shape for t in inputs]
        if all(s is not None for s in shapes):
            known: list[Shape] = [s for s in shapes if s is not None]
            try:
                refuse_tokens(layer, known)
                node.output_shape = layer.output_shape(known)
            except ShapeError as error:
                where = layer.span_of(error.field) if error.field else span
                if input_spans and error.input is not None:
                    where = input_spans[error.input]
                self.diagnostics.error(error.code, error.message, where or span, error.hint)
            if node.output_shape is not None:
                node.params = layer.params(known, node.output_shape)
                node.macs = layer.macs(known, node.output_shape)
                node.receptive_field = _receptive_field(layer, inputs, self.image)
        self.nodes.append(node)
        out = Tensor(name, node.output_shape, node.receptive_field)
        self.values[name] = out
        return out

    def _join_name(
        self, items: tuple[ast.Item, ...], scope: Scope, x: Tensor
    ) -> tuple[tuple[ast.Item, ...], str | None]:
        """A residual's or a join's `name NAME` setting, which names its join node as a layer's
        name= does (relative to a define's instance), and the items without it."""
        named = [i for i in items if isinstance(i, ast.Setting) and i.key.text == "name"]
        rest = tuple(i for i in items if not any(i is n for n in named))
        if not named:
            return rest, None
        for extra in named[1:]:
            self.diagnostics.error(codes.SETTING_TWICE, "the join is named twice", extra.key.span)
        setting = named[0]
        try:
            value = resolve(setting.value, self._context(scope, x))
        except ExpressionError as error:
            self.diagnostics.error(error.code, error.message, error.span, error.hint)
            return rest, None
        text = value.text if isinstance(value, ast.Name) else getattr(value, "value", None)
        if not isinstance(text, str):
            self.diagnostics.error(
                codes.WRONG_KIND, "name takes a layer name such as mixed0", setting.value.span
            )
            return rest, None
        prefixed = f"{scope.instance}_{text}" if scope.instance else text
        name = self._explicit_name(BoundArg(prefixed, setting.value.span, setting.key.span))
        if name is not None:
            self.names[name] = setting.value.span
        return rest, name

    def _auto_join_name(self, scope: Scope, kind: str) -> str:
        """An unnamed join inside a define's instance is `<instance>_<kind>` while that is free
        (`block1a_add`, as keras.applications names them); elsewhere it is numbered."""
        if scope.instance and f"{scope.instance}_{kind}" not in self.names:
            return f"{scope.instance}_{kind}"
        return self._auto_name(scope, kind)

    def _residual(self, item: ast.Section, scope: Scope, x: Tensor) -> Tensor:
        items, explicit = self._join_name(self._decided(item.items, scope, x), scope, x)
        shortcuts = [i for i in items if isinstance(i, ast.Section) and i.key.text == "shortcut"]
        for extra in shortcuts[1:]:
            self.diagnostics.error(
                codes.SETTING_TWICE,
                "a residual has one shortcut",
                extra.key.span,
                f"first given at line {shortcuts[0].span.line}",
            )
        first = len(self.nodes)
        body_items = tuple(i for i in items if not any(i is s for s in shortcuts))
        body = self._walk(body_items, scope, x)
        body_nodes = self.nodes[first:]
        if not body_nodes:
            self.diagnostics.error(
                codes.NOT_USABLE_HERE,
                "a residual needs at least one layer",
                item.key.span,
                "residual { conv2d(64) batchnorm() } adds its input to the body's output",
            )
            return x
        if shortcuts:
            shortcut = self._explicit_shortcut(shortcuts[0], scope, x, body)
        elif x.shape is not None and body.shape is not None and x.shape != body.shape:
            shortcut = self._projection(item, scope, x, body.shape, body_nodes)
        else:
            shortcut = x
        if shortcut.shape is None and x.shape is not None and body.shape is not None:
            return Tensor(body.source, None, None)
        # A named residual's join is named after it, as keras.applications names its adds.
        label = item.label.text if isinstance(item.label, ast.Name) else None
        if label and scope.instance:  # relative to the call, as its layers' names are
            label = f"{scope.instance}_{label}"
        name = f"{label}_add" if label and f"{label}_add" not in self.names else None
        return self._add(
            explicit or name or self._auto_join_name(scope, "add"),
            REGISTRY["add"](),
            [body, shortcut],
            item.key.span,
            scope,
            role="join",
        )

    def _join(self, item: ast.Section, scope: Scope, x: Tensor) -> Tensor:
        """`concat NAME { branch { ... } branch { ... } }`: every branch starts from the join's
        input (an empty one is the input itself), and the join combines their outputs."""
        kind = item.key.text
        label = item.label
        if label is not None and not isinstance(label, ast.Name):
            self.diagnostics.error(codes.WRONG_KIND, "a join's name must be a name", label.span)
            label = None
        inner = (
            self._open_block(label.text, label.span, scope)
            if isinstance(label, ast.Name)
            else scope.child(None)
        )
        branches: list[ast.Section] = []
        children, explicit = self._join_name(self._decided(item.items, inner, x), scope, x)
        for child in children:
            if isinstance(child, ast.Section) and child.key.text == "branch":
                branches.append(child)
                continue
            span = child.key.span if not isinstance(child, ast.Call) else child.span
            self.diagnostics.error(
                codes.NOT_USABLE_HERE,
                "a join holds branches, not layers",
                span,
                f"put it in a branch: {kind} {{ branch {{ ... }} branch {{ ... }} }}, "
                "or after the closing brace",
            )
        if len(branches) < 2:
            self.diagnostics.error(
                codes.NOT_USABLE_HERE,
                f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} needs at least two branches",
                item.key.span,
                f"{kind} {{ branch {{ conv2d(32, 1) }} branch {{}} }}: each starts from the "
                "same input, and an empty branch is the input itself",
            )
            return (
                Tensor(x.source, None, None)
                if not branches
                else self._walk(branches[0].items, inner, x)
            )
        outputs = [
            self._branch(branch, index, inner, x) for index, branch in enumerate(branches, 1)
        ]
        spans = [branch.key.span for branch in branches]
        name = f"{label.text}_{kind}" if isinstance(label, ast.Name) else None
        if name is not None and scope.instance:  # relative to the call, as its layers' are
            name = f"{scope.instance}_{name}"
        if name is not None and name in self.names:
            name = None
        out = self._add(
            explicit or name or self._auto_join_name(scope, kind),
            REGISTRY[kind]().located(item.key.span, {}),
            outputs,
            item.key.span,
            inner,
            role="join",
            input_spans=spans,
        )
        return self._closed(inner, out)

    def _branch(self, branch: ast.Section, index: int, scope: Scope, x: Tensor) -> Tensor:
        label = branch.label
        if label is not None and not isinstance(label, ast.Name):
            self.diagnostics.error(codes.WRONG_KIND, "a branch's name must be a name", label.span)
            label = None
        # Generated code keeps the branch in a variable of its own, named after it if it can be.
        if isinstance(label, ast.Name):
            inner = self._open_block(label.text, label.span, scope)
            lane = label.text if ast.IDENTIFIER.match(label.text) else f"branch{index}"
        else:
            inner = scope.child(None)
            lane = f"branch{index}"
        if scope.lane != "x":
            lane = f"{scope.lane}_{lane}"
        if keyword.iskeyword(lane) or lane in ("x", "inputs") or lane.startswith("shortcut"):
            lane = f"branch{index}" if scope.lane == "x" else f"{scope.lane}_branch{index}"
        inner.lane = lane
        out = self._walk(branch.items, inner, x)
        return self._closed(inner, out) if isinstance(label, ast.Name) else out

    def _explicit_shortcut(
        self, section: ast.Section, scope: Scope, x: Tensor, body: Tensor
    ) -> Tensor:
        """The skip path as written in `shortcut { ... }` (empty: the identity)."""
        if section.label is not None:
            self.diagnostics.error(codes.WRONG_KIND, "shortcut takes no name", section.label.span)
        first = len(self.nodes)
        out = self._walk(section.items, scope, x)
        for node in self.nodes[first:]:
            node.role, node.lane = "shortcut", "shortcut"
        if out.shape is not None and body.shape is not None and out.shape != body.shape:
            self.diagnostics.error(
                codes.CANNOT_JOIN,
                f"the shortcut's output {format_shape(out.shape)} does not match "
                f"the body's output {format_shape(body.shape)}",
                section.key.span,
                "the two paths are added, so their shapes must be equal",
            )
            return Tensor(out.source, None, None)
        return out

    def _projection(
        self, item: ast.Section, scope: Scope, x: Tensor, target: Shape, body: list[Node]
    ) -> Tensor:
        """A 1x1 convolution (plus BatchNorm when the body normalises) that maps the shortcut to
        the body's output shape, as ResNet does when a stage changes width or resolution."""
        assert x.shape is not None
        if len(x.shape) != 3 or len(target) != 3:
            self.diagnostics.error(
                codes.CANNOT_JOIN,
                f"residual cannot join its input {format_shape(x.shape)} "
                f"with its body's output {format_shape(target)}",
                item.key.span,
                f"on tokens the body must give back {format_shape(x.shape)}, as a ViT's "
                f"blocks end in dense({x.shape[-1]})"
                if len(x.shape) == 2
                else "a 1x1 projection needs (H, W, C) tensors on both paths",
            )
            return Tensor(x.source, None, None)
        strides = [
            _projection_stride(size, out) for size, out in zip(x.shape[:2], target[:2], strict=True)
        ]
        if None in strides:
            self.diagnostics.error(
                codes.CANNOT_JOIN,
                f"residual cannot join its input {format_shape(x.shape)} "
                f"with its body's output {format_shape(target)}",
                item.key.span,
                "no strided 1x1 projection maps one size onto the other; "
                "use padding=same in the body so sizes divide evenly",
            )
            return Tensor(x.source, None, None)
        span = item.key.span
        # The shortcut is regularised like the body: it takes the L2 of the body's first conv.
        first_conv = next((n.layer for n in body if isinstance(n.layer, Conv2D)), None)
        conv = Conv2D(
            filters=target[2],
            kernel=(1, 1),
            stride=(strides[0], strides[1]),
            use_bias=False,
            l2=first_conv.l2 if first_conv is not None else 0.0,
        )
        conv = conv.located(span, {})
        out = self._add(self._auto_name(scope, "shortcut_conv"), conv, [x], span, scope, "shortcut")
        norm = next((n.layer for n in body if isinstance(n.layer, BatchNorm)), None)
        if norm is not None:
            bn = BatchNorm(epsilon=norm.epsilon, momentum=norm.momentum).located(span, {})
            out = self._add(
                self._auto_name(scope, "shortcut_bn"), bn, [out], span, scope, "shortcut"
            )
        return out


def _projection_stride(size: int, out: int) -> int | None:
    """The stride s of a 1x1 valid convolution that maps `size` to `out`: (size-1)//s + 1 == out.
    The smallest such s is ceil(size / out), if any s works at all."""
    if out < 1 or out > size:
        return None
    stride = -(-size // out)
    return stride if (size - 1) // stride + 1 == out else None


def refuse_tokens(layer: LayerArgs, inputs: list[Shape]) -> None:
    """Tokens (N, D) go only into the kinds that take them (`LayerArgs.takes_tokens`): any
    other kind reads a rank-2 shape as something it is not."""
    if not any(len(shape) == 2 for shape in inputs):
        return
    shape = next(s for s in inputs if len(s) == 2)
    activation = layer.fused_activation()
    if layer.takes_tokens and activation is not None and not activation.takes_tokens:
        raise ShapeError(
            codes.NO_TOKENS,
            f"{layer.kind}'s activation {activation.kind} does not take tokens "
            f"{format_shape(shape)}: it would act across the tokens",
            "pool the tokens first: token_pool(), then the dense layer with the activation",
            field="activation",
        )
    if layer.takes_tokens:
        return
    takers = ", ".join(token_kinds())
    raise ShapeError(
        codes.NO_TOKENS,
        f"{layer.kind} does not take tokens, but gets {format_shape(shape)}",
        f"on tokens: {takers} (residual {{ }}), activations but softmax; token_pool() makes "
        "them a vector",
    )


def _receptive_field(
    layer: LayerArgs, inputs: list[Tensor], image: tuple[int, int] | None
) -> ReceptiveField | None:
    fields = [t.field for t in inputs if t.field is not None]
    if not fields:
        return None
    size = (max(f.size[0] for f in fields), max(f.size[1] for f in fields))
    jump = fields[0].jump
    window = layer.window()
    if window is None:
        return ReceptiveField(size=size, jump=jump)
    if window.global_:
        # After flatten or global pooling every unit sees the whole input, and there is one
        # position: the field is the image, and so is the step to a next position.
        whole = image or size
        return ReceptiveField(size=whole, jump=whole)
    return ReceptiveField(
        size=(
            size[0] + window.dilation[0] * (window.kernel[0] - 1) * jump[0],
            size[1] + window.dilation[1] * (window.kernel[1] - 1) * jump[1],
        ),
        jump=(
            max(1, jump[0] * window.stride[0] // window.zoom[0]),
            max(1, jump[1] * window.stride[1] // window.zoom[1]),
        ),
    )


# --------------------------------------------------------------------------------------------
# The whole document


@dataclass
class Lowered:
    """A lowered spec. A section that failed to bind is None, so checks skip it."""

    graph: Graph | None
    data: DataSection | None
    augment: AugmentSection | None
    train: TrainSection | None
    evaluate: EvaluateSection | None
    track: TrackSection | None
    # The sweep's settings, and its section as written (its space is read against the spec
    # once the model is known: cnnspec.search_space).
    sweep: SweepSection | None = None
    sweep_section: ast.Section | None = None


def _reserved_names() -> dict[str, str]:
    """Names a define may not take, and what they already are."""
    taken = {kind: "layer kind" for kind in user_kinds()}
    taken.update({kind: "join" for kind in join_kinds()})
    taken.update({key: "section" for key in (*MODEL_SECTIONS, "branch", "shortcut")})
    taken.update({key: "setting" for key in MODEL_SETTINGS})
    taken.update({name: "function" for name in BUILTINS})
    return taken


def lower_document(
    document: ast.Document, diagnostics: Diagnostics, image_size: tuple[int, int] | None = None
) -> Lowered:
    found: dict[str, ast.Section] = {}
    for item in document.items:
        if not isinstance(item, ast.Section):
            key = item.key.text if isinstance(item, ast.Setting) else item.name.text
            span = item.key.span if isinstance(item, ast.Setting) else item.name.span
            hint = did_you_mean(key, TOP_SECTIONS)
            if hint is None and (key in REGISTRY or key in MODEL_SETTINGS):
                hint = "layers and model settings go inside `model NAME { ... }`"
            diagnostics.error(
                codes.UNKNOWN_SETTING,
                f"'{key}' cannot stand at the top level",
                span,
                hint or f"a spec is made of sections: {', '.join(TOP_SECTIONS)}",
            )
            continue
        key = item.key.text
        if key == "define":
            continue  # any number of them, read by the model's lowering
        if key not in TOP_SECTIONS:
            diagnostics.error(
                codes.UNKNOWN_SETTING,
                f"unknown section '{key}'",
                item.key.span,
                did_you_mean(key, TOP_SECTIONS) or f"sections are: {', '.join(TOP_SECTIONS)}",
            )
            continue
        if key in found:
            diagnostics.error(
                codes.SETTING_TWICE,
                f"section '{key}' appears twice",
                item.key.span,
                f"first at line {found[key].span.line}; merge the two",
            )
            continue
        if key != "model" and item.label is not None:
            diagnostics.error(codes.WRONG_KIND, f"the {key} section takes no name", item.label.span)
        found[key] = item

    graph = None
    if "model" in found:
        graph = ModelLowering(diagnostics, image_size).lower(
            found["model"], Path(document.source.path).stem, document.items
        )
    else:
        diagnostics.error(
            codes.MISSING_SETTING,
            "the spec has no model",
            document.source.span_at(0),
            "start with `model NAME { input 32x32x3 ... }`",
        )

    def bind(key: str, default: Callable[[], object]) -> object | None:
        section = found.get(key)
        if section is None:
            return default()
        return bind_section(section.items, SCHEMAS[key], key, section.span, diagnostics)

    return Lowered(
        graph=graph,
        data=bind("data", DataSection),  # type: ignore[arg-type]
        augment=bind("augment", AugmentSection),  # type: ignore[arg-type]
        train=bind("train", TrainSection),  # type: ignore[arg-type]
        evaluate=bind("evaluate", EvaluateSection),  # type: ignore[arg-type]
        track=bind("track", TrackSection.unwritten),  # type: ignore[arg-type]
        sweep=_bind_sweep(found.get("sweep"), diagnostics),
        sweep_section=found.get("sweep"),
    )


def _bind_sweep(section: ast.Section | None, diagnostics: Diagnostics) -> SweepSection | None:
    """The sweep's settings; its `space { }` is read with the model (cnnspec.search_space)."""
    if section is None:
        return None
    settings = tuple(
        item
        for item in section.items
        if not (isinstance(item, ast.Section) and item.key.text == SPACE)
    )
    bound = bind_section(settings, SCHEMAS["sweep"], "sweep", section.span, diagnostics)
    return bound  # type: ignore[return-value]
