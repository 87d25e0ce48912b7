"""ImageNet weights load by layer name: for each family's required backbone, a weight file in
keras.applications' layout loads into both generated scripts, which then reproduce the
keras.applications model (tests/frameworks/backbone_check.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.frameworks.backbone_check import assert_weights_load_by_name

pytestmark = pytest.mark.frameworks

CASES = [
    ("efficientnet_b0", 32),
    ("efficientnet_v2_b0", 32),
    ("densenet121", 32),
    ("resnet50_v2", 32),
    ("convnext_tiny", 32),
    ("mobilenet_v3_large", 32),
    ("mobilenet", 32),
]


@pytest.mark.parametrize(("name", "size"), CASES)
def test_keras_weight_files_load_by_layer_name(name: str, size: int, tmp_path: Path) -> None:
    assert_weights_load_by_name(name, size, tmp_path)
