"""What every library backbone must prove, against keras.applications itself (built here with
weights=None, never copied numbers): the same layers by name, shape and size, the same total,
trainable and non-trainable counts, outputs that agree across Keras, PyTorch and onnxruntime,
and freezing by keras.applications' block names. Each family's test file lists its cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")

import keras

from cnnspec import verify
from cnnspec.backbones import BACKBONES
from cnnspec.compiler import compile_text
from cnnspec.ir import Graph
from tests.campaign import random_weights
from tests.frameworks.scripts import checked_spec

# Layers keras.applications adds that the checker folds into others or that hold nothing.
_UNNAMED = (keras.layers.InputLayer,)


def library(*values: object) -> object:
    """A case for `make test-library` only: the other sizes of a family, whose definitions the
    required sizes already exercise (`make test` stays within its time)."""
    return pytest.param(*values, marks=pytest.mark.library)


def backbone_graph(name: str, size: int, include_top: bool, pooling: str | None) -> Graph:
    """The checker's graph of `backbone name(...)` alone. Without a classifier or pooling the
    output is a feature map, which the checker reports (E204, E302) but still describes."""
    arguments = f"weights=none, include_top={str(include_top).lower()}"
    if pooling:
        arguments += f", pooling={pooling}"
    text = f"model m {{ input {size}x{size}x3  backbone {name}({arguments}) }}"
    compilation = compile_text(text)
    assert {d.code for d in compilation.diagnostics.errors} <= {"E204", "E302"}, [
        (d.code, d.message) for d in compilation.diagnostics.errors
    ]
    assert compilation.spec is not None
    return compilation.spec.model


def keras_application(name: str, size: int, include_top: bool, pooling: str | None):  # type: ignore[no-untyped-def]
    keras.backend.clear_session()
    network = getattr(keras.applications, BACKBONES[name].keras_class)
    return network(
        include_top=include_top, weights=None, input_shape=(size, size, 3), pooling=pooling
    )


def assert_equals_keras_applications(
    name: str, size: int, include_top: bool, pooling: str | None
) -> None:
    """Counts, and every named layer's output shape and parameter count."""
    graph = backbone_graph(name, size, include_top, pooling)
    model = keras_application(name, size, include_top, pooling)
    params = graph.params
    assert model.count_params() == params.total
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == params.trainable
    assert sum(int(np.prod(w.shape)) for w in model.non_trainable_weights) == (params.non_trainable)
    nodes = {node.name: node for node in graph.nodes}
    layers = [layer for layer in model.layers if not isinstance(layer, _UNNAMED)]
    if pooling is not None:
        # The pooling `pooling=` appends: keras.applications leaves some unnamed
        # (global_max_pooling2d), the checker names it as the others (max_pool).
        layers, last = layers[:-1], graph.nodes[-1]
        assert (
            layers
            and last.kind.startswith("global")
            and model.layers[-1].output.shape[1:] == (last.output_shape)
        )
        nodes.pop(last.name)
    # Every layer keras.applications names is a node of the same name, shape and size (the
    # pooling that `pooling=` adds is named by the checker as keras.applications does too).
    assert sorted(layer.name for layer in layers) == sorted(nodes), sorted(
        {layer.name for layer in layers} ^ set(nodes)
    )[:20]
    for layer in layers:
        node = nodes[layer.name]
        assert tuple(layer.output.shape[1:]) == node.output_shape, layer.name
        assert layer.count_params() == node.params.total, layer.name
    assert tuple(model.output.shape[1:]) == graph.output_shape
    # ... all of them in the backbone block, where `freeze backbone` finds them.
    assert all(node.scope[0] == "backbone" for node in graph.nodes)


def assert_verifies(name: str, size: int, include_top: bool = False) -> None:
    """`cnnspec verify`'s comparison, in process: Keras, PyTorch and onnxruntime agree within
    1e-4 on random weights (batchnorm statistics too), and each framework's counts equal the
    checker's."""
    top = str(include_top).lower()
    head = "" if include_top else "  head { global_avg_pool()  dense(3, activation=softmax) }"
    spec = checked_spec(
        f"model m {{ input {size}x{size}x3  backbone {name}(weights=none, include_top={top})"
        f"{head} }}\ndata {{ labels sparse }}"
    )
    weights = random_weights(spec, np.random.default_rng(0))
    report = verify.run_verify(spec, weights, 1e-4, batch=2)
    assert report.skipped == {}, report.skipped
    assert report.counts_agree, (report.counts, report.expected)
    assert report.shape_mismatches == [], report.shape_mismatches[:10]
    assert report.passed(1e-4), [(c.first, c.second, c.max_abs) for c in report.comparisons]


def assert_freezes_by_block(name: str, size: int, block: str) -> None:
    """`unfreeze backbone.BLOCK` after `freeze backbone` trains exactly that block's layers."""
    spec = checked_spec(
        f"model m {{ input {size}x{size}x3  backbone {name}(weights=none)"
        "  head { global_avg_pool()  dense(3, activation=softmax) } }\n"
        "data { labels sparse }\n"
        f"train {{ phase tune {{ epochs 1  freeze backbone  unfreeze backbone.{block} }} }}"
    )
    (plan,) = spec.phases
    graph = spec.model
    inside = [n for n in graph.nodes if n.scope[:2] == ("backbone", block)]
    assert inside, f"no layers in backbone.{block}"
    weighted = {n.name for n in graph.nodes if n.params.total}
    backbone = {n.name for n in graph.nodes if n.scope[:1] == ("backbone",)}
    assert plan.frozen & weighted == (backbone - {n.name for n in inside}) & weighted
    trained_outside = sum(n.params.trainable for n in graph.nodes if n.scope[:1] != ("backbone",))
    assert plan.trainable_params == trained_outside + sum(n.params.trainable for n in inside)


def assert_weights_load_by_name(
    name: str, size: int, folder: Path, include_top: bool = False, atol: float = 1e-4
) -> None:
    """A weight file in keras.applications' layout (what weights=imagenet downloads), from the
    keras.applications model with random weights and batchnorm statistics, loads by layer name
    into both generated scripts, and both then compute what the keras.applications model does
    on the same 0-255 pixels (its classifier's probabilities with `include_top`, else its
    average-pooled features)."""
    import torch

    from tests.frameworks.scripts import load_script, write_script
    from tests.frameworks.test_backbones import write_keras_weight_file
    from tests.frameworks.test_keras_script import randomise_batchnorm

    source = keras_application(name, size, include_top, None if include_top else "avg")
    randomise_batchnorm(source, seed=1)
    weight_file = folder / f"{name}.h5"
    write_keras_weight_file(source, weight_file)
    arguments = "include_top=true" if include_top else "pooling=avg"
    compilation = compile_text(
        f"model t {{ input {size}x{size}x3  backbone {name}(weights=none, {arguments}) }}"
        "\ndata { labels sparse }"
    )
    # Pooled features as the output: the checker's E302 says a classifier would need a
    # softmax; the scripts build the network all the same.
    errors = {d.code for d in compilation.diagnostics.errors}
    assert errors == (set() if include_top else {"E302"})
    spec = compilation.spec
    assert spec is not None
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    expected = np.asarray(source(x, training=False))

    keras_script = load_script(write_script(spec, folder, "keras"))
    model = keras_script.build_model()
    keras_script.load_backbone_weights(model, str(weight_file))
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected, atol=atol)

    torch_script = load_script(write_script(spec, folder, "pytorch"))
    net = torch_script.build_model()
    torch_script.load_backbone_weights(net, str(weight_file))
    net.eval()
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    np.testing.assert_allclose(got, expected, atol=atol)
