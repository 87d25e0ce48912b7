"""EfficientNet B0 to B7 (cnnspec/backbones/efficientnet.cnn, one definition scaled by width
and depth) equal keras.applications layer by layer, verify across the frameworks, freeze by
keras's block names, and drop their residual branches and preprocess as keras does."""

from __future__ import annotations

import math

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

MODELS = [f"efficientnet_b{b}" for b in range(8)]

# Without the classifier every size at 32 px, keras's smallest (a 1x1 map at the end), some
# with pooling; odd sizes exercise correct_pad's other side.
NOTOP = [
    ("efficientnet_b0", 33, None),
    ("efficientnet_b1", 32, "avg"),
    library("efficientnet_b2", 32, None),
    library("efficientnet_b3", 32, "max"),
    library("efficientnet_b4", 32, None),
    library("efficientnet_b5", 35, None),
    library("efficientnet_b6", 32, None),
    library("efficientnet_b7", 32, None),
]


@pytest.mark.parametrize(("name", "size", "pooling"), NOTOP)
def test_without_the_classifier_equals_keras_applications(
    name: str, size: int, pooling: str | None
) -> None:
    assert_equals_keras_applications(name, size, False, pooling)


# The classifier at the native size: B0 in `make test`, the others (slow native-size builds)
# in `make test-library`.
NATIVE = [240, 260, 300, 380, 456, 528, 600]


@pytest.mark.parametrize(
    ("name", "size"),
    [("efficientnet_b0", 224)]
    + [library(f"efficientnet_b{b}", size) for b, size in enumerate(NATIVE, 1)],
)
def test_with_the_classifier_equals_keras_applications(name: str, size: int) -> None:
    assert_equals_keras_applications(name, size, True, None)


def test_drop_rates_equal_keras_applications() -> None:
    """Block k of n drops its residual branch at 0.2 * k / n, as keras's Dropout with one
    draw per sample (B1: depth 1.1 rounds every stage up, 23 blocks, and block1b has one)."""
    graph = backbone_graph("efficientnet_b1", 32, False, None)
    model = keras_application("efficientnet_b1", 32, False, None)
    keras_rates = {
        layer.name: (layer.rate, tuple(layer.noise_shape))
        for layer in model.layers
        if type(layer).__name__ == "Dropout"
    }
    rates = {n.name: n.layer.rate for n in graph.nodes if n.kind == "stochastic_depth"}
    assert keras_rates and set(rates) == set(keras_rates)
    for name, rate in rates.items():
        assert rate == pytest.approx(keras_rates[name][0], abs=1e-12), name
        assert keras_rates[name][1] == (None, 1, 1, 1)


def test_imagenet_weights_add_keras_third_rescaling() -> None:
    """weights=imagenet adds keras's rescaling by 1 / sqrt(stddev) after the Normalization
    (keras.applications adds it only then, so it is absent from the models built above)."""
    from cnnspec.compiler import compile_text

    def layers(weights: str) -> list[str]:
        text = f"model m {{ input 32x32x3  backbone efficientnet_b0(weights={weights}) }}"
        spec = compile_text(text).spec
        assert spec is not None
        return [n for n in spec.model.nodes if n.scope[:1] == ("backbone",)]

    plain = layers("none")
    assert [n.name for n in plain[:3]] == ["rescaling", "normalization", "stem_conv_pad"]
    imagenet = layers("imagenet")
    assert [n.name for n in imagenet[:4]] == [
        "rescaling",
        "normalization",
        "rescaling_1",
        "stem_conv_pad",
    ]
    scale = imagenet[2].layer.scale
    assert scale == pytest.approx([1 / math.sqrt(s) for s in (0.229, 0.224, 0.225)], rel=1e-15)
    assert len(imagenet) == len(plain) + 1


def test_efficientnet_b0_verifies_and_freezes_by_stage() -> None:
    assert_verifies("efficientnet_b0", 48)
    assert_freezes_by_block("efficientnet_b0", 32, "block6")
