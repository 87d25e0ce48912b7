"""cnnspec.layout: the order of flattened features (HWC in Keras, CHW in the canonical weights)
passes to the weights after a flatten only through layers whose entries declare themselves
element-wise; shape alone is never taken as that declaration."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from cnnspec.compiler import compile_text
from cnnspec.ir import Graph
from cnnspec.layout import LayoutError, flattened_inputs
from cnnspec.registry import REGISTRY, LayerArgs


def graph(layers: str, size: str = "4x4x3") -> Graph:
    text = (
        f"model m {{\n  input {size}\n  {layers}\n}}\n"
        'data { source folder("data")  labels sparse  validation split(0.2) }\n'
    )
    compilation = compile_text(text)
    assert compilation.spec is not None, [d.message for d in compilation.diagnostics]
    return compilation.spec.model


class Shuffle(LayerArgs):
    """A kind that keeps the shape and moves values between positions, as a new entry would
    be before it declares anything: not registered, `elementwise` left at its default."""

    kind: ClassVar[str] = "vector_shuffle"


def swapped(model: Graph, name: str, layer: LayerArgs) -> Graph:
    nodes = [
        dataclasses.replace(n, layer=layer, kind=layer.kind) if n.name == name else n
        for n in model.nodes
    ]
    return dataclasses.replace(model, nodes=nodes)


def test_declared_element_wise_layers_carry_the_order_to_the_weights() -> None:
    model = graph("flatten()  relu()  dropout(0.5)  batchnorm()  dense(10, activation=softmax)")
    names = [n.name for n in model.nodes]
    batchnorm, dense = names[3], names[4]
    assert flattened_inputs(model) == {batchnorm: (4, 4, 3), dense: (4, 4, 3)}


def test_a_shape_keeping_entry_without_the_declaration_is_not_element_wise() -> None:
    """The same graph with the relu replaced by an undeclared kind of the same shape: the
    dense's Keras layout cannot be decided, and says so rather than guess."""
    assert Shuffle.elementwise is False
    model = graph("flatten()  relu()  dropout(0.5)  dense(10, activation=softmax)")
    relu, dense = model.nodes[1].name, model.nodes[3].name
    shuffled = swapped(model, relu, Shuffle())
    assert shuffled.node(relu).output_shape == shuffled.node(relu).layer.output_shape([(48,)])
    with pytest.raises(LayoutError) as error:
        flattened_inputs(shuffled)
    message = str(error.value)
    assert f"layer {relu} (vector_shuffle) keeps the shape of features flattened from a 4x4x3" in (
        message
    )
    assert f"the weights of {dense} (dense) cannot be laid out" in message
    assert "declare `elementwise: ClassVar[bool] = True` on the vector_shuffle entry" in message


def test_where_the_order_does_not_matter_an_undeclared_kind_is_no_error() -> None:
    # A 1x1xC map (after global pooling kept as a map) and a one-channel map flatten to the
    # same order in HWC and CHW.
    for size, layers in [
        ("1x1x8", "flatten()  relu()  dense(10, activation=softmax)"),
        ("4x4x1", "flatten()  relu()  dense(10, activation=softmax)"),
    ]:
        model = graph(layers, size)
        relu = model.nodes[1].name
        assert flattened_inputs(swapped(model, relu, Shuffle())) == {}


def test_an_undeclared_kind_with_no_weights_after_it_is_no_error() -> None:
    model = graph("flatten()  relu()  reshape((4, 12))  flatten()  dense(10, activation=softmax)")
    relu = model.nodes[1].name
    assert flattened_inputs(swapped(model, relu, Shuffle())) == {}


def test_the_element_wise_kinds_are_declared_on_their_entries() -> None:
    """The kinds that carry the order, each by its own declaration; a kind that moves values
    between positions (channel_shuffle, upsample, pooling) does not declare it."""
    declared = {kind for kind, entry in REGISTRY.items() if entry.elementwise}
    activations = {kind for kind, entry in REGISTRY.items() if entry.is_activation}
    assert activations <= declared
    assert declared - activations == {
        "add",
        "batchnorm",
        "dropout",
        "layer_norm",
        "layer_scale",
        "multiply",
        "normalization",
        "rescaling",
        "reshape",
        "stochastic_depth",
    }
    assert not {"channel_shuffle", "concat", "dense", "flatten", "spatial_dropout"} & declared
