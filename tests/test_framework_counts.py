"""The checker's shapes and parameter counts, proved against real Keras and real PyTorch.

How the numbers are obtained:

- The checker's numbers come from `compile_file(spec)`: each IR node's `output_shape` and
  `params` (trainable, non-trainable), and the graph's totals, computed without any framework.
- Keras's numbers come from `tests/frameworks/keras_ref.build_keras(graph)`, a functional model
  with one Keras layer per IR node, named after it, built only from the node's layer arguments
  and inputs (never from the checker's shapes or counts). Keras itself infers the shapes and
  creates the weights: totals are `model.count_params()` and the sizes of
  `model.trainable_weights` / `model.non_trainable_weights` (BatchNorm's moving mean and
  variance are non-trainable weights); a node's shape is `model.get_layer(name).output.shape`
  without the batch axis, and its counts are that layer's `count_params()`,
  `trainable_weights` and `non_trainable_weights`.
- PyTorch's numbers come from `tests/frameworks/torch_ref.build_torch(graph)`, an NCHW module
  sized by pushing a dummy tensor through each layer as it is built. The total is
  `sum(p.numel() for p in model.parameters())`, which must equal the checker's trainable count
  (PyTorch keeps BatchNorm statistics as buffers: their size, without the `num_batches_tracked`
  counter, must equal the non-trainable count). A node's shape is the shape of its output in a
  forward pass on a dummy batch, turned from (N, C, H, W) to the checker's (H, W, C).
- On top of the counts, the two references must compute the same function: Keras's weights
  (BatchNorm statistics randomised) are copied into the PyTorch module, and every node's output
  on one random input must agree. That catches a reference that gets a shape right by accident
  (`padding=same` padded on the wrong side, flatten in the wrong order). Values downstream of
  a one-channel convolution with unequal strides are not compared: oneDNN, under both
  frameworks, miscomputes those (see `onednn_blind_spots`); shapes and counts still are.

The headline totals of each shipped spec are also written out below, so a changed spec or rule
fails loudly here, not only as a golden-file diff.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")

import keras
import torch

from cnnspec.compiler import compile_file
from cnnspec.ir import Graph
from tests.conftest import SPECS
from tests.frameworks.keras_ref import (
    build_keras,
    node_outputs,
    node_shape,
    weight_counts,
)
from tests.frameworks.scripts import size_under_test
from tests.frameworks.torch_ref import ReferenceNet, build_torch, copy_keras_weights

pytestmark = pytest.mark.frameworks

# spec -> (total, trainable); non-trainable is the difference (BatchNorm moving statistics).
EXPECTED = {
    "cifar10": (1_196_586, 1_195_114),
    "digits": (45_546, 45_354),
    "lenet5": (61_706, 61_706),
    "resnet18_cifar": (11_183_562, 11_173_962),
    "pneumonia_vgg16": (14_863_553, 14_863_041),
    "pneumonia_vgg16_imagenet": (14_863_553, 14_863_041),
    "resnet50_transfer": (23_597_957, 23_544_837),
    "mobilenet_v2_transfer": (2_264_389, 2_230_277),
    "inception_digits": (15_986, 15_578),
    "cifar10_recipe": (274_042, 272_474),
    "finetune_recipe": (23_597_957, 23_544_837),
    "vit_digits": (136_138, 136_138),
    "nasnet_digits": (20_314, 19_386),
}
STEMS = [spec.stem for spec in SPECS]
# Specs whose network is another shipped spec's, layer for layer (they differ in their data):
# checked to be so, and not built twice.
SAME_NETWORK = {
    "pneumonia_vgg16_imagenet": "pneumonia_vgg16",
    "finetune_recipe": "resnet50_transfer",
}
BUILT = [stem for stem in STEMS if stem not in SAME_NETWORK]


# ---- comparisons, shared with tests/test_property.py -------------------------------------------


def keras_mismatches(graph: Graph, model: keras.Model) -> list[str]:
    """Every way the Keras model's shapes and counts differ from the checker's; empty if none."""
    found = []
    total = graph.params
    keras_counts = (
        model.count_params(),
        weight_counts(model.trainable_weights),
        weight_counts(model.non_trainable_weights),
    )
    if keras_counts != (total.total, total.trainable, total.non_trainable):
        found.append(f"totals: keras {keras_counts}, checker {total}")
    for node in graph.nodes:
        layer = model.get_layer(node.name)
        shape = node_shape(model, node.name)
        if shape != node.output_shape:
            found.append(f"{node.name}: keras shape {shape}, checker {node.output_shape}")
        counts = (
            layer.count_params(),
            weight_counts(layer.trainable_weights),
            weight_counts(layer.non_trainable_weights),
        )
        expected = (node.params.total, node.params.trainable, node.params.non_trainable)
        if counts != expected:
            found.append(f"{node.name}: keras params {counts}, checker {expected}")
    return found


def torch_mismatches(graph: Graph, net: ReferenceNet) -> list[str]:
    """Every way the PyTorch module's shapes and counts differ from the checker's."""
    found = []
    total = graph.params
    params = sum(p.numel() for p in net.parameters())
    if params != total.trainable:
        found.append(f"totals: torch parameters {params}, checker trainable {total.trainable}")
    shapes = net.node_shapes()
    for node in graph.nodes:
        if shapes[node.name] != node.output_shape:
            found.append(
                f"{node.name}: torch shape {shapes[node.name]}, checker {node.output_shape}"
            )
        counts = net.node_params(node.name)
        expected = (node.params.trainable, node.params.non_trainable)
        if counts != expected:
            found.append(f"{node.name}: torch (params, buffers) {counts}, checker {expected}")
    return found


def onednn_blind_spots(graph: Graph, model: keras.Model) -> set[str]:
    """Nodes whose values the CPU frameworks cannot be trusted to compute: a convolution with
    unequal strides, such as (1, 2), on a one-channel input, and everything downstream of it.

    oneDNN, which TensorFlow and PyTorch both use on x86 CPUs, miscomputes those (garbage or
    uninitialised values: TensorFlow for conv2d and depthwise_conv2d, PyTorch for channels-last
    memory); TensorFlow without oneDNN refuses unequal depthwise strides outright. Shapes and
    counts are still compared there; only the values are skipped.
    """
    blind: set[str] = set()
    for node in graph.nodes:
        layer = model.get_layer(node.name)
        suspect = (
            node.kind in ("conv2d", "depthwise_conv2d")
            and node.layer.stride[0] != node.layer.stride[1]
            and int(layer.input.shape[-1]) == 1
        )
        if suspect or any(source in blind for source in node.inputs):
            blind.add(node.name)
    return blind


def function_mismatches(
    graph: Graph, model: keras.Model, net: ReferenceNet, seed: int
) -> list[str]:
    """Nodes whose outputs differ between Keras and PyTorch once they share weights (in
    inference mode, on one random example; see `onednn_blind_spots` for what is skipped)."""
    rng = np.random.default_rng(seed)
    for node in graph.nodes:
        if node.kind == "batchnorm":
            layer = model.get_layer(node.name)
            channels = layer.weights[0].shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, channels),
                    rng.normal(0, 0.5, channels),
                    rng.normal(0, 0.5, channels),
                    rng.uniform(0.5, 2.0, channels),
                ]
            )
    copy_keras_weights(net, graph, model)
    assert graph.input_shape is not None
    x = rng.normal(0, 1, (1, *graph.input_shape)).astype("float32")
    expected = node_outputs(model, graph, x)
    net.eval()
    with torch.no_grad():
        nchw = torch.from_numpy(x).permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)
        got = net.trace(nchw)
    blind = onednn_blind_spots(graph, model)
    found = []
    for node in graph.nodes:
        if node.name in blind:
            continue
        ours = got[node.name].numpy()
        if ours.ndim == 4:
            ours = ours.transpose(0, 2, 3, 1)
        ref = expected[node.name]
        scale = max(1.0, float(np.abs(ref).max()))
        if ours.shape != ref.shape or not np.allclose(ours, ref, rtol=1e-3, atol=1e-4 * scale):
            worst = np.abs(ours - ref).max() if ours.shape == ref.shape else "shape"
            found.append(f"{node.name} ({node.kind}): outputs differ, worst {worst}")
    return found


# ---- the shipped specs -----------------------------------------------------------------------


@cache
def graph_of(stem: str) -> Graph:
    path = next(s for s in SPECS if s.stem == stem)
    size = size_under_test(path)
    compilation = compile_file(path, (size, size) if size else None)
    assert compilation.ok, [d.message for d in compilation.diagnostics]
    assert compilation.spec is not None
    return compilation.spec.model


def test_every_shipped_spec_has_pinned_totals() -> None:
    assert sorted(EXPECTED) == sorted(STEMS)


@pytest.mark.parametrize("stem", STEMS)
def test_checker_totals_are_the_pinned_ones(stem: str) -> None:
    params = graph_of(stem).params
    assert (params.total, params.trainable) == EXPECTED[stem]


@pytest.mark.parametrize(("stem", "original"), sorted(SAME_NETWORK.items()))
def test_variants_have_their_originals_network(stem: str, original: str) -> None:
    def layers(graph: Graph) -> list[tuple[object, ...]]:
        return [(n.name, n.kind, n.inputs, n.output_shape, n.params, n.layer) for n in graph.nodes]

    assert layers(graph_of(stem)) == layers(graph_of(original))


@pytest.mark.parametrize("stem", BUILT)
def test_keras_agrees(stem: str) -> None:
    graph = graph_of(stem)
    model = build_keras(graph)
    total, trainable = EXPECTED[stem]
    assert model.count_params() == total
    assert weight_counts(model.trainable_weights) == trainable
    assert weight_counts(model.non_trainable_weights) == total - trainable
    assert keras_mismatches(graph, model) == []


@pytest.mark.parametrize("stem", BUILT)
def test_torch_agrees(stem: str) -> None:
    graph = graph_of(stem)
    net = build_torch(graph)
    assert sum(p.numel() for p in net.parameters()) == EXPECTED[stem][1]
    assert torch_mismatches(graph, net) == []


@pytest.mark.parametrize("stem", BUILT)
def test_keras_and_torch_compute_the_same_function(stem: str) -> None:
    graph = graph_of(stem)
    model = build_keras(graph)
    assert onednn_blind_spots(graph, model) == set()  # every node's values are compared
    assert function_mismatches(graph, model, build_torch(graph), seed=0) == []
