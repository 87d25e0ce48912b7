"""DenseNet121/169/201 and ResNet50V2/101V2/152V2 from cnnspec's library equal keras.applications
layer by layer (every layer's name, shape and size, and the total, trainable and non-trainable
counts), agree across Keras, PyTorch and onnxruntime, and freeze by keras.applications' block
names.

keras.applications leaves a few parameter-free layers unnamed: DenseNet's two stem zero paddings
and ResNetV2's three 1x1 shortcut max poolings. The library names them as a fresh Keras session
does (zero_padding2d, zero_padding2d_1; max_pooling2d, max_pooling2d_1, max_pooling2d_2), and
keras_application() clears the session before each build, so the strict name check applies."""

from __future__ import annotations

import pytest

from tests.frameworks.backbone_check import (
    assert_equals_keras_applications,
    assert_freezes_by_block,
    assert_verifies,
    library,
)

pytestmark = pytest.mark.frameworks

# (backbone, input size, include_top, pooling): 32 is the smallest input keras.applications
# accepts for both families (DenseNet's last stage is then 1x1); the classifiers at 224.
CASES = [
    ("densenet121", 224, True, None),
    ("densenet121", 32, False, None),
    library("densenet169", 32, False, "avg"),
    library("densenet201", 32, False, "max"),
    ("resnet50_v2", 224, True, None),
    ("resnet50_v2", 32, False, None),
    library("resnet101_v2", 32, False, "avg"),
    library("resnet152_v2", 32, False, "max"),
    library("densenet169", 224, True, None),
    library("densenet201", 224, True, None),
    library("resnet101_v2", 224, True, None),
    library("resnet152_v2", 224, True, None),
]


@pytest.mark.parametrize(("name", "size", "include_top", "pooling"), CASES)
def test_backbone_equals_keras_applications(
    name: str, size: int, include_top: bool, pooling: str | None
) -> None:
    assert_equals_keras_applications(name, size, include_top, pooling)


@pytest.mark.parametrize("name", ["densenet121", "resnet50_v2"])
def test_backbone_verifies_across_frameworks(name: str) -> None:
    assert_verifies(name, 32)


@pytest.mark.parametrize("name", ["densenet121", "resnet50_v2"])
def test_backbone_freezes_by_stage(name: str) -> None:
    assert_freezes_by_block(name, 32, "conv4")
