"""The nesting pass: from a DAG of layers to the language's nesting, a chain of layers, where a
join combines branches that all start from one value (its fork, the nearest value every path
to the join passes through). An add with an empty branch is a `residual`; with two, a residual
with a `shortcut`. A graph that is not nested this way (a value used past the join that ends
its branch, as NASNet's cells use the two cells before them) raises `Unnestable`, layer by
layer.

The pass reads any vertices with a `name`, a `kind` and `inputs` (the values they read, by
name), in topological order: the compiler's `cnnspec.ir.Node`s (the diagram's tree) and the
importer's `cnnspec.importing.network.Layer`s (the spec it writes) alike.

The passes over a graph, and where each lives:

- nesting (this module): the DAG as chains, joins and residuals; read by the importer's writer
  (cnnspec.importing.writer) and by the diagram's tree.
- layout (cnnspec.layout.flattened_inputs): the layers whose weights act on the features of a
  flattened (H, W, C) map, whose order differs between channels-last and channels-first.
- batchnorm folding (cnnspec.export.foldable_batchnorms, fold_batchnorms): a batchnorm on a
  feature vector that reaches only a dense layer folded into that layer's weights, in the
  ONNX export.
- the diagram tree (cnnspec.diagram.tree_of): the nesting as the drawing places it, each join
  or residual a `Fork` of columns side by side."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeAlias, TypeVar


class Vertex(Protocol):
    """A layer of a DAG as the nesting reads it."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def inputs(self) -> tuple[str, ...]: ...


V = TypeVar("V", bound=Vertex)


@dataclass
class Join(Generic[V]):
    layer: V  # the add, concat or multiply
    branches: list[list[Item[V]]]


@dataclass
class Residual(Generic[V]):
    layer: V  # the add
    body: list[Item[V]]
    shortcut: list[Item[V]] | None  # None: the identity


Item: TypeAlias = V | Join[V] | Residual[V]


@dataclass(frozen=True)
class Problem(Generic[V]):
    """One thing the nesting cannot place: which layer (None: the graph's input), what, why."""

    layer: V | None
    what: str
    why: str


class Unnestable(Exception, Generic[V]):
    """The graph is not nested the way the language nests: `problems` lists every place."""

    def __init__(self, problems: list[Problem[V]], source: str) -> None:
        self.problems = problems
        self.source = source
        where = [f"{p.layer.name if p.layer is not None else source}: {p.what}" for p in problems]
        super().__init__("the graph cannot be nested: " + "; ".join(where))


_REUSED = (
    "a join combines branches that start from one value; a value used again "
    "after the join that ends its branch cannot be written"
)


def dominators(vertices: Sequence[V], source: str) -> dict[str, str]:
    """Each vertex's nearest value that every path from `source` to it passes through: the
    fork of a join, a single-input vertex's input (`vertices` in topological order)."""
    order = {source: -1, **{vertex.name: i for i, vertex in enumerate(vertices)}}
    dominator: dict[str, str] = {}

    def common(a: str, b: str) -> str:
        while a != b:
            if order[a] > order[b]:
                a = dominator[a]
            else:
                b = dominator[b]
        return a

    for vertex in vertices:
        fork = vertex.inputs[0]
        for value in vertex.inputs[1:]:
            fork = common(fork, value)
        dominator[vertex.name] = fork
    return dominator


