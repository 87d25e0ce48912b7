"""`cnnspec import` of ONNX: PyTorch modules written for these tests (through
`package.module:factory`, which exports them inside the command), and every shipped spec
round-tripped through `cnnspec export`: the same layers, shapes and counts, and the same
outputs within 1e-4."""

import numpy as np
import pytest

from cnnspec.compiler import compile_file
from cnnspec.export import export, initial_weights
from cnnspec.importing import ImportFailure, import_model, import_network
from cnnspec.importing.onnx_file import network_from_model

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.frameworks

NETS = "tests.frameworks.import_models.torch_nets"
SPECS = sorted(
    __import__("pathlib").Path(__file__).resolve().parents[2].joinpath("specs").glob("*.cnn")
)
# Large networks round-trip at a small input, as `cnnspec export --image-size` would.
SMALL = {
    "pneumonia_vgg16": 64,
    "pneumonia_vgg16_imagenet": 64,
    "resnet50_transfer": 64,
    "mobilenet_v2_transfer": 64,
}


INFERENCE_IDENTITIES = ("dropout", "spatial_dropout", "stochastic_depth")


def _run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _imported_outputs(imported, x: np.ndarray) -> np.ndarray:
    return _run(export(imported.spec, imported.tensors), x)


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
    size = SMALL.get(path.stem)
    spec = compile_file(path, (size, size) if size else None).spec
    weights = _nontrivial(initial_weights(spec, 0))
    model = export(spec, weights, keep_batchnorms=True)
    imported = import_network(network_from_model(model, str(path)))
    # Dropout does nothing at inference, and an ONNX model holds no node for it.
    original = {n.name: n for n in spec.model.nodes if n.kind not in INFERENCE_IDENTITIES}
    back = {n.name: n for n in imported.spec.model.nodes}
    assert list(back) == list(original)
    for name, node in original.items():
        assert back[name].kind == node.kind, name
        assert back[name].output_shape == node.output_shape, name
        assert back[name].params == node.params, name
    h, w, c = spec.model.input_shape
    x = np.random.default_rng(1).standard_normal((2, c, h, w)).astype(np.float32)
    np.testing.assert_allclose(_imported_outputs(imported, x), _run(model, x), atol=1e-4)


def _nontrivial(weights: dict) -> dict:
    """Batchnorm statistics and biases away from their initial zeros and ones."""
    rng = np.random.default_rng(3)
    result = {}
    for key, value in weights.items():
        if key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif key.endswith(("running_mean", "bias")):
            value = rng.uniform(-0.5, 0.5, value.shape)
        result[key] = np.asarray(value, dtype=np.float32)
    return result
