"""The importer's side of the nesting pass (cnnspec.nesting): a Network's layers nested the way
the language nests them, and a graph that is not nested so reported as an ImportFailure, one
Gap per place, each naming the layer where the source names it."""

from __future__ import annotations

from typing import TypeAlias

from cnnspec import nesting
from cnnspec.importing.network import INPUT, Gap, ImportFailure, Layer, Network

Item: TypeAlias = nesting.Item[Layer]


def nest(network: Network) -> list[Item]:
    try:
        return nesting.nest(network.layers, INPUT, network.output)
    except nesting.Unnestable as error:
        gaps = [_gap(problem) for problem in error.problems]
        raise ImportFailure("the model's graph cannot be written in cnnspec", gaps) from None


def _gap(problem: nesting.Problem[Layer]) -> Gap:
    layer = problem.layer
    where = (layer.origin or layer.name) if layer is not None else "the input"
    return Gap(where, problem.what, problem.why)
