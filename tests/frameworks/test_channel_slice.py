"""The kind `channel_slice(start, stop)` (cnnspec/layers/slicing.py, issue 25), proved in Keras,
PyTorch and ONNX and through both importers.

- `cnnspec verify` with random weights: on maps (the parts of a channel split, as branches of
  a concat, then shuffled) and on vectors (a dense layer's features, a flattened map's), Keras
  and PyTorch hold the checker's counts, every Keras layer has the checker's shape, and Keras,
  PyTorch and onnxruntime agree within 1e-5.
- Export to ONNX, then import (the campaign's round trip): the same layers, the same outputs.
- The generated Keras model saved as a `.keras` file, then imported: the same layers.
- A PyTorch module that splits its channels with `chunk`, `torch.split` and `x[:, a:b]`,
  imported: each part a channel_slice, each split a join of slices of one input, and the
  outputs torch's within 1e-5.
- torchvision's ShuffleNetV2 and timm's GhostNet (library): imported, torch's counts, and
  its probabilities and logits within 1e-4.
- The checker's errors (an empty range, a range beyond the channels) are located at `stop`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cnnspec import verify
from cnnspec.compiler import compile_text
from cnnspec.export import export
from cnnspec.importing import import_model
from tests.campaign import import_round_trip, random_weights
from tests.frameworks.import_models.cases import (
    assert_computes_what_torch_does,
    assert_same_layers,
    run_onnx,
)
from tests.frameworks.scripts import checked_spec, load_script, write_script

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.frameworks

SPEC = """
model split_paths {
  input 8x6x3
  conv2d(8, 3, padding=same, activation=relu)
  concat {
    branch { channel_slice(0, 4) }
    branch { channel_slice(4, 8) conv2d(4, 1) batchnorm() relu() depthwise_conv2d(3, padding=same) }
  }
  channel_shuffle(2)
  concat {
    branch { channel_slice(1, 3) }
    branch { channel_slice(3, 8) conv2d(6, 3, padding=same) }
    branch { }
  }
  maxpool(2)
  residual { channel_slice(2, 14) conv2d(16, 1) }
  flatten()
  channel_slice(5, 100)
  dense(12, activation=relu)
  channel_slice(3, 10)
  dense(4, activation=softmax)
}
"""


def test_counts_shapes_and_outputs_agree() -> None:
    spec = checked_spec(SPEC)
    shapes = {node.name: node.output_shape for node in spec.model.nodes}
    assert shapes["channel_slice_1"] == (8, 6, 4)
    assert shapes["concat_2"] == (8, 6, 2 + 6 + 8)
    assert shapes["channel_slice_5"] == (4, 3, 12)
    assert shapes["channel_slice_6"] == (95,)
    assert shapes["channel_slice_7"] == (7,)
    assert all(node.params.total == 0 for node in spec.model.nodes if node.kind == "channel_slice")
    report = verify.run_verify(spec, random_weights(spec, np.random.default_rng(0)), 1e-4)
    assert report.skipped == {}
    assert report.counts == {"keras": report.expected, "pytorch": report.expected}, report
    assert report.shape_mismatches == []
    assert len(report.comparisons) == 3
    assert all(c.max_abs <= 1e-5 for c in report.comparisons), report.comparisons


def test_a_slice_keeps_its_channels(tmp_path: Path) -> None:
    """channel_slice(1, 4) of six channels keeps channels 1, 2 and 3, in both scripts."""
    spec = checked_spec(
        "model s {\n  input 1x1x6\n  channel_slice(1, 4)\n  head { flatten() softmax() }\n}"
    )
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 1, 6) / 3
    kept = x.reshape(6)[1:4]
    expected = np.exp(kept) / np.exp(kept).sum()
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
    x = np.random.default_rng(4).standard_normal((2, 8, 6, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    actual = run_onnx(export(imported.spec, imported.tensors), x.transpose(0, 3, 1, 2).copy())
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_torch_chunk_split_and_slices_are_read_as_channel_slices() -> None:
    from tests.frameworks.import_models.slice_nets import split_net

    imported = import_model("tests.frameworks.import_models.slice_nets:split_net", (8, 8, 3))
    text = imported.text
    # chunk(2, 1): the two halves, as ShuffleNetV2's unit writes them.
    assert "channel_slice(0, 4" in text and "channel_slice(4, 8" in text, text
    # torch.split(x, [2, 3, 3], 1): three parts; [10, 4] with the second part unused: one.
    for part in ("(0, 2", "(2, 5", "(5, 8", "(0, 10"):
        assert f"channel_slice{part}" in text, text
    assert "channel_slice(10, 14" not in text
    # x[:, 1:4] and x[:, 5:] of a map, x[:, 3:10] of a vector.
    for part in ("(1, 4", "(5, 8", "(3, 10"):
        assert f"channel_slice{part}" in text, text
    assert text.count("concat {") == 3 and "channel_shuffle(2" in text, text
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        logits = split_net()(torch.from_numpy(x))
    expected = torch.softmax(logits, 1).numpy() if imported.notes else logits.numpy()
    actual = run_onnx(export(imported.spec, imported.tensors), x)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_an_empty_range_or_one_beyond_the_channels_is_located_at_stop() -> None:
    text = (
        "model m {\n  input 4x4x6\n  concat {\n    branch { channel_slice(3, 3) }\n"
        "    branch { channel_slice(2, 7) }\n  }\n  flatten()\n  channel_slice(0, 200)\n"
        "  dense(2, activation=softmax)\n}\n"
    )
    errors = compile_text(text, "m.cnn").diagnostics.errors
    found = sorted((e.span.line, e.span.column, e.code) for e in errors)
    assert found == [(4, 31, "E205"), (5, 31, "E205")], errors
    assert "keeps no channels" in errors[0].message and errors[0].hint
    assert "beyond the input's 6 channels" in errors[1].message
    assert errors[1].hint is not None and "at most 6" in errors[1].hint
    vector = "model v {\n  input 4x4x6\n  flatten()\n  channel_slice(90, 97)\n  softmax()\n}\n"
    (error,) = compile_text(vector, "v.cnn").diagnostics.errors
    assert (error.span.line, error.span.column, error.code) == (4, 21, "E205")
    assert "96 channels" in error.message


@pytest.mark.library
@pytest.mark.parametrize(
    ("factory", "slices", "shuffles"),
    [
        # Both halves of each of the 13 stride-1 units (x.chunk(2, dim=1)), then a shuffle.
        ("tv_shufflenet_v2_x0_5", 2 * 13, 16),
        # Each ghost module's torch.cat([x1, x2], 1)[:, :out_chs].
        ("timm_ghostnet_100", 32, 0),
    ],
)
def test_zoo_models_that_split_channels_import(factory: str, slices: int, shuffles: int) -> None:
    from tests.frameworks import zoo

    package = "timm" if factory.startswith("timm_") else "torchvision"
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    size = zoo.input_size(factory)
    imported = import_model(f"tests.frameworks.zoo:{factory}", size)
    model = zoo.build(factory)
    assert imported.spec.model.params.trainable == sum(p.numel() for p in model.parameters())
    kinds = [node.kind for node in imported.spec.model.nodes]
    assert kinds.count("channel_slice") == slices
    assert kinds.count("channel_shuffle") == shuffles
    x = np.random.default_rng(0).standard_normal((2, size[2], size[0], size[1]))
    x = x.astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    assert_computes_what_torch_does(imported, logits, x)
