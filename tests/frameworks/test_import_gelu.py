"""`cnnspec import` of nn.GELU (issue 25: torch's opset-20 Gelu), exact and tanh: the module
route exports at opset 20, where torch writes ONNX's Gelu op, and an ONNX file written at opset
20 reads alike; both give a gelu layer with its `approximate`, computing what the module
computes."""

import warnings

import numpy as np
import pytest

from cnnspec.export import export
from cnnspec.importing import import_model
from tests.frameworks.import_models.cases import run_onnx

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
nn = torch.nn

pytestmark = pytest.mark.frameworks

HERE = "tests.frameworks.test_import_gelu"
SIZE = (8, 8, 3)


def _net(approximate: str):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.GELU(approximate=approximate), nn.Flatten(), nn.Linear(144, 5)
    ).eval()


def exact_gelu():
    return _net("none")


def tanh_gelu():
    return _net("tanh")


@pytest.mark.parametrize(("factory", "approximate"), [("exact_gelu", False), ("tanh_gelu", True)])
def test_gelu_imports_as_one_layer_through_both_routes(factory, approximate, tmp_path):
    module = globals()[factory]()
    path = tmp_path / f"{factory}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, opset_version=20
        )
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(x)), 1).numpy()
    routes = {
        "module": import_model(f"{HERE}:{factory}", SIZE),
        "onnx file": import_model(str(path)),
    }
    for route, imported in routes.items():
        nodes = imported.spec.model.nodes
        assert [node.kind for node in nodes] == ["conv2d", "gelu", "flatten", "dense"], route
        assert nodes[1].layer.approximate is approximate, route
        outputs = run_onnx(export(imported.spec, imported.tensors), x)
        np.testing.assert_allclose(outputs, expected, atol=1e-5, err_msg=route)
