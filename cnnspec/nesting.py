"""The nesting pass: from a DAG of layers to the language's nesting, a chain of layers, where a
join combines branches that all start from one value (its fork, the nearest value every path
to the join passes through). An add with an empty branch is a `residual`; with two, a residual
with a `shortcut`. A value used past the join that ends its branch (NASNet's cells read the two
cells before them, DPN's dual path its dense part) is read again by a `From` item, the
language's `from NAME`, at the start of the chain that reads it. Only a layer off the path to
the output (whose value nothing the model outputs reads) raises `Unnestable`, layer by layer.
A join whose branches read one another's layers (NASNet's cells read their two inputs in every
branch), or whose other branches all start with a From, follows its branches' items rather than
holding them, in the source's order where what they read allows: cells which read the cells
before them follow one another, as they are written.

Each `From` names a value written before it: chains are walked from their last item back, but
the branches of a join first to last, and everything placed inside a join's branches is
dominated by its fork; so a value placed before a chain reaches it is in an earlier branch of
an enclosing join (tests/test_nesting.py checks this on random DAGs). A residual whose shortcut
reads a value of its body keeps the two in the source's order for the same reason.

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
  or residual a `Fork` of columns side by side, each From a `Read`, a tag atop its column."""

from __future__ import annotations

import itertools
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


@dataclass(frozen=True)
class From:
    """The chain goes on from `value`, a value written earlier (the language's `from NAME`)."""

    value: str


Item: TypeAlias = V | Join[V] | Residual[V] | From


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


