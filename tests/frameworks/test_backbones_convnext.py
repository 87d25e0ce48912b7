"""The ConvNeXt library backbones (cnnspec/backbones/convnext.cnn) against keras.applications.

keras.applications' ConvNeXt is not flat, so backbone_check's name-by-name comparison does not
fit it as it is: the stem and each downsampling step are nested Sequential models (one entry of
`model.layers`, `convnext_tiny_stem`, holding `convnext_tiny_stem_conv` and
`convnext_tiny_stem_layernorm`), which the spec writes as blocks of those names; and each
block's residual add is a Keras operation (`inputs + x`, auto-named add, add_1, ...), not a
layer, where the spec has an add node (`convnext_tiny_stage_0_block_0_add`). The comparison here
flattens the Sequential models, checks that each is a block of the spec with exactly its layers,
and compares the adds by order and shape."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")

import keras

from tests.frameworks.backbone_check import (
    assert_freezes_by_block,
    assert_verifies,
    backbone_graph,
    keras_application,
    library,
)

pytestmark = pytest.mark.frameworks

SIZES = ("tiny", "small", "base", "large", "xlarge")


def assert_equals_keras_convnext(
    name: str, size: int, include_top: bool, pooling: str | None = None
) -> None:
    """Counts, every keras.applications layer (nested ones included) by name, shape and size,
    the nested models as blocks, and the residual adds. With `pooling`, keras.applications
    pools before its last layer norm, and so does the library spec."""
    graph = backbone_graph(name, size, include_top, pooling)
    model = keras_application(name, size, include_top, pooling)
    params = graph.params
    assert model.count_params() == params.total
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == params.trainable
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == (params.non_trainable)
    nodes = {node.name: node for node in graph.nodes}
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Sequential):
            inner = {n.name for n in graph.nodes if layer.name in n.scope}
            assert inner == {sub.name for sub in layer.layers}, layer.name
            assert layer.count_params() == sum(nodes[n].params.total for n in inner)
            assert tuple(layer.output.shape[1:]) == nodes[layer.layers[-1].name].output_shape
            layers += layer.layers
        else:
            layers.append(layer)
    adds = [n for n in graph.nodes if n.kind == "add"]
    operations = [op for op in model.operations if not isinstance(op, keras.layers.Layer)]
    assert [type(op).__name__ for op in operations] == ["Add"] * len(adds)
    assert [tuple(op.output.shape[1:]) for op in operations] == [n.output_shape for n in adds]
    named = set(nodes) - {n.name for n in adds}
    assert sorted(layer.name for layer in layers) == sorted(named), sorted(
        {layer.name for layer in layers} ^ named
    )[:20]
    for layer in layers:
        node = nodes[layer.name]
        assert tuple(layer.output.shape[1:]) == node.output_shape, layer.name
        assert layer.count_params() == node.params.total, layer.name
    assert tuple(model.output.shape[1:]) == graph.output_shape
    assert all(node.scope[0] == "backbone" for node in graph.nodes)


@pytest.mark.parametrize("size", ["tiny", *(library(size) for size in SIZES[1:])])
def test_convnext_with_the_classifier_equals_keras_applications(size: str) -> None:
    assert_equals_keras_convnext(f"convnext_{size}", 224, include_top=True)


POOLING = {"tiny": "avg", "small": "max"}


@pytest.mark.parametrize("size", [size if size in POOLING else library(size) for size in SIZES])
def test_convnext_without_the_classifier_equals_keras_applications(size: str) -> None:
    # 32x32 is the smallest input keras.applications takes: the last stage is 1x1.
    assert_equals_keras_convnext(f"convnext_{size}", 32, False, POOLING.get(size))


def test_convnext_tiny_agrees_across_frameworks() -> None:
    assert_verifies("convnext_tiny", 32)


@pytest.mark.parametrize(
    "block", ["convnext_tiny_stage_2", "convnext_tiny_downsampling_block_1", "convnext_tiny_stem"]
)
def test_convnext_freezes_by_keras_block_name(block: str) -> None:
    assert_freezes_by_block("convnext_tiny", 32, block)
