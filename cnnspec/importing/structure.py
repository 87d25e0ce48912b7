"""From a DAG of layers to the language's nesting: a chain of layers, where a join combines
branches that all start from one value (its fork, the nearest value every path to the join
passes through). An add with an empty branch is a `residual`; with two, a residual with a
`shortcut`. A graph that is not nested this way (a value used past the join that ends its
branch, as NASNet's cells use the two cells before them) is reported, layer by layer."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from cnnspec.importing.network import INPUT, Gap, ImportFailure, Layer, Network


@dataclass
class Join:
    layer: Layer  # the add, concat or multiply
    branches: list[list[Item]]


@dataclass
class Residual:
    layer: Layer  # the add
    body: list[Item]
    shortcut: list[Item] | None  # None: the identity


Item = Layer | Join | Residual


@dataclass
class Chain:
    items: list[Item] = field(default_factory=list)


def nest(network: Network) -> list[Item]:
    producer = network.producer()
    order = {INPUT: -1, **{layer.name: i for i, layer in enumerate(network.layers)}}
    dominator: dict[str, str] = {}

    def common(a: str, b: str) -> str:
        while a != b:
            if order[a] > order[b]:
                a = dominator[a]
            else:
                b = dominator[b]
        return a

    for layer in network.layers:
        fork = layer.inputs[0]
        for value in layer.inputs[1:]:
            fork = common(fork, value)
        dominator[layer.name] = fork

    used: dict[str, list[str]] = {}
    for layer in network.layers:
        for value in layer.inputs:
            used.setdefault(value, []).append(layer.name)

    def chain(start: str, end: str) -> list[Item]:
        items: list[Item] = []
        value = end
        while value != start:
            layer = producer[value]
            if len(layer.inputs) > 1:
                fork = dominator[layer.name]
                branches = [chain(fork, source) for source in layer.inputs]
                items.append(_join(layer, branches))
                value = fork
            else:
                items.append(layer)
                value = layer.inputs[0]
        items.reverse()
        return items

    items = chain(INPUT, network.output)
    placements = [layer.name for layer in _layers(items)]
    placed = set(placements)
    gaps = []
    # A layer reached from two joins' branches would be written twice: its output is used
    # past the join that ends its branch.
    for name in sorted({n for n in placements if placements.count(n) > 1}):
        layer = producer[name]
        gaps.append(
            Gap(
                layer.origin or name,
                f"its output feeds {', '.join(used.get(name, []))}",
                "a join combines branches that start from one value; a value used again "
                "after the join that ends its branch cannot be written",
            )
        )
    for layer in network.layers:
        if layer.name not in placed:
            gaps.append(
                Gap(
                    layer.origin or layer.name,
                    "a layer off the path to the output",
                    "a cnnspec model has one output",
                )
            )
    # Each value must feed only the layer after it in its chain, or the branches of one join.
    successors = _successors(items, INPUT)
    for value, users in used.items():
        expected = successors.get(value, set())
        stray = [u for u in users if u not in expected and u in placed]
        if stray:
            where = producer[value].origin if value in producer else "the input"
            gaps.append(
                Gap(
                    where or value,
                    f"its output also feeds {', '.join(stray)}",
                    "a join combines branches that start from one value; a value used again "
                    "after the join that ends its branch cannot be written",
                )
            )
    if gaps:
        raise ImportFailure("the model's graph cannot be written in cnnspec", gaps)
    return items


def _join(layer: Layer, branches: list[list[Item]]) -> Item:
    if layer.kind == "add" and len(branches) == 2:
        empty = [not branch for branch in branches]
        if not all(empty):
            if any(empty):
                body = branches[empty.index(False)]
                return Residual(layer, body, None)
            # The longer path is the body; the other, the shortcut.
            first, second = branches
            if _size(second) > _size(first):
                first, second = second, first
            return Residual(layer, first, second)
    return Join(layer, branches)


def _size(items: list[Item]) -> int:
    return sum(1 for _ in _layers(items))


def _layers(items: list[Item]) -> Iterator[Layer]:
    for item in items:
        if isinstance(item, Layer):
            yield item
        elif isinstance(item, Join):
            for branch in item.branches:
                yield from _layers(branch)
            yield item.layer
        else:
            yield from _layers(item.body)
            if item.shortcut:
                yield from _layers(item.shortcut)
            yield item.layer


def _successors(items: list[Item], start: str) -> dict[str, set[str]]:
    """Which layers each value may feed, as the nesting places them."""
    result: dict[str, set[str]] = {}
    value = start

    def feed(source: str, target: str) -> None:
        result.setdefault(source, set()).add(target)

    for item in items:
        if isinstance(item, Layer):
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


def end_of(items: list[Item], start: str) -> str:
    if not items:
        return start
    last = items[-1]
    return last.name if isinstance(last, Layer) else last.layer.name


def layers_of(items: list[Item]) -> list[Layer]:
    return list(_layers(items))
