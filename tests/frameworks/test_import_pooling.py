"""`cnnspec import` of PyTorch's pooling options, through the module route and through an ONNX
file torch.onnx.export wrote: ceil_mode where it gives floor's sizes (squeezenet), a max
pooling padded (padding=, or ceil_mode's overhang: cspresnet50's stem after a leaky ReLU,
googlenet's after a ReLU) as one maxpool(padding=...), padded with -inf as torch pads it, an
average that counts its padding in (inception_v3) as zero_pad then a valid avgpool, and the
options cnnspec cannot express refused by node, with why."""

import warnings

import numpy as np
import pytest

from cnnspec.export import export
from cnnspec.importing import ImportFailure, import_model
from tests.frameworks.import_models.cases import run_onnx

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
nn = torch.nn

pytestmark = pytest.mark.frameworks

HERE = "tests.frameworks.test_import_pooling"


def _classifier(pool, conv_padding: int = 0, features: int = 4 * 6 * 6, relu: bool = False):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=conv_padding)
    return nn.Sequential(
        *([conv, nn.ReLU()] if relu else [conv]), pool, nn.Flatten(), nn.Linear(features, 3)
    ).eval()


# The factories the module route imports (HERE:name), with the input size each is tried at.
def ceil_unchanged():  # 15 -> conv 13 -> ceil and floor both 6
    return _classifier(nn.MaxPool2d(3, 2, ceil_mode=True))


def ceil_changes():  # 14 -> conv 12 -> ceil 6, floor 5
    return _classifier(nn.MaxPool2d(3, 2, ceil_mode=True))


def max_padded():  # torch's padding=1, of values that may be negative: -inf, not zeros
    return _classifier(nn.MaxPool2d(3, 2, padding=1))  # 14 -> conv 12 -> 6; `same` pads (0, 1)


def ceil_changes_after_relu():  # googlenet's: as ceil_changes, of values >= 0
    return _classifier(nn.MaxPool2d(3, 2, ceil_mode=True), relu=True)


def avg_counting_pads():  # inception_v3's branch pool
    return _classifier(nn.AvgPool2d(3, 1, padding=1, count_include_pad=True), 1, features=4 * 6 * 6)


def avg_same_pads():  # pads that are Keras's `same` for a 3x3 window, stride 1
    return _classifier(
        nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), 1, features=4 * 6 * 6
    )


def avg_excluding_pads():  # stride 2 on 8x8: `same` would pad (0, 1), these pad (1, 1)
    return _classifier(
        nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), 1, features=4 * 4 * 4
    )


SIZES = {
    "ceil_unchanged": (15, 15, 3),
    "ceil_changes": (14, 14, 3),
    "max_padded": (14, 14, 3),
    "ceil_changes_after_relu": (14, 14, 3),
    "avg_counting_pads": (6, 6, 3),
    "avg_same_pads": (6, 6, 3),
    "avg_excluding_pads": (8, 8, 3),
}


def _onnx_file(factory: str, folder):
    """The module's ONNX file as a user exports it (torch's own graph name, main_graph)."""
    height, width, channels = SIZES[factory]
    path = folder / f"{factory}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            globals()[factory](),
            (torch.zeros(1, channels, height, width),),
            str(path),
            dynamo=False,
            opset_version=18,
        )
    return path


def _routes(factory: str, folder) -> dict[str, object]:
    return {
        "module": import_model(f"{HERE}:{factory}", SIZES[factory]),
        "onnx file": import_model(str(_onnx_file(factory, folder))),
    }


@pytest.mark.parametrize(
    ("factory", "kinds"),
    [
        ("ceil_unchanged", ["conv2d", "maxpool", "flatten", "dense"]),
        ("ceil_changes", ["conv2d", "maxpool", "flatten", "dense"]),
        ("max_padded", ["conv2d", "maxpool", "flatten", "dense"]),
        ("ceil_changes_after_relu", ["conv2d", "relu", "maxpool", "flatten", "dense"]),
        ("avg_counting_pads", ["conv2d", "zero_pad", "avgpool", "flatten", "dense"]),
        ("avg_same_pads", ["conv2d", "avgpool", "flatten", "dense"]),
    ],
)
def test_pooling_imports_exactly_through_both_routes(factory, kinds, tmp_path):
    height, width, channels = SIZES[factory]
    x = np.random.default_rng(0).standard_normal((2, channels, height, width), dtype=np.float32)
    with torch.no_grad():
        expected = torch.softmax(globals()[factory]()(torch.from_numpy(x)), 1).numpy()
    for route, imported in _routes(factory, tmp_path).items():
        nodes = imported.spec.model.nodes
        assert [node.kind for node in nodes] == kinds, route
        pools = [node for node in nodes if node.kind in ("maxpool", "avgpool")]
        padding = {
            "avg_same_pads": "same",
            "ceil_changes": ((0, 1), (0, 1)),  # the last window's overhang, with -inf
            "ceil_changes_after_relu": ((0, 1), (0, 1)),
            "max_padded": ((1, 1), (1, 1)),
        }.get(factory, "valid")
        assert pools[0].layer.padding == padding, (route, imported.text)
        outputs = run_onnx(export(imported.spec, imported.tensors), x)
        np.testing.assert_allclose(outputs, expected, atol=1e-5, err_msg=route)


@pytest.mark.parametrize(
    ("factory", "what", "why"),
    [
        (
            "avg_excluding_pads",
            "(AveragePool): AveragePool pads [1, 1, 1, 1] with count_include_pad=0",
            "not `same` for the 8x8 input",
        ),
    ],
)
def test_pooling_cnnspec_cannot_express_is_refused_at_its_node(factory, what, why, tmp_path):
    for route in ("module", "onnx file"):
        with pytest.raises(ImportFailure) as failure:
            if route == "module":
                import_model(f"{HERE}:{factory}", SIZES[factory])
            else:
                import_model(str(_onnx_file(factory, tmp_path)))
        lines = [str(gap) for gap in failure.value.gaps]
        assert len(lines) == 1, (route, lines)
        assert lines[0].startswith("node '/1/"), (route, lines)
        assert what in lines[0] and why in lines[0], (route, lines)


def test_an_onnx_file_torch_wrote_is_named_after_the_file(tmp_path):
    path = _onnx_file("ceil_unchanged", tmp_path)
    renamed = path.rename(tmp_path / "3-stage net.onnx")  # made an identifier
    imported = import_model(str(renamed))
    assert imported.network.name == "m_3_stage_net"
    assert "main_graph" not in imported.text


class _ShapePad(nn.Module):
    """Pads height and width to multiples of 4 by amounts computed from the shape, as Swin
    pads its windows (the zoo survey's traceback: the Pad's amounts were not constants)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv(x)
        pad = (4 - x.shape[-1] % 4) % 4
        x = torch.nn.functional.pad(x, (0, pad, 0, pad))
        return self.fc(x.mean((2, 3)))


def shape_pad():
    torch.manual_seed(0)
    return _ShapePad().eval()


def test_padding_computed_from_the_shape_folds_to_its_amount():
    imported = import_model(f"{HERE}:shape_pad", (9, 9, 3))
    assert "zero_pad" in [node.kind for node in imported.spec.model.nodes]
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 9), dtype=np.float32)
    with torch.no_grad():
        expected = torch.softmax(shape_pad()(torch.from_numpy(x)), 1).numpy()
    outputs = run_onnx(export(imported.spec, imported.tensors), x)
    np.testing.assert_allclose(outputs, expected, atol=1e-5)
