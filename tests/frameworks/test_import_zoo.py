"""`cnnspec import` of torchvision's and timm's own models through the factory route (issue 25),
a few representative ones: with PyTorch's counts, and the original's probabilities within 1e-4
(and its logits, the softmax's input, which random weights leave less uniform). The whole zoos
are bench/zoo_survey.py's; torchvision and timm are test-only (the `dev` extra)."""

import importlib.util

import numpy as np
import pytest

from cnnspec.export import export
from cnnspec.importing import import_model
from tests.frameworks.import_models.cases import run_onnx

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

pytestmark = [pytest.mark.frameworks, pytest.mark.library]

ZOO = "tests.frameworks.zoo"


def _zoo():
    from tests.frameworks import zoo

    try:
        zoo.torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed")
    return zoo


@pytest.mark.parametrize(
    "factory",
    [
        "tv_resnet18",  # residuals with projection shortcuts, ceil-free max pooling
        "tv_mobilenet_v3_small",  # hard-swish, squeeze-excite, depthwise convolutions
        "tv_efficientnet_b0",  # swish, stochastic depth (identity at inference)
        "timm_resnet18d",  # the deep stem and the average-pool shortcut
    ],
)
def test_zoo_model_imports_with_its_counts_and_outputs(factory):
    zoo = _zoo()
    if factory.startswith("timm_") and importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    size = zoo.input_size(factory)
    imported = import_model(f"{ZOO}:{factory}", size)
    model = zoo.build(factory)
    params = imported.spec.model.params
    assert params.trainable == sum(p.numel() for p in model.parameters())
    x = np.random.default_rng(0).standard_normal((2, size[2], size[0], size[1]))
    x = x.astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    exported = export(imported.spec, imported.tensors)
    expected = torch.softmax(logits, 1).numpy()
    np.testing.assert_allclose(run_onnx(exported, x), expected, atol=1e-4)
    # The softmax's input, against the logits: what near-uniform probabilities hide.
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
    np.testing.assert_allclose(run_onnx(exported, x), logits.numpy(), atol=1e-4 * scale)
