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
    [
        ("resnet18", (64, 64, 3)),
        ("mobilenet_v2ish", (48, 48, 3)),
        ("pool_flatten", (29, 31, 3)),
        ("cells", (16, 16, 3)),  # values used past their joins: read with `from`
    ],
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


SMALL_NETS = """\
import torch
from torch import nn

from first_hour_blocks import block


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(block(3, 4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
"""


@pytest.fixture
def nets_in_a_folder(tmp_path, monkeypatch):
    """tmp_path/models/first_hour_nets.py, which imports a module beside it; sys.path and
    sys.modules as they were afterwards."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "first_hour_nets.py").write_text(SMALL_NETS)
    (folder / "first_hour_blocks.py").write_text(
        "from torch import nn\n\n\ndef block(a, b):\n"
        "    return nn.Sequential(nn.Conv2d(a, b, 3), nn.ReLU())\n"
    )
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    monkeypatch.chdir(tmp_path)
    yield folder
    for name in ("first_hour_nets", "first_hour_blocks"):
        __import__("sys").modules.pop(name, None)


def test_a_factory_in_a_python_file_imports_by_its_path_as_typed(
    nets_in_a_folder, capsys, monkeypatch
):
    from cnnspec.cli import main

    # Trainable parameters by hand: conv 3*3*3*4 + 4 = 112, linear 144*3 + 3 = 435.
    absolute = nets_in_a_folder / "first_hour_nets.py"
    top = nets_in_a_folder.parent
    for n, (folder, target) in enumerate(
        [
            (top, "models/first_hour_nets.py:small_net"),
            (top, f"{absolute}:small_net"),
            (nets_in_a_folder, "first_hour_nets:small_net"),
        ],
        1,
    ):
        monkeypatch.chdir(folder)
        out = top / f"out{n}.cnn"
        with pytest.raises(SystemExit) as exit:
            main(["import", target, "--input-size", "8x8x3", "-o", str(out)])
        captured = capsys.readouterr()
        assert exit.value.code == 0, captured.err
        assert f"wrote {out} (" in captured.out and "547 parameters" in captured.out
        assert f"from {target}\n" in out.read_text()
