"""Xception, InceptionV3 and InceptionResNetV2 (cnnspec/backbones/xception.cnn,
inception_v3.cnn, inception_resnet_v2.cnn) equal keras.applications layer by layer, verify
across the frameworks at their smallest sizes, and freeze by keras's block names. The layers keras.applications leaves unnamed (Xception's shortcut
conv2d / batch_normalization and its add joins; every Inception conv2d_bn and pooling) are
named as a fresh Keras session numbers them, which the checker's by-name comparison confirms:
keras_application clears the session before each build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")

import keras
import torch

from tests.frameworks.backbone_check import (
    assert_equals_keras_applications,
    assert_freezes_by_block,
    assert_verifies,
    backbone_graph,
    keras_application,
)
from tests.frameworks.scripts import checked_spec, load_script, write_script
from tests.frameworks.test_backbones import write_keras_weight_file

pytestmark = pytest.mark.frameworks


# Without the classifier at keras's smallest sizes (71 and 75 px).
@pytest.mark.parametrize(
    ("name", "size", "pooling"), [("xception", 71, None), ("inception_v3", 75, "max")]
)
def test_without_the_classifier_equals_keras_applications(
    name: str, size: int, pooling: str | None
) -> None:
    assert_equals_keras_applications(name, size, False, pooling)


@pytest.mark.parametrize("name", ["xception", "inception_v3"])
def test_with_the_classifier_equals_keras_applications(name: str) -> None:
    assert_equals_keras_applications(name, 299, True, None)


@pytest.mark.parametrize(("name", "size"), [("xception", 71), ("inception_v3", 75)])
def test_verifies_at_the_smallest_size(name: str, size: int) -> None:
    assert_verifies(name, size)


@pytest.mark.parametrize(("name", "block"), [("xception", "block4"), ("inception_v3", "mixed5")])
def test_freezes_by_block(name: str, block: str) -> None:
    assert_freezes_by_block(name, 75, block)


def randomise_batchnorm(model, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Non-trivial statistics in every BatchNormalization, with or without gamma (InceptionV3's
    scale=False keeps beta, moving mean and moving variance)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.weights[0].shape
            learnt = [rng.uniform(0.5, 1.5, shape)] * layer.scale + [rng.normal(0, 0.5, shape)]
            statistics = [rng.normal(0, 0.5, shape), rng.uniform(0.5, 2.0, shape)]
            layer.set_weights([*learnt, *statistics])


@pytest.mark.parametrize(("name", "size"), [("xception", 71), ("inception_v3", 75)])
def test_keras_weight_files_load_by_layer_name_in_pytorch(
    name: str, size: int, tmp_path: Path
) -> None:
    """A keras.applications weight file (random weights, keras's layout) loads by layer name
    into the PyTorch script, separable convolutions and gamma-less batchnorms included, which
    then computes keras.applications' own features. (The Keras script copies from
    keras.applications' own model, whose automatic names are these in its fresh process.)"""
    source = keras_application(name, size, False, "avg")
    randomise_batchnorm(source, seed=1)
    weight_file = tmp_path / f"{name}_notop.h5"
    write_keras_weight_file(source, weight_file)
    spec = checked_spec(
        f"model t {{ input {size}x{size}x3  backbone {name}(weights=none, pooling=avg)"
        "  head { dense(3, activation=softmax, name=classes) } }\ndata { labels sparse }"
    )
    # The same classifier on keras.applications' own features is the outcome to reach.
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    kernel = rng.normal(0, 0.05, (source.output.shape[-1], 3)).astype(np.float32)
    bias = rng.normal(0, 0.5, 3).astype(np.float32)
    logits = np.asarray(source(x, training=False)) @ kernel + bias
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    torch_script = load_script(write_script(spec, tmp_path, "pytorch"))
    net = torch_script.build_model()
    torch_script.load_backbone_weights(net, str(weight_file))
    with torch.no_grad():
        net.classes.weight.copy_(torch.from_numpy(kernel.T))
        net.classes.bias.copy_(torch.from_numpy(bias))
    net.eval()
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.library
def test_inception_resnet_v2_equals_keras_applications_but_for_its_scalings() -> None:
    """keras.applications' CustomScaleLayer (x + scale * branch, no weights) is one layer; the
    spec writes it as a rescaling (blockT_i_scale, the one node keras lacks) and the residual's
    add, named as keras names the CustomScaleLayer. Everything else is the checker's
    comparison: counts, and every keras layer a node of the same name, shape and size."""
    graph = backbone_graph("inception_resnet_v2", 75, False, None)
    model = keras_application("inception_resnet_v2", 75, False, None)
    params = graph.params
    assert model.count_params() == params.total
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == params.trainable
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == (params.non_trainable)
    nodes = {node.name: node for node in graph.nodes}
    scalings = {node.name: node for node in graph.nodes if node.kind == "rescaling"}
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert sorted(layer.name for layer in layers) == sorted(set(nodes) - set(scalings))
    for layer in layers:
        node = nodes[layer.name]
        assert tuple(layer.output.shape[1:]) == node.output_shape, layer.name
        assert layer.count_params() == node.params.total, layer.name
        if type(layer).__name__ == "CustomScaleLayer":
            # add(input, rescaling(scale) of blockT_i_conv): x + scale * branch.
            x, branch = (tensor._keras_history[0].name for tensor in layer.input)
            scaled = next(nodes[name] for name in node.inputs if name in scalings)
            assert node.kind == "add" and set(node.inputs) == {x, scaled.name}, layer.name
            assert scaled.inputs == (branch,) and branch.endswith("_conv"), layer.name
            assert scaled.layer.scale == (layer.scale,) and scaled.layer.offset == (0.0,)
    assert len(scalings) == 40 and all(name.endswith("_scale") for name in scalings)
    assert tuple(model.output.shape[1:]) == graph.output_shape
    assert all(node.scope[0] == "backbone" for node in graph.nodes)


@pytest.mark.library
def test_inception_resnet_v2_verifies_and_freezes_by_block() -> None:
    assert_verifies("inception_resnet_v2", 75)
    assert_freezes_by_block("inception_resnet_v2", 75, "block17_20")
