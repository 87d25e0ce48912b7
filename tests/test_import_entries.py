"""The readers' side of every entry: what each kind's emitters write, `cnnspec import` reads
back (tests/test_completeness.py walks the emitters themselves). Without frameworks: the Keras
side reads configs as a saved model holds them, the ONNX side reads the nodes an emitter asks
a recording builder for, as the reader would see them in the exported file.

- Every Keras class a `keras()` emitter writes is read by exactly one entry's `keras_classes`,
  and none is also the importer's structure (keras_file.STRUCTURE).
- The last ONNX op each `onnx` emitter writes is read by an entry's `onnx_patterns` or by the
  reader itself (onnx_file.READER_OPS); where it is the entry's own pattern, or its own
  `onnx_steps`, reading the written nodes gives the layer back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cnnspec.codegen import Call
from cnnspec.emitters import tables
from cnnspec.importing.keras_file import STRUCTURE, network_from_config
from cnnspec.importing.network import ImportFailure
from cnnspec.importing.onnx_file import READER_OPS
from cnnspec.registry import (
    REGISTRY,
    LayerArgs,
    OnnxNode,
    ShapeError,
    Unsupported,
    float32,
    keras_readers,
    onnx_readers,
)
from cnnspec.spelling import Spelled
from tests.test_completeness import SAMPLES

MAP, VECTOR = (8, 8, 3), (12,)

# Settings that take an emitter down another branch (another Keras class, ONNX op or step).
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "conv2d": [{"padding": 1, "activation": "leaky_relu"}, {"groups": 3, "filters": 6}],
    "depthwise_conv2d": [{"stride": (1, 2), "padding": "same"}, {"stride": (1, 2), "padding": 2}],
    "separable_conv2d": [{"activation": "swish", "use_bias": False}],
    "dense": [{"activation": "gelu"}, {"use_bias": False}],
    "elu": [{"alpha": 0.5}],
    "gelu": [{"approximate": True}],
    "leaky_relu": [{"alpha": 0.1}],
    "zero_pad": [{"padding": "same", "kernel": 3, "stride": 2}],
    "global_avg_pool": [{"keepdims": True}],
    "global_max_pool": [{"keepdims": True}],
    "avgpool": [{"padding": "same", "stride": 1}],
    "batchnorm": [{"center": False}],
    "normalization": [
        {"mean": (0.5,), "variance": (2.0,)},
        {"mean": (1.0, 2.0, 3.0), "variance": (4.0, 5.0, 6.0)},
    ],
    "rescaling": [{"scale": 0.5, "offset": -1.0}],
    "reshape": [{"target": (4, 4, 12)}, {"target": (2, 2, 3)}],
    "layer_norm": [{"epsilon": 1e-6}],
    "upsample": [{"interpolation": "bilinear", "size": (2, 3)}],
}


def samples() -> Iterator[tuple[str, LayerArgs]]:
    for kind, cls in REGISTRY.items():
        for variant in [{}, *VARIANTS.get(kind, [])]:
            yield kind, cls.model_validate({**SAMPLES.get(kind, {}), **variant})


SAMPLED = [pytest.param(kind, layer, id=f"{kind}-{i}") for i, (kind, layer) in enumerate(samples())]
STEPPED = [param for param in SAMPLED if REGISTRY[param.values[0]].onnx_steps is not None]


# ---- Keras ------------------------------------------------------------------------------------


def keras_classes_written(layer: LayerArgs) -> list[str]:
    """The Keras classes `layer`'s emitter writes: `layers.Conv2D` is Conv2D, a helper class of
    the script's (LayerScale) its own name."""
    try:
        written = tables("keras")["layers"].emit(layer)
    except Unsupported:
        return []
    return [k.call.func.removeprefix("layers.") for k in written if isinstance(k.call, Call)]


def test_no_keras_class_is_read_by_two_entries_or_is_also_structure() -> None:
    claimed: dict[str, list[str]] = {}
    for kind, cls in REGISTRY.items():
        for name in cls.keras_classes:
            claimed.setdefault(name, []).append(kind)
    assert {name: kinds for name, kinds in claimed.items() if len(kinds) > 1} == {}
    assert set(claimed) == set(keras_readers())
    assert not set(claimed) & set(STRUCTURE)


@pytest.mark.parametrize(("kind", "layer"), SAMPLED)
def test_every_keras_class_an_emitter_writes_is_read_back(kind: str, layer: LayerArgs) -> None:
    readers = keras_readers()
    for name in keras_classes_written(layer):
        assert name in readers or name in STRUCTURE, f"{kind} writes {name}, which no entry reads"


