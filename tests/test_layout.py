"""cnnspec.layout: the order of flattened features (HWC in Keras, CHW in the canonical weights)
passes to the weights after a flatten only through layers whose entries declare themselves
element-wise (and joins whose inputs all carry it); shape alone is never taken as that
declaration. Any other use of such features (a reshape, a join with a vector in natural order,
a concat, an undeclared kind, the model's output) gets them in Keras's order first."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from cnnspec.compiler import compile_text
from cnnspec.ir import Graph
from cnnspec.layout import FlattenedLayout, flattened_inputs, flattened_layout
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
    """The same graph with the relu replaced by an undeclared kind of the same shape: the kind
    may move values between positions, so it gets the features in Keras's order, and what it
    gives the dense layer is in natural order (no permuted rows)."""
    assert Shuffle.elementwise is False
    model = graph("flatten()  relu()  dropout(0.5)  dense(10, activation=softmax)")
    relu = model.nodes[1].name
    shuffled = swapped(model, relu, Shuffle())
    assert shuffled.node(relu).output_shape == shuffled.node(relu).layer.output_shape([(48,)])
    assert flattened_layout(shuffled) == FlattenedLayout({}, {relu: {0: (4, 4, 3)}}, None)
    assert flattened_layout(model) == FlattenedLayout({model.nodes[3].name: (4, 4, 3)}, {}, None)


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


def named(model: Graph, kind: str) -> str:
    (name,) = [n.name for n in model.nodes if n.kind == kind]
    return name


def test_a_reshape_of_flattened_features_gets_them_in_keras_order() -> None:
    """A reshape orders the elements as Keras does: its input is reordered (through the relu,
    which carries the order), and the map it makes is flattened again for the dense layer."""
    model = graph("flatten()  relu()  reshape((4, 4, 3))  flatten()  dense(10, activation=softmax)")
    reshape, dense = named(model, "reshape"), named(model, "dense")
    assert flattened_layout(model) == FlattenedLayout(
        {dense: (4, 4, 3)}, {reshape: {0: (4, 4, 3)}}, None
    )
    # A reshape that keeps the vector's shape is the identity: the dense's rows are permuted.
    model = graph("flatten()  reshape(-1)  dense(10, activation=softmax)")
    assert flattened_layout(model) == FlattenedLayout({named(model, "dense"): (4, 4, 3)}, {}, None)


def test_a_join_with_a_vector_in_natural_order_gets_the_flattened_one_in_keras_order() -> None:
    model = graph("flatten()  residual { dense(48) }  dense(10, activation=softmax)")
    flatten, add = named(model, "flatten"), named(model, "add")
    body = next(n.name for n in model.nodes if n.kind == "dense" and n.inputs == (flatten,))
    index = model.node(add).inputs.index(flatten)
    assert flattened_layout(model) == FlattenedLayout(
        {body: (4, 4, 3)}, {add: {index: (4, 4, 3)}}, None
    )
    model = graph(
        "flatten()  concat { branch { }  branch { dense(8) } }  dense(2, activation=softmax)"
    )
    flatten, concat = named(model, "flatten"), named(model, "concat")
    branch = next(n.name for n in model.nodes if n.kind == "dense" and n.inputs == (flatten,))
    index = model.node(concat).inputs.index(flatten)
    assert flattened_layout(model) == FlattenedLayout(
        {branch: (4, 4, 3)}, {concat: {index: (4, 4, 3)}}, None
    )


def test_a_join_carries_the_order_only_when_its_inputs_share_it() -> None:
    model = graph("flatten()  residual { batchnorm()  relu() }  dense(10, activation=softmax)")
    batchnorm, dense = named(model, "batchnorm"), named(model, "dense")
    assert flattened_layout(model) == FlattenedLayout(
        {batchnorm: (4, 4, 3), dense: (4, 4, 3)}, {}, None
    )
    # 4x4x3 and 2x2x12 flatten to 48 features each, in two different orders.
    model = graph(
        "add { branch { flatten() }  branch { conv2d(12, 2, stride=2)  flatten() } }"
        "  dense(10, activation=softmax)"
    )
    add = named(model, "add")
    first, second = (
        (4, 4, 3) if model.node(i).inputs == (Graph.INPUT,) else (2, 2, 12)
        for i in model.node(add).inputs
    )
    assert flattened_layout(model) == FlattenedLayout({}, {add: {0: first, 1: second}}, None)


def test_flattened_features_as_the_output_are_given_in_keras_order() -> None:
    assert flattened_layout(graph("flatten()  softmax()")).output == (4, 4, 3)
    assert flattened_layout(graph("flatten()  dense(10, activation=softmax)")).output is None
    assert flattened_layout(graph("global_avg_pool()  softmax()")).output is None


def test_where_the_orders_agree_nothing_is_reordered() -> None:
    for size, features in (("1x1x48", 48), ("4x4x1", 16)):
        for layers in (
            "flatten()  softmax()",
            "flatten()  reshape((1, 1, -1))  flatten()  softmax()",
            f"flatten()  residual {{ dense({features}) }}  softmax()",
        ):
            assert flattened_layout(graph(layers, size)).reorders == {}, (size, layers)
            assert flattened_layout(graph(layers, size)).output is None, (size, layers)


def test_a_model_without_a_flatten_has_nothing_to_reorder() -> None:
    model = graph("conv2d(4, 3)  reshape(-1)  dense(10, activation=softmax)")
    assert flattened_layout(model) == FlattenedLayout()