_UNREAD = (
    "cnnspec's nesting does not read it there (a bug in cnnspec: the nesting realises every "
    "connection of a layer on the path to the output)"
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
    ends with), `vertices` in topological order. Unnestable when some layer is off the path
    to the output: a cnnspec model computes nothing it does not read."""
    producer = {vertex.name: vertex for vertex in vertices}
    dominator = dominators(vertices, source)

    used: dict[str, list[str]] = {}
    for vertex in vertices:
        for value in vertex.inputs:
            used.setdefault(value, []).append(vertex.name)

    # Each layer is expanded once: a layer reached again (from another join's branch, a
    # later layer's input) is read by a From, and not followed a second time. A graph whose
    # joins all read earlier values (torchvision's DenseNet: each concat reads every feature
    # map of its block) would otherwise be walked once per path, 2^n times.
    placed: set[str] = set()

    def chain(start: str, end: str) -> list[Item[V]]:
        items: list[Item[V]] = []
        value = end
        while value != start:
            if value in placed:
                items.append(From(value))
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

    position = {vertex.name: index for index, vertex in enumerate(vertices)}
    items = _hoisted(chain(source, output), source, position)
    problems: list[Problem[V]] = []
    for vertex in vertices:
        if vertex.name not in placed:
            problems.append(
                Problem(
                    vertex, "a layer off the path to the output", "a cnnspec model has one output"
                )
            )
    # Every input of a placed layer is read where the walk placed it, by the chain or a From;
    # a value feeding a layer elsewhere would be a connection the spec drops.
    successors = _successors(items, source)
    for value, users in used.items():
        expected = successors.get(value, set())
        stray = [u for u in users if u not in expected and u in placed]
        if stray:
            problems.append(
                Problem(producer.get(value), f"its output also feeds {', '.join(stray)}", _UNREAD)
            )
    if problems:
        raise Unnestable(problems, source)
    return items


def _hoisted(items: list[Item[V]], start: str, position: dict[str, int]) -> list[Item[V]]:
    """`items` (a chain from `start`) with the joins that read values across their branches
    written after those branches' items, not around them, in the source's order
    (`_scheduled`); and each join whose other branches all start with a From written after
    its first branch's items: a join's fork is the value every path to it passes through,
    which for NASNet's cells (each reading the two before it) lies cells back, and each cell
    would otherwise nest inside the next. Each item reads what it read: the first branch read
    the value before the join, as the hoisted items do, and the join's first branch, now
    empty, reads their end. A From of the value the chain already holds there is left out."""
    result: list[Item[V]] = []
    value = start
    for item in items:
        if isinstance(item, From):
            if item.value != value:
                result.append(item)
                value = item.value
            continue
        if isinstance(item, Join):
            first, *rest = [_hoisted(branch, value, position) for branch in item.branches]
            scheduled = _scheduled(item.layer, [first, *rest], value, position)
            if scheduled is not None:
                before, item = scheduled
                result += before
                value = end_of(before, value)
            elif first and rest and all(branch and isinstance(branch[0], From) for branch in rest):
                result += first
                value = end_of(first, value)
                item = _join(item.layer, [[], *(_after(branch, value) for branch in rest)])
            else:
                item = _join(item.layer, [first, *rest])
        elif isinstance(item, Residual):
            body = _hoisted(item.body, value, position)
            shortcut = (
                _hoisted(item.shortcut, value, position) if item.shortcut is not None else None
            )
            if body and shortcut and isinstance(shortcut[0], From):
                result += body
                value = end_of(body, value)
                item = _join(item.layer, [[], _after(shortcut, value)])
            else:
                item = _join(item.layer, [body, shortcut or []])
        result.append(item)
        value = end_of([item], value)
    return result


@dataclass
class _Segment(Generic[V]):
    """An item of a join's branch as `_scheduled` orders it: the value it reads first, the
    layers it makes, and where the first of them is in the source."""

    item: Item[V]
    reads: str
    made: set[str]
    first: int


def _scheduled(
    layer: V, branches: list[list[Item[V]]], start: str, position: dict[str, int]
) -> tuple[list[Item[V]], Item[V]] | None:
    """Where a branch of the join `layer` reads a layer of another (NASNet's cell reads its
    two inputs in every branch) and the branches are not in the source's order: the
    branches' items before the join, in the source's order as far as what each reads allows,
    each after a From where it reads other than the item before it, and the join of their
    ends; None otherwise."""
    made = [{vertex.name for vertex in _layers(branch)} for branch in branches]
    if not any(
        value in made[other]
        for index, branch in enumerate(branches)
        for value in _froms(branch)
        for other in range(len(branches))
        if other != index
    ):
        return None
    # Branches already written in the source's order read best as they are, around the join.
    order = [position[vertex.name] for branch in branches for vertex in _layers(branch)]
    if all(a < b for a, b in itertools.pairwise(order)):
        return None
    segments: list[_Segment[V]] = []
    for branch in branches:
        value = start
        for item in branch:
            if isinstance(item, From):
                value = item.value
                continue
            names = {vertex.name for vertex in _layers([item])}
            first = min(position[name] for name in names)
            segments.append(_Segment(item, value, names, first))
            value = end_of([item], value)
    maker = {name: index for index, segment in enumerate(segments) for name in segment.made}
    needs = [
        {maker[value] for value in (segment.reads, *_froms([segment.item])) if value in maker}
        - {index}
        for index, segment in enumerate(segments)
    ]
    done: set[int] = set()
    items: list[Item[V]] = []
    value = start
    while len(done) < len(segments):
        # The text was in this order before, so some segment is always ready.
        ready = [i for i in range(len(segments)) if i not in done and needs[i] <= done]
        index = min(ready, key=lambda i: segments[i].first)
        segment = segments[index]
        if segment.reads != value:
            items.append(From(segment.reads))
        items.append(segment.item)
        value = end_of([segment.item], value)
        done.add(index)
    ends = [end_of(branch, start) for branch in branches]
    return items, _join(layer, [[] if end == value else [From(end)] for end in ends])


def _after(branch: list[Item[V]], value: str) -> list[Item[V]]:
    """`branch` where the chain holds `value`: without a From of it at its start."""
    return branch[1:] if branch and branch[0] == From(value) else branch


def _join(vertex: V, branches: list[list[Item[V]]]) -> Item[V]:
    if vertex.kind == "add" and len(branches) == 2:
        empty = [not branch for branch in branches]
        if not all(empty):
            if any(empty):
                body = branches[empty.index(False)]
                # A residual's body holds a layer: `residual { from b }` adds nothing of its
                # own, and is written as the add of two branches.
                return Residual(vertex, body, None) if _size(body) else Join(vertex, branches)
            # The longer path is the body; the other, the shortcut. The body is written
            # first: a second branch that reads a value of the first stays second.
            first, second = branches
            if _size(second) > _size(first) and not _reads_from(second, first):
                first, second = second, first
            if _size(first):
                return Residual(vertex, first, second)
    return Join(vertex, branches)


def _reads_from(reader: list[Item[V]], written: list[Item[V]]) -> bool:
    values = {layer.name for layer in _layers(written)}
    return any(value in values for value in _froms(reader))


def _froms(items: list[Item[V]]) -> Iterator[str]:
    for item in items:
        if isinstance(item, From):
            yield item.value
        elif isinstance(item, Join):
            for branch in item.branches:
                yield from _froms(branch)
        elif isinstance(item, Residual):
            yield from _froms(item.body)
            yield from _froms(item.shortcut or [])


def _size(items: list[Item[V]]) -> int:
    return sum(1 for _ in _layers(items))


def _layers(items: list[Item[V]]) -> Iterator[V]:
    for item in items:
        if isinstance(item, From):
            continue
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
    """Which layers each value feeds, as the nesting places them: a chain's value feeds the
    item after it, a From's value the item after the From."""
    result: dict[str, set[str]] = {}
    value = start

    def feed(source: str, target: str) -> None:
        result.setdefault(source, set()).add(target)

    for item in items:
        if isinstance(item, From):
            value = item.value
            continue
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
    """The value a chain ends with: its last layer's, a From's value where it is only that,
    or `start` for an empty one."""
    if not items:
        return start
    last = items[-1]
    if isinstance(last, From):
        return last.value
    return last.layer.name if isinstance(last, Join | Residual) else last.name


def layers_of(items: list[Item[V]]) -> list[V]:
    """Every layer of a chain, nested ones included, each before the join that reads it (a
    From adds none)."""
    return list(_layers(items))


def froms_of(items: list[Item[V]]) -> list[str]:
    """The values a chain's From items read, nested ones included, in textual order."""
    return list(_froms(items))
