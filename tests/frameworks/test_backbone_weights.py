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


@pytest.mark.library  # 30 s of a subprocess training under two devices: `make test-library`
def test_weights_load_inside_a_mirrored_strategy(tmp_path: Path) -> None:
    """The Keras script loads backbone weights inside `strategy.scope()`; resetting Keras's
    layer-name counters there (for keras.applications' unnamed layers) must leave the scope
    and training intact."""
    import keras

    from tests.frameworks.backbone_check import keras_application
    from tests.frameworks.scripts import (
        checked_spec,
        run_mirrored,
        write_script,
        write_tiny_image_folders,
    )
    from tests.frameworks.test_backbones import write_keras_weight_file

    source = keras_application("mobilenet_v3_small", 32, False, "avg")
    weight_file = tmp_path / "notop.h5"
    write_keras_weight_file(source, weight_file)
    keras.backend.clear_session()
    spec = checked_spec(
        "model t { input 32x32x3  backbone mobilenet_v3_small(weights=none, pooling=avg)"
        "  dense(2, activation=softmax) }\n"
        'data { source directory("imgs", size=32x32)  labels sparse  validation val }\n'
        "train { epochs 1  batch 4 }"
    )
    data = write_tiny_image_folders(tmp_path / "imgs", ("a", "b"), size=32)
    script = write_script(spec, tmp_path, "keras")
    out = tmp_path / "run"
    result = run_mirrored(
        script,
        tmp_path,
        *("--epochs", "1", "--data-dir", str(data), "--weights", str(weight_file)),
        *("--output-dir", str(out)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored over 2 devices" in result.stdout
    assert f"weights from {weight_file}" in result.stdout
    assert (out / "metrics.json").exists()
