"""Concatenations as the language nests them: a Network whose concats the nesting pass cannot
place rewritten into the same function written as nested concats. A concatenation on one axis
is associative, so each rewrite computes exactly what the source does, channel for channel; the
structure pass (cnnspec.importing.structure) tries them only on a graph that does not nest as
read, and keeps them only when the rewritten graph nests.

Two shapes the exporters write:

- Chained concats flattened: torchvision's DenseNet concatenates, for each layer of a block, all
  the block's features so far (torch.cat(features)), and for the block's output all of them. A
  concat whose inputs include, one after another in the same order, all the inputs of an
  earlier concat reads that concat's output instead:
  concat(x0, f1, f2) = concat(concat(x0, f1), f2). The block becomes a chain of two-input concats,
  each a `concat { branch {} branch {...} }`, as keras.applications' DenseNet is written.
- Nested concats flattened: torch.onnx writes InceptionE's
  torch.cat([b1, torch.cat([b3a, b3b]), torch.cat([d3a, d3b]), pool]) as one Concat of six
  inputs, two pairs of which grow from one stem each. Consecutive inputs whose branches start
  from one value below the concat's fork (one stem, which the other inputs do not come from)
  become a concat of their own, a branch of the first: the tree of branches the language
  writes."""

from __future__ import annotations

from dataclasses import replace

from cnnspec import nesting
from cnnspec.importing.network import INPUT, Layer, Network


def rewritten(network: Network) -> Network | None:
    """`network` with its concats nested, as a new Network (the layers it changes are new
    Layer objects; the others are shared), or None where no concat changes."""
    layers = list(network.layers)
    changed = _chains(layers)
    changed = _regroup(layers) or changed
    if not changed:
        return None
    return replace(network, layers=layers)


def _chains(layers: list[Layer]) -> bool:
    """Each concat reading all of an earlier concat's inputs in a run reads that concat
    instead: the longest such run, and the earliest concat of it."""
    earlier: dict[tuple[str, ...], str] = {}
    changed = False
    for index, layer in enumerate(layers):
        if layer.kind != "concat":
            continue
        inputs = layer.inputs
        best: tuple[int, int, str] | None = None
        for start in range(len(inputs)):
            # The longest run first; a run of the whole list would be the same concat again.
            for stop in range(len(inputs), start + 1, -1):
                if stop - start == len(inputs):
                    continue
                if best is not None and stop - start <= best[1] - best[0]:
                    break
                found = earlier.get(inputs[start:stop])
                if found is not None:
                    best = (start, stop, found)
                    break
        earlier.setdefault(inputs, layer.name)
        if best is not None:
            start, stop, found = best
            new = (*inputs[:start], found, *inputs[stop:])
            layers[index] = replace(layer, inputs=new)
            changed = True
    return changed


def _regroup(layers: list[Layer]) -> bool:
    """Each concat of three or more inputs, its consecutive inputs that grow from one stem
    below its fork made a concat of their own (and so on, inside that one)."""
    names = {layer.name for layer in layers} | {INPUT}
    changed = False
    index = 0
    while index < len(layers):
        layer = layers[index]
        if layer.kind == "concat" and len(layer.inputs) > 2:
            dominator = nesting.dominators(layers, INPUT)
            groups = _groups(layer.inputs, dominator)
            if any(len(group) > 1 for group in groups) and len(groups) > 1:
                inner: list[Layer] = []
                inputs: list[str] = []
                for group in groups:
                    if len(group) == 1:
                        inputs.append(group[0])
                        continue
                    name = _fresh(f"{layer.name}_{len(inner) + 1}", names)
                    names.add(name)
                    inner.append(replace(layer, name=name, inputs=tuple(group)))
                    inputs.append(name)
                layers[index : index + 1] = [*inner, replace(layer, inputs=tuple(inputs))]
                changed = True
                # The new concats are looked at in turn: a group may hold groups of its own.
                continue
        index += 1
    return changed


def _groups(inputs: tuple[str, ...], dominator: dict[str, str]) -> list[list[str]]:
    """The concat's inputs in runs: consecutive inputs whose branches start from one value
    below the fork (the stem each grows from: the value after the fork on its path)."""
    fork = _dominator_of(inputs, dominator)
    groups: list[list[str]] = []
    last: str | None = None
    for value in inputs:
        stem = _stem(value, fork, dominator)
        if groups and stem is not None and stem == last:
            groups[-1].append(value)
        else:
            groups.append([value])
        last = stem
    return groups


def _dominator_of(values: tuple[str, ...], dominator: dict[str, str]) -> str:
    """The nearest value every path to all of `values` passes through."""
    chains = [_chain(value, dominator) for value in values]
    shared = set(chains[0]).intersection(*chains[1:])
    return next(value for value in chains[0] if value in shared)


def _chain(value: str, dominator: dict[str, str]) -> list[str]:
    """`value`, its dominator, that one's, ... up to the input."""
    chain = [value]
    while value != INPUT:
        value = dominator[value]
        chain.append(value)
    return chain


def _stem(value: str, fork: str, dominator: dict[str, str]) -> str | None:
    """The value after `fork` on `value`'s dominator chain (None: `value` is the fork)."""
    if value == fork:
        return None
    while dominator[value] != fork:
        value = dominator[value]
    return value


def _fresh(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    count = 2
    while f"{name}_{count}" in taken:
        count += 1
    return f"{name}_{count}"
