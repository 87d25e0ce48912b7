"""Every library backbone round-trips through `cnnspec export` and `cnnspec import`: the same
layers (names, kinds, shapes, counts) and outputs within 1e-4. One size of each family runs in
`make test`; the other sizes under the `library` marker."""

import numpy as np
import pytest

from cnnspec.backbones import BACKBONES
from cnnspec.compiler import compile_text
from cnnspec.export import export
from cnnspec.importing import import_network
from cnnspec.importing.onnx_file import network_from_model
from tests.frameworks.import_models.cases import assert_same_layers, run_onnx, trained_like

pytestmark = pytest.mark.frameworks
ort = pytest.importorskip("onnxruntime")

# One backbone per pattern the reader must see (the rest run under `library`): rescaling,
# normalization, swish and the squeeze-excite reshape; layer norm, dense on maps, gelu and
# layer scale; hard-swish and an offset rescaling; concatenation; separable convolutions.
REQUIRED = {"efficientnet_b0", "convnext_tiny", "mobilenet_v3_small", "densenet121", "xception"}
SIZES = {"inception_v3": 75, "inception_resnet_v2": 75, "xception": 71}


def _cases():
    for name in sorted(BACKBONES):
        marks = [] if name in REQUIRED else [pytest.mark.library]
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_cases()))
def test_library_backbone_round_trips_through_onnx(name):
    size = SIZES.get(name, 32)
    text = (
        f"model t {{ input {size}x{size}x3  backbone {name}(weights=none, pooling=avg)"
        "  dense(3, activation=softmax) }"
    )
    compilation = compile_text(text)
    assert compilation.ok, [d.message for d in compilation.diagnostics]
    spec = compilation.spec
    model = export(spec, trained_like(spec), keep_batchnorms=True)
    imported = import_network(network_from_model(model, name))
    assert_same_layers(spec.model, imported.spec.model)
    x = np.random.default_rng(1).standard_normal((2, 3, size, size)).astype(np.float32)
    np.testing.assert_allclose(
        run_onnx(export(imported.spec, imported.tensors), x), run_onnx(model, x), atol=1e-4
    )