def _keras_model(*layers: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """A functional model's config, as Keras 3 saves it: a chain of (class, name, config)."""

    def tensor(name: str) -> dict[str, Any]:
        return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, 0, 0]}}

    entries: list[dict[str, Any]] = [
        {
            "class_name": "InputLayer",
            "name": "image",
            "config": {"name": "image", "batch_shape": [None, 8, 8, 3]},
            "inbound_nodes": [],
        }
    ]
    previous = "image"
    for class_name, name, config in layers:
        entries.append(
            {
                "class_name": class_name,
                "name": name,
                "config": {"name": name, **config},
                "inbound_nodes": [{"args": [tensor(previous)], "kwargs": {}}],
            }
        )
        previous = name
    return {
        "class_name": "Functional",
        "config": {"name": "m", "layers": entries, "output_layers": [[previous, 0, 0]]},
    }


def test_one_keras_class_reads_as_the_kind_its_config_says() -> None:
    """ReLU is relu, relu6 or leaky_relu; Activation any activation or none; Dropout with one
    draw per example stochastic_depth; the script's StridedDepthwiseConv2D a strided
    depthwise_conv2d; an activation with arguments is spelled as a spec writes it."""
    gelu_tanh = {"module": "builtins", "class_name": "function", "config": "cnnspec>gelu_tanh"}
    config = _keras_model(
        ("Conv2D", "conv", {"filters": 4, "kernel_size": [3, 3], "activation": "leaky_relu"}),
        ("ReLU", "capped", {"max_value": 6.0}),
        ("ReLU", "leaky", {"negative_slope": 0.1}),
        ("Activation", "linear", {"activation": "linear"}),
        ("Activation", "approximate", {"activation": gelu_tanh}),
        ("Dropout", "drop_path", {"rate": 0.2, "noise_shape": [None, 1, 1, 1]}),
        ("StridedDepthwiseConv2D", "dw", {"kernel_size": [3, 3], "subsample": [1, 2]}),
        ("GlobalAveragePooling2D", "pool", {}),
    )
    network = network_from_config(config, {}, "model.keras")
    read = {layer.name: (layer.kind, layer.args, layer.inputs) for layer in network.layers}
    assert read["conv"][1]["activation"] == Spelled("leaky_relu(alpha=0.2)")
    assert read["capped"] == ("relu6", {}, ("conv",))
    assert read["leaky"] == ("leaky_relu", {"alpha": 0.1}, ("capped",))
    assert "linear" not in read  # the identity: its input is passed on
    assert read["approximate"] == ("gelu", {"approximate": True}, ("leaky",))
    assert read["drop_path"][:2] == ("stochastic_depth", {"rate": 0.2})
    assert read["dw"][0] == "depthwise_conv2d" and read["dw"][1]["stride"] == (1, 2)


def test_what_no_entry_reads_is_a_gap_per_layer() -> None:
    config = _keras_model(
        ("Conv2D", "conv", {"filters": 4, "kernel_size": 3, "data_format": "channels_first"}),
        ("ReLU", "capped", {"max_value": 4.0}),
        ("LSTM", "memory", {"units": 4}),
        ("Softmax", "probabilities", {"axis": 1}),
    )
    with pytest.raises(ImportFailure) as failure:
        network_from_config(config, {}, "model.keras")
    assert [str(gap) for gap in failure.value.gaps] == [
        "layer 'conv' (Conv2D): data_format=channels_first: a Keras model in cnnspec is "
        "channels-last",
        "layer 'capped' (ReLU): ReLU max_value=4.0: cnnspec caps at 6 only",
        "layer 'memory' (LSTM): a LSTM layer: cnnspec has no layer kind for it",
        "layer 'probabilities' (Softmax): softmax axis=1: cnnspec's softmax is over the last axis",
    ]


# ---- ONNX -------------------------------------------------------------------------------------


class _Graph:
    """An OnnxBuilder that keeps what an emitter writes: its nodes, constants and weights."""

    def __init__(self, layer: LayerArgs, shapes: list[tuple[int, ...]]) -> None:
        self.nodes: list[tuple[str, list[str], str, dict[str, Any]]] = []
        self.values: dict[str, Any] = {}
        for suffix, shape in layer.weight_shapes(shapes).items():
            self.values[f"node.{suffix}"] = np.ones(shape, np.float32)

    def op(self, op_type: str, inputs: list[str], name: str, **attributes: Any) -> str:
        self.nodes.append((op_type, inputs, name, attributes))
        return name

    def weight(self, key: str) -> str:
        return key

    def constant(
        self, name: str, values: list[float], shape: tuple[int, ...] = (), dtype: str = "float32"
    ) -> str:
        self.values[name] = np.asarray(values, dtype).reshape(shape)
        return name

    def view(self, op_type: str, inputs: list[str], attributes: dict[str, Any]) -> OnnxNode:
        """The node as the ONNX reader shows it to an entry (its input's shape unknown)."""
        plain = {k: float32(v) if isinstance(v, float) else v for k, v in attributes.items()}
        return OnnxNode(
            op_type, plain, tuple(self.values.get(i) for i in inputs), None, tuple(inputs)
        )


