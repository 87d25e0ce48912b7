"""maxpool(padding=amounts): a max pooling padded with -inf, PyTorch's max_pool2d(padding=...)
and the overhang of its ceil_mode, which Keras's `same` and `valid` cannot express (issue 25:
timm's cspresnet50 pools its stem so, after a leaky ReLU, whose negative values zeros would
beat). Proved in Keras (the PaddedMaxPooling2D runtime layer), PyTorch (nn.MaxPool2d's own
padding where it is even, F.pad with -inf where not) and ONNX (MaxPool's pads), and through
both importers.

- `cnnspec verify` with random weights: the checker's shapes, counts equal, the three within 1e-5.
- The padding never wins: on an all-negative input the pooled values are the input's own.
- Export to ONNX, then import (the campaign's round trip), and the Keras file imported back.
- The checker refuses amounts that reach past the window (a window of padding only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnspec import verify
from cnnspec.compiler import compile_text
from cnnspec.export import export
from cnnspec.importing import import_model
from tests.campaign import import_round_trip, random_weights
from tests.frameworks.import_models.cases import assert_same_layers, run_onnx
from tests.frameworks.scripts import checked_spec, load_script, write_script

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.frameworks

SPEC = """
model padded_pools {
  input 9x10x3
  conv2d(4, 3, padding=same, activation=tanh)
  maxpool(3, stride=2, padding=1, name=even)
  maxpool(2, stride=2, padding=((0, 1), (1, 1)), name=ceil)
  maxpool((3, 2), stride=1, padding=(1, 0), name=rect)
  head { flatten()  dense(3, activation=softmax) }
}
"""


def test_counts_shapes_and_outputs_agree() -> None:
    spec = checked_spec(SPEC)
    shapes = {node.name: node.output_shape for node in spec.model.nodes}
    # (9 + 2 - 3) // 2 + 1 = 5 and (10 + 2 - 3) // 2 + 1 = 5; then (5 + 1 - 2) // 2 + 1 = 3
    # and (5 + 2 - 2) // 2 + 1 = 3; then a (3, 2) window padded (1, 0): 3 and 2.
    assert shapes["even"] == (5, 5, 4)
    assert shapes["ceil"] == (3, 3, 4)
    assert shapes["rect"] == (3, 2, 4)
    report = verify.run_verify(spec, random_weights(spec, np.random.default_rng(0)), 1e-4)
    assert report.counts == {"keras": report.expected, "pytorch": report.expected}, report
    assert report.shape_mismatches == []
    assert len(report.comparisons) == 3
    assert all(c.max_abs <= 1e-5 for c in report.comparisons), report.comparisons


def test_the_padding_never_wins(tmp_path: Path) -> None:
    """On values that are all negative, zeros would win every window at the edge: -inf never
    does, in either script."""
    spec = checked_spec(
        "model p {\n  input 4x4x1\n  maxpool(3, stride=2, padding=1)\n"
        "  head { flatten() softmax() }\n}"
    )
    x = -(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1) + 1)
    # Windows centred on rows and columns 0 and 2: each maximum is the input's own value.
    pooled = np.array([x[0, 0, 0, 0], x[0, 0, 1, 0], x[0, 1, 0, 0], x[0, 1, 1, 0]])
    expected = np.exp(pooled) / np.exp(pooled).sum()
    keras_model = load_script(write_script(spec, tmp_path, "keras")).build_model()
    np.testing.assert_allclose(np.asarray(keras_model(x, training=False))[0], expected, rtol=1e-6)
    torch_model = load_script(write_script(spec, tmp_path, "pytorch")).build_model()
    with torch.no_grad():
        actual = torch_model.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(actual[0].numpy(), expected, rtol=1e-6)


def test_export_then_import_gives_the_same_network() -> None:
    spec = checked_spec(SPEC)
    weights = random_weights(spec, np.random.default_rng(1))
    assert import_round_trip(spec, weights, 1e-5, seed=2) == []


def test_a_keras_file_imports_back(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    spec = checked_spec(SPEC)
    script = load_script(write_script(spec, tmp_path, "keras"))
    model = script.build_model()
    weights = tmp_path / "weights.safetensors"
    save_file(random_weights(spec, np.random.default_rng(3)), str(weights))
    script.load_weights(model, weights)
    file = tmp_path / "model.keras"
    model.save(file)
    imported = import_model(str(file))
    assert_same_layers(spec.model, imported.spec.model)
    x = np.random.default_rng(4).standard_normal((2, 9, 10, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    actual = run_onnx(export(imported.spec, imported.tensors), x.transpose(0, 3, 1, 2).copy())
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_padding_past_the_window_is_refused() -> None:
    compilation = compile_text(
        "model p {\n  input 8x8x1\n  maxpool(2, padding=((2, 0), (0, 0)))\n"
        "  head { flatten() dense(2, activation=softmax) }\n}"
    )
    (error,) = compilation.diagnostics.errors
    assert error.code == "E113"
    assert "a window would hold only padding" in error.message
    assert error.span.line == 3
