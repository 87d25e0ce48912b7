"""`cnnspec import` of torchvision's and timm's own models through the factory route (issue 25),
a few representative ones: with PyTorch's counts, and the original's probabilities within 1e-4
(and its logits, the softmax's input, which random weights leave less uniform). The whole zoos
are bench/zoo_survey.py's; torchvision and timm are test-only (the `dev` extra)."""

import importlib.util

import numpy as np
import pytest

from cnnspec.importing import import_model
from tests.frameworks.import_models.cases import assert_computes_what_torch_does

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
    assert_computes_what_torch_does(imported, logits, x)
