"""The importer's side of the nesting pass (cnnspec.nesting): a Network's layers nested the way
the language nests them, a value used past its join read again with `from`, and a graph that
cannot be written (a layer off the path to the output) reported as an ImportFailure, one Gap
per place, each naming the layer where the source names it.

A graph whose concats were flattened by the exporter reads better with them nested again
(cnnspec.importing.concats: DenseNet's concats of all the features so far as a chain,
InceptionE's flattened nested concats as nested ones, the same function either way): where
the graph as read needs `from`s, the rewritten one is taken if it needs fewer, and the spec is
written from its layers."""

from __future__ import annotations

from typing import TypeAlias

from cnnspec import nesting
from cnnspec.importing import concats
from cnnspec.importing.network import INPUT, Gap, ImportFailure, Layer, Network

Item: TypeAlias = nesting.Item[Layer]


def nest(network: Network) -> list[Item]:
    try:
        items = nesting.nest(network.layers, INPUT, network.output)
    except nesting.Unnestable as error:
        failure: nesting.Unnestable[Layer] | None = error
        items = []
    else:
        failure = None
        if not nesting.froms_of(items):
            return items
    rewritten = concats.rewritten(network)
    if rewritten is not None:
        try:
            better = nesting.nest(rewritten.layers, INPUT, rewritten.output)
        except nesting.Unnestable:
            pass
        else:
            if failure is not None or len(nesting.froms_of(better)) < len(nesting.froms_of(items)):
                network.layers = rewritten.layers
                return better
    if failure is not None:
        gaps = [_gap(problem) for problem in failure.problems]
        raise ImportFailure("the model's graph cannot be written in cnnspec", gaps) from None
    return items


def _gap(problem: nesting.Problem[Layer]) -> Gap:
    layer = problem.layer
    where = (layer.origin or layer.name) if layer is not None else "the input"
    return Gap(where, problem.what, problem.why)
