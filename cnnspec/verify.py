"""`cnnspec verify`: the equivalence certificate. The same weights go into the generated Keras
model, the generated PyTorch model and the exported ONNX model under onnxruntime; all three get
the same inputs, and every pair's largest absolute and relative error is measured. When a pair
disagrees, the per-layer comparison says where the outputs first part.

Backends whose framework is not installed are reported and skipped.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from cnnspec.backends import REGISTRY
from cnnspec.ir import Spec


@dataclass
class Comparison:
    first: str
    second: str
    max_abs: float
    max_rel: float
    # (layer, max_abs) of the first layer whose outputs differ beyond the tolerance, if any.
    first_divergence: tuple[str, float] | None = None


@dataclass
class Report:
    ran: list[str]
    skipped: dict[str, str]  # backend -> why
    comparisons: list[Comparison]
    batch: int
    # What each framework's model holds, as (trainable, non-trainable) scalars: Keras's
    # trainable and non-trainable weights; PyTorch's parameters and buffers (BatchNorm's
    # running statistics, without its step counter). The checker's own is `expected`.
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    expected: tuple[int, int] = (0, 0)
    # Layers whose output shape in a framework differs from the checker's: "keras: conv1 ...".
    shape_mismatches: list[str] = field(default_factory=list)

    @property
    def counts_agree(self) -> bool:
        return all(count == self.expected for count in self.counts.values())

    def passed(self, tolerance: float) -> bool:
        return (
            bool(self.comparisons)
            and all(c.max_abs <= tolerance for c in self.comparisons)
            and self.counts_agree
            and not self.shape_mismatches
        )


def _available(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _load_script(spec: Spec, backend_name: str, directory: Path) -> ModuleType:
    from cnnspec.backends import backend

    module = backend(backend_name)
    path = directory / f"verify_{backend_name}{module.SUFFIX}"
    path.write_text(module.emit(spec, f"{spec.name}.cnn"), encoding="utf-8")
    loader_spec = importlib.util.spec_from_file_location(path.stem, path)
    assert loader_spec is not None and loader_spec.loader is not None
    script = importlib.util.module_from_spec(loader_spec)
    sys.modules[path.stem] = script  # tf.function's AutoGraph looks modules up by name
    loader_spec.loader.exec_module(script)
    return script


def _errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = np.maximum(np.abs(a), np.abs(b)).astype(np.float64)
    relative = difference / np.maximum(scale, 1e-6)
    return float(difference.max(initial=0.0)), float(relative.max(initial=0.0))


def _nhwc(value: np.ndarray) -> np.ndarray:
    return value.transpose(0, 2, 3, 1) if value.ndim == 4 else value


def run_verify(
    spec: Spec,
    weights: Mapping[str, np.ndarray],
    tolerance: float,
    batch: int = 4,
    seed: int = 0,
) -> Report:
    """Run every installed backend on the same inputs and compare outputs pairwise; per layer
    too, for pairs that disagree."""
    assert spec.model.input_shape is not None
    h, w, c = spec.model.input_shape
    x = np.random.default_rng(seed).normal(0, 1, (batch, c, h, w)).astype(np.float32)
    outputs: dict[str, np.ndarray] = {}
    layers: dict[str, Callable[[], dict[str, np.ndarray]]] = {}
    skipped: dict[str, str] = {}
    params = spec.model.params
    report = Report([], skipped, [], batch, expected=(params.trainable, params.non_trainable))
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        weights_path = directory / "weights.safetensors"
        from safetensors.numpy import save_file

        save_file(
            {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}, str(weights_path)
        )
        for name, registered in REGISTRY.items():
            if not _available(registered.package):
                skipped[name] = f"{registered.package} is not installed"
                continue
            runner = RUNNERS[name]
            outputs[name], layers[name] = runner(spec, weights_path, directory, x, report)
        comparisons = []
        names = list(outputs)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                max_abs, max_rel = _errors(outputs[first], outputs[second])
                comparison = Comparison(first, second, max_abs, max_rel)
                if max_abs > tolerance:
                    comparison.first_divergence = _locate(
                        spec, layers[first](), layers[second](), tolerance
                    )
                comparisons.append(comparison)
    report.ran, report.comparisons = names, comparisons
    return report


def _locate(
    spec: Spec, first: dict[str, np.ndarray], second: dict[str, np.ndarray], tolerance: float
) -> tuple[str, float] | None:
    for node in spec.model.nodes:
        if node.name in first and node.name in second:
            a, b = first[node.name], second[node.name]
            if a.shape == b.shape:
                max_abs, _ = _errors(a, b)
                if max_abs > tolerance:
                    return node.name, max_abs
    return None


Runner = tuple[np.ndarray, Callable[[], dict[str, np.ndarray]]]


def _size(variables: list[Any]) -> int:
    return sum(int(np.prod(v.shape)) for v in variables)


def _keras(spec: Spec, path: Path, directory: Path, x: np.ndarray, report: Report) -> Runner:
    script = _load_script(spec, "keras", directory)
    import keras

    model = script.build_model()
    report.counts["keras"] = (_size(model.trainable_weights), _size(model.non_trainable_weights))
    from cnnspec.backends.keras import output_layer

    outputs = {node.name: output_layer(node) for node in spec.model.nodes}
    for node in spec.model.nodes:
        shape = tuple(model.get_layer(outputs[node.name]).output.shape[1:])
        if shape != node.output_shape:
            report.shape_mismatches.append(
                f"keras: {node.name} is {shape}, the checker says {node.output_shape}"
            )
    script.load_weights(model, path)
    nhwc = x.transpose(0, 2, 3, 1).copy()
    output = np.asarray(model(nhwc, training=False))

    def per_layer() -> dict[str, np.ndarray]:
        names = [n.name for n in spec.model.nodes]
        chosen = [outputs[n] for n in names]
        probe = keras.Model(model.input, [model.get_layer(n).output for n in chosen])
        values = probe(nhwc, training=False)
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}

    return output, per_layer


def _pytorch(spec: Spec, path: Path, directory: Path, x: np.ndarray, report: Report) -> Runner:
    script = _load_script(spec, "pytorch", directory)
    import torch

    net = script.build_model()
    statistics = [b for n, b in net.named_buffers() if not n.endswith("num_batches_tracked")]
    report.counts["pytorch"] = (_size(list(net.parameters())), _size(statistics))
    script.load_weights(net, path)
    net.eval()
    with torch.no_grad():
        output = net(torch.from_numpy(x)).numpy()

    def per_layer() -> dict[str, np.ndarray]:
        # Module outputs (before a fused activation) are compared only for nodes without one.
        values: dict[str, np.ndarray] = {}
        hooks = [
            module.register_forward_hook(
                lambda _m, _i, out, name=name: values.__setitem__(name, _nhwc(out.numpy()))
            )
            for name, module in net.named_children()
        ]
        with torch.no_grad():
            net(torch.from_numpy(x))
        for hook in hooks:
            hook.remove()
        return {
            node.name: values[node.name]
            for node in spec.model.nodes
            if node.name in values and node.layer.fused_activation() is None
        }

    return output, per_layer


def _onnx(spec: Spec, path: Path, directory: Path, x: np.ndarray, report: Report) -> Runner:
    import onnxruntime
    from onnx import helper

    from cnnspec.export import (
        data_file_for,
        export,
        load_weights,
        move_weights_out,
        needs_external_data,
    )

    model = export(spec, load_weights(path))
    # A model over protobuf's 2 GiB cannot be handed over as bytes: it is written to a file with
    # its weights beside it, as `cnnspec export` writes it, and the sessions load that file
    # (the probe model below names the same data file).
    folder = directory / "onnx"
    external = needs_external_data(model)
    if external:
        folder.mkdir(parents=True, exist_ok=True)
        data_file = data_file_for(folder / "model.onnx")
        with open(data_file, "wb") as stream:
            move_weights_out(model, data_file.name, stream)

    def start(proto: Any, name: str) -> Any:
        content: bytes = proto.SerializeToString()
        source: str | bytes = content
        if external:
            (folder / name).write_bytes(content)
            source = str(folder / name)
        return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])

    session = start(model, "model.onnx")
    (output,) = session.run(None, {"image": x})

    def per_layer() -> dict[str, np.ndarray]:
        # Each node's ONNX output carries the node's name (see export._Builder.op).
        produced = {o for node in model.graph.node for o in node.output}
        names = [n.name for n in spec.model.nodes if n.name in produced]
        probe = model.__class__()
        probe.CopyFrom(model)
        for name in names:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
        probe_session = start(probe, "probe.onnx")
        values = probe_session.run(names, {"image": x})
        return {
            name: _nhwc(value)
            for name, value, node in zip(
                names, values, [spec.model.node(n) for n in names], strict=True
            )
            if node.layer.fused_activation() is None
        }

    return np.asarray(output), per_layer


# How each registered backend runs a spec (a test checks that every backend has one).
RUNNERS: dict[str, Callable[[Spec, Path, Path, np.ndarray, Report], Runner]] = {
    "keras": _keras,
    "pytorch": _pytorch,
    "onnx": _onnx,
}
