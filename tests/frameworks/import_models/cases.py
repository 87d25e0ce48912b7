"""What the import tests share: the shipped specs (the large ones at a small input, as
`--image-size` would), weights unlike the initial ones, and running an ONNX model."""

from pathlib import Path
from typing import Any

import numpy as np

from tests.campaign import INFERENCE_IDENTITIES, random_weights
from tests.conftest import ROOT

SPECS = sorted((ROOT / "specs").glob("*.cnn"))
SMALL = {
    "pneumonia_vgg16": 48,
    "pneumonia_vgg16_imagenet": 48,
    "resnet50_transfer": 48,
    "mobilenet_v2_transfer": 48,
}

__all__ = [
    "SPECS",
    "assert_computes_what_torch_does",
    "assert_same_layers",
    "image_size",
    "run_onnx",
    "trained_like",
]


def image_size(path: Path) -> tuple[int, int] | None:
    size = SMALL.get(path.stem)
    return (size, size) if size else None


def trained_like(spec: Any) -> dict[str, np.ndarray]:
    """Random weights, biases and batchnorm statistics included (never their zeros and ones)."""
    return random_weights(spec, np.random.default_rng(3))


def run_onnx(model: Any, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def assert_same_layers(original: Any, imported: Any) -> None:
    """The imported graph has the original's layers, in its order, with the same kinds,
    shapes and counts (dropout, which does nothing at inference, only where the file has it).
    A graph whose values are read past their joins (`from`) is written in the nesting's order,
    each value before the `from`s that read it, which need not be the source's: there the
    layers are the original's by name, in any order."""
    from cnnspec.nesting import froms_of, nest

    names = {n.name for n in imported.nodes}
    mine = [n for n in original.nodes if n.kind not in INFERENCE_IDENTITIES or n.name in names]
    others = list(imported.nodes)
    if froms_of(nest(original.nodes, original.INPUT, original.output)):
        mine.sort(key=lambda node: node.name)
        others.sort(key=lambda node: node.name)
    assert [n.name for n in others] == [n.name for n in mine]
    for node, other in zip(mine, others, strict=True):
        found = (other.kind, other.output_shape, other.params)
        assert found == (node.kind, node.output_shape, node.params), node.name


def assert_computes_what_torch_does(
    imported: Any, logits: Any, x: np.ndarray, atol: float = 1e-4
) -> None:
    """An imported PyTorch classifier's probabilities within `atol` of the softmax of the
    original's `logits` (a torch tensor) on the NCHW batch `x`; and, since near-uniform or
    saturated probabilities hide a wrong layer, the softmax's input in the exported graph
    against those logits, within `atol` of their scale."""
    import onnx
    import torch

    from cnnspec.export import export

    exported = export(imported.spec, imported.tensors)
    expected = torch.softmax(logits, 1).numpy()
    np.testing.assert_allclose(run_onnx(exported, x), expected, atol=atol)
    producers = {name: node for node in exported.graph.node for name in node.output}
    softmax = producers[exported.graph.output[0].name]
    while softmax.op_type == "Identity":
        softmax = producers[softmax.input[0]]
    assert softmax.op_type == "Softmax"
    del exported.graph.output[:]
    exported.graph.output.append(
        onnx.helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None)
    )
    scale = max(1.0, float(logits.abs().max()))
    np.testing.assert_allclose(run_onnx(exported, x), logits.numpy(), atol=atol * scale)
