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

__all__ = ["SPECS", "assert_same_layers", "image_size", "run_onnx", "trained_like"]


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
    shapes and counts (dropout, which does nothing at inference, only where the file has it)."""
    names = {n.name for n in imported.nodes}
    mine = [n for n in original.nodes if n.kind not in INFERENCE_IDENTITIES or n.name in names]
    assert [n.name for n in imported.nodes] == [n.name for n in mine]
    for node, other in zip(mine, imported.nodes, strict=True):
        found = (other.kind, other.output_shape, other.params)
        assert found == (node.kind, node.output_shape, node.params), node.name
