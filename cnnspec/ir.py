"""The checked intermediate representation: one source of truth for summaries and backends.

A model is a DAG of nodes in topological order. Every node carries its source span, its output
shape, its parameter counts, MACs and receptive field, computed once by the lowering pass;
backends read them and never recompute them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, ClassVar, Literal

from cnnspec.backbones import BACKBONES, Backbone, BackboneArgs
from cnnspec.registry import LayerArgs, Params, Shape
from cnnspec.sections import (
    AugmentSection,
    DataSection,
    EvaluateSection,
    Phase,
    SweepSection,
    TrackSection,
    TrainSection,
)
from cnnspec.source import Source, Span

if TYPE_CHECKING:  # search_space reads the IR, so the IR names its Space only for types
    from cnnspec.search_space import Space

FLOAT32_BYTES = 4


@dataclass(frozen=True, slots=True)
class ReceptiveField:
    size: tuple[int, int]
    jump: tuple[int, int]


@dataclass(kw_only=True)
class Node:
    name: str
    kind: str
    layer: LayerArgs
    inputs: tuple[str, ...]
    span: Span
    # Enclosing named blocks, outermost first: ("stage2", "unit1"). Freeze patterns match these.
    scope: tuple[str, ...] = ()
    # "shortcut" marks the projection the compiler inserts on a residual's skip path.
    role: Literal["layer", "shortcut", "join"] = "layer"
    # The path the node lies on, which generated code keeps in a variable of that name: "x" for
    # the main chain, "shortcut" for a residual's skip path, "branch2" (or the branch's name)
    # for a branch of a join.
    lane: str = "x"
    output_shape: Shape | None = None
    params: Params = field(default_factory=Params)
    macs: int = 0
    receptive_field: ReceptiveField | None = None
    # For a node made by a call of a defined block, the outermost such call: where an editor
    # shows it (`span` is the layer's line inside the definition, shared by every instance).
    site: Span | None = None

    @property
    def memory_bytes(self) -> int:
        """Output activation memory for one example, in float32."""
        return prod(self.output_shape) * FLOAT32_BYTES if self.output_shape else 0


@dataclass(kw_only=True)
class BackboneUse:
    """A model's `backbone NAME(...)`: the library network, its arguments, and the nodes it
    became (in the `backbone` block, named as keras.applications names them)."""

    name: str
    args: BackboneArgs
    nodes: tuple[str, ...]
    span: Span

    @property
    def library(self) -> Backbone:
        return BACKBONES[self.name]


@dataclass(kw_only=True)
class Graph:
    name: str
    span: Span
    input_shape: tuple[int, int, int] | None = None
    input_span: Span | None = None
    # The input as the spec declares it, when compiled at another image size.
    declared_input: tuple[int, int, int] | None = None
    nodes: list[Node] = field(default_factory=list)
    output: str | None = None
    # Declared block names (dotted for nested ones) and where they are declared.
    blocks: dict[str, Span] = field(default_factory=dict)
    # Blocks defined with parameters (`define mbconv(...)`): name to where the name is written.
    definitions: dict[str, Span] = field(default_factory=dict)
    # True when the model's last layer could not be built: its output is then unknown, and the
    # checks of the output (loss, classes, threshold) are skipped rather than judge the layer
    # before it.
    ends_unbuilt: bool = False
    backbone: BackboneUse | None = None
    # What each `from NAME` read, by where NAME is written: a layer's name or a block's dotted
    # path (the last instance wins for a `from` inside a define).
    references: dict[Span, str] = field(default_factory=dict)
    # Every value some `from` reads (the input or a node's name), in any instance.
    read_by_name: frozenset[str] = frozenset()

    INPUT: ClassVar[str] = "input"

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    @property
    def output_node(self) -> Node | None:
        return self.node(self.output) if self.output and self.output != self.INPUT else None

    @property
    def output_shape(self) -> Shape | None:
        if self.output == self.INPUT:
            return self.input_shape
        node = self.output_node
        return node.output_shape if node else None

    def value_shapes(self) -> dict[str, Shape]:
        """The shape of every value, the input's included, by name."""
        assert self.input_shape is not None
        shapes: dict[str, Shape] = {self.INPUT: self.input_shape}
        for node in self.nodes:
            assert node.output_shape is not None
            shapes[node.name] = node.output_shape
        return shapes

    def l2_factors(self) -> dict[str, float]:
        """Layers whose kernel carries an L2 penalty, with its factor."""
        return {n.name: n.layer.l2_factor() for n in self.nodes if n.layer.l2_factor()}

    @property
    def params(self) -> Params:
        total = Params()
        for node in self.nodes:
            total = total + node.params
        return total

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def memory_bytes(self) -> int:
        return sum(n.memory_bytes for n in self.nodes)


@dataclass(kw_only=True)
class PhasePlan:
    """A training phase with its freeze set resolved against the model."""

    phase: Phase
    frozen: frozenset[str]
    # Layers with weights that this phase unfreezes (frozen in the phase before), in model order.
    unfrozen: tuple[str, ...] = ()
    trainable_params: int
    non_trainable_params: int


@dataclass(kw_only=True)
class Spec:
    name: str
    source: Source
    model: Graph
    data: DataSection
    augment: AugmentSection
    train: TrainSection
    evaluate: EvaluateSection
    track: TrackSection
    phases: list[PhasePlan] = field(default_factory=list)
    # `cnnspec sweep`'s settings and search space, when the spec has a sweep section.
    sweep: SweepSection | None = None
    space: Space | None = None

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def sha256(self) -> str:
        """The spec text's digest, recorded in exported models."""
        return self.source.sha256