def onnx_written(layer: LayerArgs, kind: str) -> Iterator[tuple[tuple[int, ...], _Graph, str]]:
    """What `layer`'s ONNX emitter writes on a map and on a vector, where it takes that input:
    (the input's shape, the graph, the name of the output)."""
    arity = 2 if REGISTRY[kind].arity is None else REGISTRY[kind].arity or 1
    for shape in (MAP, VECTOR):
        try:
            layer.output_shape([shape] * arity)
        except ShapeError:
            continue
        graph = _Graph(layer, [shape] * arity)
        inputs = [f"in{i}" for i in range(arity)]
        output = tables("onnx")["layers"].emit(layer, graph, "node", inputs, [shape] * arity)
        yield shape, graph, output


def readable_last_ops() -> set[str]:
    return {pattern[-1] for entries in onnx_readers().values() for _, pattern in entries}


@pytest.mark.parametrize(("kind", "layer"), SAMPLED)
def test_the_last_onnx_op_an_emitter_writes_is_read_back(kind: str, layer: LayerArgs) -> None:
    cls = REGISTRY[kind]
    readable = readable_last_ops() | READER_OPS
    for shape, graph, output in onnx_written(layer, kind):
        if not graph.nodes:
            assert output.startswith("in"), kind  # inference: the input (a dropout)
            continue
        last = graph.nodes[-1]
        assert last[2] == output
        if cls.onnx_steps is not None and len(graph.nodes) > 1 and last[2] == "node":
            continue  # read by its steps: test_onnx_steps_are_read_back
        assert last[0] in readable, f"{kind} on {shape} writes {last[0]} last, which nothing reads"


@pytest.mark.parametrize(("kind", "layer"), SAMPLED)
def test_an_entrys_own_onnx_pattern_reads_the_layer_back(kind: str, layer: LayerArgs) -> None:
    """Where the nodes an emitter writes end in one of the entry's own patterns, its
    `from_onnx` reads them back as the same layer."""
    cls = REGISTRY[kind]
    for shape, graph, _ in onnx_written(layer, kind):
        ops = [node[0] for node in graph.nodes]
        for pattern in cls.onnx_patterns:
            if tuple(ops[-len(pattern) :]) != pattern:
                continue
            chain = [graph.view(op, inputs, attrs) for op, inputs, _, attrs in graph.nodes]
            chain = chain[-len(pattern) :]
            first = chain[0]
            if first.inputs and first.inputs[0] == "in0":  # the layer's input: its NCHW shape
                nchw = (1, shape[2], shape[0], shape[1]) if len(shape) == 3 else (1, *shape)
                chain[0] = OnnxNode(
                    first.op_type, first.attributes, first.constants, nchw, first.inputs
                )
            read = cls.from_onnx(chain)
            assert read is not None and cls.model_validate(read) == layer, (kind, shape)
            break


@pytest.mark.parametrize(("kind", "layer"), STEPPED)
def test_onnx_steps_are_read_back(kind: str, layer: LayerArgs) -> None:
    """An entry's `onnx_steps` names every node its emitter writes for one layer, and
    `from_onnx_steps` reads those nodes back as the same layer: export and import are two
    sides of the one declaration."""
    cls = REGISTRY[kind]
    declared = cls.onnx_steps
    assert declared is not None
    for shape, graph, _ in onnx_written(layer, kind):
        own = [node for node in graph.nodes if node[2] == "node" or node[2].startswith("node_")]
        steps = {name.removeprefix("node_"): node for node in own if (name := node[2]) != "node"}
        if getattr(layer, "activation", None) is not None:  # a layer of its own, `<node>_act`
            steps = {s: n for s, n in steps.items() if not s.startswith("act")}
        if not steps:
            continue  # one op, which the reader reads by itself (a Gemm, a Reshape)
        assert declared.matches(set(steps)), (kind, shape, sorted(steps))
        views = {s: graph.view(op, inputs, attrs) for s, (op, inputs, _, attrs) in steps.items()}
        final = next(node for node in own if node[2] == "node")
        views[""] = graph.view(final[0], final[1], final[3])
        source = next(views[s] for s in (*declared.inputs, "") if s in views)
        assert source.inputs[0] == "in0", (kind, shape)
        read = cls.from_onnx_steps(views)
        assert read is not None, (kind, shape)
        expected = layer.model_copy(update={"activation": None}) if "activation" in read else layer
        assert cls.model_validate(read) == expected, (kind, shape)
