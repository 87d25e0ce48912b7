"""The importer's side of the nesting pass (cnnspec.nesting): a Network's layers nested the way
the language nests them, and a graph that is not nested so reported as an ImportFailure, one
Gap per place, each naming the layer where the source names it.

A graph that does not nest as read may nest once its concats are (cnnspec.importing.concats:
DenseNet's concats of all the features so far as a chain, InceptionE's flattened nested concats
as nested ones again, the same function either way): then the Network takes those layers, and
the spec is written from them. Otherwise the failure names the graph as read."""

from __future__ import annotations

from typing import TypeAlias

from cnnspec import nesting
from cnnspec.importing import concats
from cnnspec.importing.network import INPUT, Gap, ImportFailure, Layer, Network

Item: TypeAlias = nesting.Item[Layer]


def nest(network: Network) -> list[Item]:
    try:
        return nesting.nest(network.layers, INPUT, network.output)
    except nesting.Unnestable as error:
        rewritten = concats.rewritten(network)
        if rewritten is not None:
            try:
                items = nesting.nest(rewritten.layers, INPUT, rewritten.output)
            except nesting.Unnestable:
                pass
            else:
                network.layers = rewritten.layers
                return items
        gaps = [_gap(problem) for problem in error.problems]
        raise ImportFailure("the model's graph cannot be written in cnnspec", gaps) from None


def _gap(problem: nesting.Problem[Layer]) -> Gap:
    layer = problem.layer
    where = (layer.origin or layer.name) if layer is not None else "the input"
    return Gap(where, problem.what, problem.why)
