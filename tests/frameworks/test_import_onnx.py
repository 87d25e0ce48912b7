"""`cnnspec import` of ONNX: PyTorch modules written for these tests (through
`package.module:factory`, which exports them inside the command), and every shipped spec
round-tripped through `cnnspec export`: the same layers, shapes and counts, and the same
outputs within 1e-4."""

import numpy as np
import pytest

from cnnspec.compiler import compile_file
from cnnspec.export import export
from cnnspec.importing import ImportFailure, import_model, import_network
from cnnspec.importing.onnx_file import network_from_model
from tests.frameworks.import_models.cases import (
    SPECS,
    assert_same_layers,
    image_size,
    run_onnx,
    trained_like,
)

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.frameworks

NETS = "tests.frameworks.import_models.torch_nets"


def _imported_outputs(imported, x: np.ndarray) -> np.ndarray:
    return run_onnx(export(imported.spec, imported.tensors), x)


@pytest.mark.parametrize(
    ("factory", "size"),
    [("resnet18", (64, 64, 3)), ("mobilenet_v2ish", (48, 48, 3)), ("pool_flatten", (29, 31, 3))],
)
def test_pytorch_module_imports_with_its_counts_and_outputs(factory, size):
    imported = import_model(f"{NETS}:{factory}", size)
    model = getattr(__import__(NETS, fromlist=[factory]), factory)()
    params = imported.spec.model.params
    assert params.trainable == sum(p.numel() for p in model.parameters())
    running = sum(
        b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")
    )
    assert params.non_trainable == running
    x = np.random.default_rng(0).standard_normal((2, size[2], size[0], size[1]))
    x = x.astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    last = imported.spec.model.output_node
    activation = getattr(last.layer, "activation", None)
    if activation is not None and activation.kind == "softmax" and expected.shape[1] > 1:
        # The source ends in logits; the spec applies softmax (and says so in a note).
        assert imported.notes
        expected = torch.softmax(torch.from_numpy(expected), 1).numpy()
    np.testing.assert_allclose(_imported_outputs(imported, x), expected, atol=1e-4)


def test_resnet18_reads_as_a_person_would_write_it():
    imported = import_model(f"{NETS}:resnet18", (64, 64, 3))
    text = imported.text
    # Blocks named after the module paths, the repeated basic block a define, and the
    # residual adds residuals with the downsampling path as their shortcut.
    assert "define layer(" in text or "define layer_a(" in text
    assert "shortcut {" in text and "residual {" in text
    assert "name=layer1_0" in text or '"layer1_" + str(index' in text
    assert "defaults batchnorm(epsilon=1e-5, momentum=0.9)" in text
    assert len(text.splitlines()) < 60


def test_an_lstm_is_reported_by_node_and_nothing_is_imported():
    with pytest.raises(ImportFailure) as failure:
        import_model(f"{NETS}:with_lstm", (8, 8, 3))
    lines = [str(gap) for gap in failure.value.gaps]
    assert any("LSTM" in line and "/lstm/" in line for line in lines), lines


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_round_trips_through_onnx(path):
    spec = compile_file(path, image_size(path)).spec
    model = export(spec, trained_like(spec), keep_batchnorms=True)
    imported = import_network(network_from_model(model, str(path)))
    assert_same_layers(spec.model, imported.spec.model)
    h, w, c = spec.model.input_shape
    x = np.random.default_rng(1).standard_normal((2, c, h, w)).astype(np.float32)
    np.testing.assert_allclose(_imported_outputs(imported, x), run_onnx(model, x), atol=1e-4)
