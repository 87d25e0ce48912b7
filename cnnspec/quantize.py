"""Static int8 quantisation of an exported model with onnxruntime.quantization, calibrated on
images preprocessed exactly as `predict` does.

The usual practice, which keeps a small classifier within a point of float32:
- QDQ format with per-channel int8 weights and uint8 activations, calibrated by min/max on a
  fixed set of images (the first CALIBRATION_LIMIT, so an export is reproducible);
- 7-bit weights (`reduce_range`): x86 CPUs without VNNI multiply uint8 by int8 with
  VPMADDUBSW, which adds two products into a saturating int16, and 255 x 127 x 2 overflows it;
  with weights in [-64, 63] the sum stays below 32,767 on every CPU (VNNI machines lose
  nothing but a bit of weight precision);
- the classifier (the last layer with weights, and any activation after it, the output's
  softmax or sigmoid) stays in float32: its few weights decide the answer, and quantising them
  gains no speed worth that.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnspec.ir import Graph
from cnnspec.predict import PredictError, Preprocessing
from cnnspec.sections import IMAGE_SUFFIXES

CALIBRATION_LIMIT = 512


class QuantizeError(Exception):
    """Calibration data is missing or unusable; reported as one line."""


def calibration_batch(
    source: str, preprocessing: Preprocessing, holdout: tuple[float, int] = (0.2, 0)
) -> np.ndarray:
    """Up to CALIBRATION_LIMIT model inputs: `digits` (scikit-learn's bundled images, for
    models trained on them: the first of the training split that the scripts hold `holdout`
    = (test fraction, seed) out of, so the test images stay unseen) or a folder searched
    recursively for images, in sorted order."""
    if source == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if (preprocessing.height, preprocessing.width, preprocessing.channels) != (8, 8, 1):
            raise QuantizeError("calibration data 'digits' fits only 8x8x1 models")
        digits = load_digits()
        fraction, seed = holdout
        train, _ = train_test_split(
            digits.images, test_size=fraction, stratify=digits.target, random_state=seed
        )
        images = train[:CALIBRATION_LIMIT, :, :, np.newaxis].astype(np.float32)
        x = images * preprocessing.rescale  # the digits are already in their own 0-16 scale
        if preprocessing.color_order == "bgr":
            x = x[..., ::-1]
        if preprocessing.mean is not None and preprocessing.std is not None:
            x = (x - np.asarray(preprocessing.mean)) / np.asarray(preprocessing.std)
        x = x.transpose(0, 3, 1, 2) if preprocessing.layout == "nchw" else x
        return np.ascontiguousarray(x, dtype=np.float32)
    folder = Path(source)
    if not folder.is_dir():
        raise QuantizeError(f"calibration data {source!r} is neither 'digits' nor a folder")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise QuantizeError(f"no PNG or JPEG images in {folder}")
    try:
        return np.stack([preprocessing.load(p) for p in paths[:CALIBRATION_LIMIT]])
    except PredictError as error:
        raise QuantizeError(str(error)) from None


def classifier_nodes(graph: Graph) -> list[str]:
    """The model's output node back to its last layer with weights: what stays float32."""
    nodes: list[str] = []
    name = graph.output
    while name is not None and name != graph.INPUT:
        node = graph.node(name)
        nodes.append(name)
        if node.params.total or len(node.inputs) != 1:
            break
        name = node.inputs[0]
    return nodes


def quantize_int8(
    model: Any, calibration: np.ndarray, input_name: str, keep_float: Sequence[str] = ()
) -> Any:
    """The model with int8 weights and activations (QDQ), calibrated on `calibration`; the
    ONNX nodes of the IR nodes in `keep_float` (named after them) stay in float32."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 32)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    float_ops = [
        node.name
        for node in model.graph.node
        if any(node.name == name or node.name.startswith(f"{name}_") for name in keep_float)
    ]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser warns through the root logger about BN vectors
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder, "fp32.onnx"), Path(folder, "int8.onnx")
        onnx.save(model, str(source))
        quantize_static(
            str(source),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float_ops,
        )
        quantized = onnx.load(str(target))
    root.setLevel(level)
    return quantized
