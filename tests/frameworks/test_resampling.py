"""The kinds `upsample` and `channel_shuffle`, each one registry entry
(cnnspec/layers/resampling.py), proved in Keras, PyTorch and ONNX and through both importers.

- `cnnspec verify` with random weights: Keras and PyTorch hold the checker's counts, every
  Keras layer has the checker's shape, and Keras, PyTorch and onnxruntime agree within 1e-5
  (nearest and bilinear, square and (h, w) factors, a shuffle before a grouped convolution).
- Export to ONNX, then import: the same layers, and the same outputs.
- The generated Keras model saved as a `.keras` file, then imported: the same layers.
- A PyTorch module written as torchvision writes ShuffleNet (view, transpose, view) and a
  decoder (F.interpolate), imported: the shuffle and the upsamplings are recognised as kinds.
- What the kinds cannot express is refused in one line each, at the layer that has it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnspec import verify
from cnnspec.compiler import compile_text
from cnnspec.export import export
from cnnspec.importing import ImportFailure, import_model
from tests.campaign import random_weights
from tests.frameworks.import_models.cases import assert_same_layers, run_onnx
from tests.frameworks.scripts import checked_spec, load_script, write_script

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.frameworks

SPEC = """
model shuffle_up {
  input 8x6x3
  conv2d(12, 3, padding=same, activation=relu)
  channel_shuffle(3)
  conv2d(12, 3, padding=same, groups=3)
  batchnorm()
  maxpool(2)
  upsample(2)
  conv2d(8, 3, padding=same, activation=relu)
  upsample((2, 3), interpolation=bilinear)
  channel_shuffle(groups=4)
  upsample(3, interpolation=bilinear)
  conv2d(6, 3, stride=2)
  head { global_avg_pool() dense(5, activation=softmax) }
}
"""


def test_counts_shapes_and_outputs_agree() -> None:
    spec = checked_spec(SPEC)
    shapes = {node.name: node.output_shape for node in spec.model.nodes}
    assert shapes["upsample_1"] == (8, 6, 12)
    assert shapes["upsample_2"] == (16, 18, 8)
    assert shapes["upsample_3"] == (48, 54, 8)
    report = verify.run_verify(spec, random_weights(spec, np.random.default_rng(0)), 1e-4)
    assert report.skipped == {}
    assert report.counts == {"keras": report.expected, "pytorch": report.expected}, report
    assert report.shape_mismatches == []
    assert len(report.comparisons) == 3
    assert all(c.max_abs <= 1e-5 for c in report.comparisons), report.comparisons


def test_a_shuffle_interleaves_the_groups(tmp_path: Path) -> None:
    """Channel j of group g moves to j * groups + g, in both scripts' models."""
    spec = checked_spec(
        "model s {\n  input 1x1x6\n  channel_shuffle(2)\n  head { flatten() softmax() }\n}"
    )
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 1, 6)
    keras_model = load_script(write_script(spec, tmp_path, "keras")).build_model()
    torch_model = load_script(write_script(spec, tmp_path, "pytorch")).build_model()
    shuffled = x.reshape(6)[[0, 3, 1, 4, 2, 5]]
    expected = np.exp(shuffled) / np.exp(shuffled).sum()
    np.testing.assert_allclose(np.asarray(keras_model(x, training=False))[0], expected, rtol=1e-6)
    nchw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        actual = torch_model.eval()(nchw)[0].numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_export_then_import_gives_the_same_network() -> None:
    spec = checked_spec(SPEC)
    weights = random_weights(spec, np.random.default_rng(1))
    model = export(spec, weights)
    path_free = import_model_from_onnx(model)
    assert_same_layers(spec.model, path_free.spec.model)
    kinds = [node.kind for node in path_free.spec.model.nodes]
    assert kinds.count("channel_shuffle") == 2 and kinds.count("upsample") == 3
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 6)).astype(np.float32)
    np.testing.assert_allclose(
        run_onnx(export(path_free.spec, path_free.tensors), x), run_onnx(model, x), atol=1e-5
    )


def import_model_from_onnx(model):  # type: ignore[no-untyped-def]
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(model.SerializeToString())
        return import_model(str(path))


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
    x = np.random.default_rng(4).standard_normal((2, 8, 6, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    nchw = x.transpose(0, 3, 1, 2).copy()
    actual = run_onnx(export(imported.spec, imported.tensors), nchw)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_torchvisions_shuffle_and_interpolate_are_recognised() -> None:
    nets = "tests.frameworks.import_models.shuffle_nets"
    imported = import_model(f"{nets}:shuffle_up", (8, 6, 3))
    kinds = [node.kind for node in imported.spec.model.nodes]
    assert "channel_shuffle(3" in imported.text
    assert "upsample(" in imported.text and "interpolation=bilinear" in imported.text
    assert kinds.count("upsample") == 2, kinds
    from tests.frameworks.import_models.shuffle_nets import shuffle_up

    x = np.random.default_rng(5).standard_normal((2, 3, 8, 6)).astype(np.float32)
    with torch.no_grad():
        logits = shuffle_up()(torch.from_numpy(x))
    expected = torch.softmax(logits, 1).numpy() if imported.notes else logits.numpy()
    actual = run_onnx(export(imported.spec, imported.tensors), x)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_what_the_kinds_cannot_express_is_one_line_each(tmp_path: Path) -> None:
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.UpSampling2D(2, interpolation="bicubic", name="smooth")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    file = tmp_path / "bicubic.keras"
    keras.Model(inputs, keras.layers.Dense(2)(x)).save(file)
    with pytest.raises(ImportFailure) as failure:
        import_model(str(file))
    lines = [str(gap) for gap in failure.value.gaps]
    assert len(lines) == 1 and "smooth" in lines[0] and "interpolation=bicubic" in lines[0]


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("channel_shuffle(5)", "E205", "needs channels divisible by 5, but has 3"),
        ("channel_shuffle()", "E112", "groups"),
        ("upsample(2, interpolation=bicubic)", "E113", "nearest"),
        ("upsample(0)", "E113", "positive"),
    ],
)
def test_bad_arguments_are_located(text: str, code: str, message: str) -> None:
    spec = f"model bad {{\n  input 8x8x3\n  {text}\n  head {{ global_avg_pool() dense(2, activation=softmax) }}\n}}\n"
    errors = compile_text(spec, "bad.cnn").diagnostics.errors
    assert [(e.code, e.span.line) for e in errors] == [(code, 3)], errors
    assert message in errors[0].message
