"""EfficientNetV2 B0 to B3, S, M and L (cnnspec/backbones/efficientnet_v2.cnn: keras's block
argument tables, B1 to B3 scaled by width and depth) equal keras.applications layer by layer,
verify across the frameworks, freeze by keras's block names, and drop their residual branches
and preprocess as keras does.

keras.applications leaves its preprocessing layers unnamed (include_preprocessing=True): the
library names them as a fresh Keras session does (rescaling, normalization), and
keras_application() clears the session before each build, so the strict name check applies."""

from __future__ import annotations

import pytest

from tests.frameworks.backbone_check import (
    assert_equals_keras_applications,
    assert_freezes_by_block,
    assert_verifies,
    backbone_graph,
    keras_application,
    library,
)

pytestmark = pytest.mark.frameworks

# Without the classifier every size at 32 px, keras's smallest (a 1x1 map at the end), some
# with pooling; an odd size exercises padding=same's ceil.
NOTOP = [
    ("efficientnet_v2_b0", 33, None),
    library("efficientnet_v2_b1", 32, "avg"),
    library("efficientnet_v2_b2", 32, None),
    library("efficientnet_v2_b3", 32, "max"),
    library("efficientnet_v2_s", 32, None),
    library("efficientnet_v2_m", 32, "avg"),
    library("efficientnet_v2_l", 32, None),
]


@pytest.mark.parametrize(("name", "size", "pooling"), NOTOP)
def test_without_the_classifier_equals_keras_applications(
    name: str, size: int, pooling: str | None
) -> None:
    assert_equals_keras_applications(name, size, False, pooling)


# The classifier at the native size, for B0 only (the others differ in width, depth, tables and
# input size, which the cases above check without the slow native-size builds).
@pytest.mark.parametrize(
    ("name", "size"),
    [("efficientnet_v2_b0", 224)]
    + [
        library(f"efficientnet_v2_{name}", size)
        for name, size in (
            ("b1", 240),
            ("b2", 260),
            ("b3", 300),
            ("s", 384),
            ("m", 480),
            ("l", 480),
        )
    ],
)
def test_with_the_classifier_equals_keras_applications(name: str, size: int) -> None:
    assert_equals_keras_applications(name, size, True, None)


def _preprocessing(nodes: list, model) -> None:  # type: ignore[no-untyped-def]
    """The library's first layers are keras's parameter-free preprocessing layers, with the
    same names, kinds and constants, and then the stem."""
    kinds = {"Rescaling": "rescaling", "Normalization": "normalization"}
    first = []
    for layer in model.layers[1:]:
        if type(layer).__name__ not in kinds:
            break
        first.append(layer)
    assert first and nodes[len(first)].name == "stem_conv"
    for node, layer in zip(nodes, first, strict=False):
        assert (node.name, node.kind) == (layer.name, kinds[type(layer).__name__])
        if node.kind == "rescaling":
            assert node.layer.scale == (layer.scale,) and node.layer.offset == (layer.offset,)
        else:
            assert list(node.layer.mean) == list(layer.input_mean)
            assert list(node.layer.variance) == list(layer.input_variance)


@pytest.mark.parametrize(
    ("name", "preprocessing"),
    [
        library("efficientnet_v2_b3", ["rescaling", "normalization"]),
        library("efficientnet_v2_s", ["rescaling"]),
    ],
)
def test_drop_rates_and_preprocessing_equal_keras_applications(
    name: str, preprocessing: list[str]
) -> None:
    """Block b drops its residual branch at 0.2 * b / n, n the table's repeats before depth
    scaling (B3: 21 in the table, 32 blocks built), as keras's Dropout with one draw per
    sample; the first block (rate 0) has none. B0 to B3 rescale to [0, 1] and normalise by
    ImageNet's statistics, S, M and L rescale to [-1, 1] (keras's include_preprocessing)."""
    graph = backbone_graph(name, 32, False, None)
    model = keras_application(name, 32, False, None)
    keras_rates = {
        layer.name: (layer.rate, tuple(layer.noise_shape))
        for layer in model.layers
        if type(layer).__name__ == "Dropout"
    }
    rates = {n.name: n.layer.rate for n in graph.nodes if n.kind == "stochastic_depth"}
    assert keras_rates and set(rates) == set(keras_rates)
    for layer, rate in rates.items():
        assert rate == keras_rates[layer][0], layer
        assert keras_rates[layer][1] == (None, 1, 1, 1)
    _preprocessing(list(graph.nodes), model)
    assert [n.kind for n in graph.nodes[: len(preprocessing)]] == preprocessing


def test_other_channel_counts_preprocess_as_keras_applications() -> None:
    """B0 to B3 on other than 3 channels only rescale to [-1, 1], as keras does."""
    import keras

    from cnnspec.compiler import compile_text

    text = "model m { input 32x32x1  backbone efficientnet_v2_b0(weights=none) }"
    compilation = compile_text(text)
    assert compilation.spec is not None
    nodes = [n for n in compilation.spec.model.nodes if n.scope[:1] == ("backbone",)]
    keras.backend.clear_session()
    model = keras.applications.EfficientNetV2B0(
        include_top=False, weights=None, input_shape=(32, 32, 1)
    )
    _preprocessing(nodes, model)
    assert nodes[0].kind == "rescaling" and nodes[1].name == "stem_conv"


def test_efficientnet_v2_b0_verifies_and_freezes_by_stage() -> None:
    assert_verifies("efficientnet_v2_b0", 48)
    assert_freezes_by_block("efficientnet_v2_b0", 32, "block6")
