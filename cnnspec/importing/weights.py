"""The imported weights in cnnspec's canonical layout (see cnnspec.layout), checked against
the compiled spec: every tensor it needs, with its shape, and nothing else."""

from __future__ import annotations

from typing import Any

from cnnspec.importing.network import Gap, ImportFailure, Network
from cnnspec.ir import Graph
from cnnspec.layout import flattened_inputs
from cnnspec.runtime import rules
from cnnspec.wording import plural


def canonical(network: Network, graph: Graph) -> dict[str, Any]:
    import numpy as np

    tensors = dict(network.tensors) if not network.keras_variables else _from_keras(network, graph)
    shapes = graph.value_shapes()
    expected: dict[str, tuple[int, ...]] = {}
    for node in graph.nodes:
        for suffix, shape in node.layer.weight_shapes([shapes[i] for i in node.inputs]).items():
            expected[f"{node.name}.{suffix}"] = tuple(shape)
    gaps = []
    for key, shape in expected.items():
        if key not in tensors:
            gaps.append(Gap(key.rsplit(".", 1)[0], f"no tensor for {key}", "the file lacks it"))
        elif tuple(np.shape(tensors[key])) != shape:
            gaps.append(
                Gap(
                    key.rsplit(".", 1)[0],
                    f"{key} has shape {tuple(np.shape(tensors[key]))}",
                    f"the layer needs {shape}",
                )
            )
    if gaps:
        raise ImportFailure("the file's weights do not fit the model it describes", gaps)
    return {key: np.ascontiguousarray(tensors[key], dtype=np.float32) for key in expected}


def _from_keras(network: Network, graph: Graph) -> dict[str, Any]:
    flattened = flattened_inputs(graph)
    tensors: dict[str, Any] = {}
    for node in graph.nodes:
        weights = node.layer.keras_weights()
        stored = network.keras_variables.get(node.name, [])
        if not weights and not stored:
            continue
        named = {name: value for name, value in stored if name is not None}
        if named:
            pairs = [(w, named.get(w.variable)) for w in weights]
        else:
            if len(stored) != len(weights):
                raise ImportFailure(
                    f"layer '{node.name}' holds {plural(len(stored), 'variable')} where its "
                    f"{node.kind} has {len(weights)}"
                )
            pairs = [(w, value) for w, (_, value) in zip(weights, stored, strict=True)]
        for weight, value in pairs:
            if value is None:
                raise ImportFailure(f"layer '{node.name}' has no variable {weight.variable}")
            tensors[f"{node.name}.{weight.suffix}"] = from_keras(
                value, weight.layout, flattened.get(node.name)
            )
    return tensors


def from_keras(value: Any, layout: str, flattened: tuple[int, int, int] | None) -> Any:
    """A Keras variable in the canonical layout, by the rule the Keras script's weights are
    read and written with (cnnspec.runtime.rules, which the scripts copy)."""
    import numpy as np

    return rules.from_keras(np.asarray(value), layout, flattened)