def nest(vertices: Sequence[V], source: str, output: str) -> list[Item[V]]:
    """The chain from `source` (the graph's input value) to `output` (the value the graph
    ends with), `vertices` in topological order. Unnestable when some layer cannot be placed
    exactly once, or some value feeds a layer the nesting does not read it into."""
    producer = {vertex.name: vertex for vertex in vertices}
    dominator = dominators(vertices, source)

    used: dict[str, list[str]] = {}
    for vertex in vertices:
        for value in vertex.inputs:
            used.setdefault(value, []).append(vertex.name)

    # Each layer is expanded once: a layer reached again (from another join's branch) is
    # used past the join that ends its branch, a problem, and not followed a second time. A
    # graph whose joins all read earlier values (torchvision's DenseNet: each concat reads
    # every feature map of its block) would otherwise be walked once per path, 2^n times.
    placed: set[str] = set()
    twice: set[str] = set()

    def chain(start: str, end: str) -> list[Item[V]]:
        items: list[Item[V]] = []
        value = end
        while value != start:
            if value in placed:
                twice.add(value)
                break
            placed.add(value)
            vertex = producer[value]
            if len(vertex.inputs) > 1:
                fork = dominator[vertex.name]
                branches = [chain(fork, end) for end in vertex.inputs]
                items.append(_join(vertex, branches))
                value = fork
            else:
                items.append(vertex)
                value = vertex.inputs[0]
        items.reverse()
        return items

    items = chain(source, output)
    problems: list[Problem[V]] = []
    # A layer reached from two joins' branches would be written twice: its output is used
    # past the join that ends its branch.
    for name in sorted(twice):
        problems.append(
            Problem(producer[name], f"its output feeds {', '.join(used.get(name, []))}", _REUSED)
        )
    for vertex in vertices:
        if vertex.name not in placed:
            problems.append(
                Problem(
                    vertex, "a layer off the path to the output", "a cnnspec model has one output"
                )
            )
    # Each value must feed only the layer after it in its chain, or the branches of one join.
    successors = _successors(items, source)
    for value, users in used.items():
        expected = successors.get(value, set())
        stray = [u for u in users if u not in expected and u in placed]
        if stray:
            problems.append(
                Problem(producer.get(value), f"its output also feeds {', '.join(stray)}", _REUSED)
            )
    if problems:
        raise Unnestable(problems, source)
    return items


def _join(vertex: V, branches: list[list[Item[V]]]) -> Item[V]:
    if vertex.kind == "add" and len(branches) == 2:
        empty = [not branch for branch in branches]
        if not all(empty):
            if any(empty):
                body = branches[empty.index(False)]
                return Residual(vertex, body, None)
            # The longer path is the body; the other, the shortcut.
            first, second = branches
            if _size(second) > _size(first):
                first, second = second, first
            return Residual(vertex, first, second)
    return Join(vertex, branches)


def _size(items: list[Item[V]]) -> int:
    return sum(1 for _ in _layers(items))


def _layers(items: list[Item[V]]) -> Iterator[V]:
    for item in items:
        if isinstance(item, Join):
            for branch in item.branches:
                yield from _layers(branch)
            yield item.layer
        elif isinstance(item, Residual):
            yield from _layers(item.body)
            if item.shortcut:
                yield from _layers(item.shortcut)
            yield item.layer
        else:
            yield item


def _successors(items: list[Item[V]], start: str) -> dict[str, set[str]]:
    """Which layers each value may feed, as the nesting places them."""
    result: dict[str, set[str]] = {}
    value = start

    def feed(source: str, target: str) -> None:
        result.setdefault(source, set()).add(target)

    for item in items:
        if not isinstance(item, Join | Residual):
            feed(value, item.name)
            value = item.name
            continue
        branches = item.branches if isinstance(item, Join) else [item.body, item.shortcut or []]
        for branch in branches:
            inner = _successors(branch, value)
            for source, targets in inner.items():
                result.setdefault(source, set()).update(targets)
            end = end_of(branch, value)
            feed(end, item.layer.name)
        value = item.layer.name
    return result


def end_of(items: list[Item[V]], start: str) -> str:
    """The value a chain ends with: its last layer's, or `start` for an empty one."""
    if not items:
        return start
    last = items[-1]
    return last.layer.name if isinstance(last, Join | Residual) else last.name


def layers_of(items: list[Item[V]]) -> list[V]:
    """Every layer of a chain, nested ones included, each before the join that reads it."""
    return list(_layers(items))
