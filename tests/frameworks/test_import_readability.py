"""The imported keras.applications ResNet50, VGG16 and MobileNetV2 read like the hand-written
library specs: at most 1.5x their lines (they are shorter or close), in fmt layout, with the
blocks, defines, repeats, residuals and defaults a person writes; and they count exactly what
Keras counts. Built from the models' configs: the writer needs no weights. torchvision's
MobileNetV2, EfficientNet-B0, MobileNetV3-Large and EfficientNetV2-S, whose names put every
layer under `features`, are written with defines of their repeated units all the same, and
compute what torchvision computes."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cnnspec.compiler import compile_text
from cnnspec.fmt import format_text
from cnnspec.importing import structure, writer
from cnnspec.importing.keras_file import network_from_config
from cnnspec.importing.network import fold_activations

pytestmark = pytest.mark.frameworks
keras = pytest.importorskip("keras")

LIBRARY = Path(__file__).resolve().parents[2] / "cnnspec" / "backbones"


def code_lines(text: str) -> list[str]:
    return [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def library_lines(file: str, model: str) -> int:
    """The library spec's lines for one model: its definitions and its model block."""
    parts = re.split(r"\n(?=(?:define|model) )", (LIBRARY / file).read_text())
    kept = [p for p in parts if p.startswith("define") or p.startswith(f"model {model} ")]
    return len(code_lines("\n".join(kept)))


def imported_text(application: str) -> tuple[str, object]:
    model = getattr(keras.applications, application)(weights=None)
    network = network_from_config(json.loads(model.to_json()), {}, application)
    fold_activations(network)
    text = writer.write(network, structure.nest(network))
    return format_text(text) or text, model


@pytest.mark.parametrize(
    ("application", "file", "model_name", "expected"),
    [
        (
            "ResNet50",
            "resnet.cnn",
            "resnet50",
            [
                "define",
                "repeat 2 {",
                "shortcut {",
                "residual {",
                "defaults batchnorm(epsilon=1.001e-5)",
            ],
        ),
        (
            "VGG16",
            "vgg16.cnn",
            "vgg16",
            ["defaults conv2d(padding=same, activation=relu)", "block_a(64, name=block1)"],
        ),
        (
            "MobileNetV2",
            "mobilenet_v2.cnn",
            "mobilenet_v2",
            ["define", "repeat", "residual {", "defaults batchnorm(momentum=0.999)"],
        ),
    ],
)
def test_imported_applications_read_like_the_library_specs(application, file, model_name, expected):
    text, model = imported_text(application)
    assert format_text(text) == text  # already in fmt layout
    ours, theirs = len(code_lines(text)), library_lines(file, model_name)
    assert ours <= 1.5 * theirs, (ours, theirs, text)
    for snippet in expected:
        assert snippet in text, snippet
    compiled = compile_text(text)
    assert compiled.ok, [d.message for d in compiled.diagnostics]
    params = compiled.spec.model.params
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    non_trainable = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    assert (params.trainable, params.non_trainable) == (trainable, non_trainable)


# torchvision's module paths (`features.N.M`) put every layer of the network under one
# prefix: the writer finds the repeated units inside it from their structure (issue 25).
# Each bound is the file `cnnspec import` writes, its two header lines included.
# MobileNetV3-Large's blocks differ in their activation (ReLU or hard swish) and in having a
# squeeze-and-excitation gate: one define with `if` on parameters (103 lines; issue 25: 120).
TORCHVISION = [
    pytest.param("tv_mobilenet_v2", 90, "inverted_residual(", id="mobilenet_v2"),
    pytest.param("tv_efficientnet_b0", 120, "mbconv(", id="efficientnet_b0"),
    pytest.param(
        "tv_mobilenet_v3_large",
        120,
        "inverted_residual(",
        id="mobilenet_v3_large",
        marks=pytest.mark.library,
    ),
    pytest.param(
        "tv_efficientnet_v2_s",
        250,
        "fused_mbconv(",
        id="efficientnet_v2_s",
        marks=pytest.mark.library,
    ),
]


@pytest.mark.parametrize(("factory", "bound", "call"), TORCHVISION)
def test_torchvision_imports_find_their_repeated_units(factory, bound, call):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from cnnspec.importing import import_model
    from tests.frameworks import zoo
    from tests.frameworks.import_models.cases import assert_computes_what_torch_does

    try:
        zoo.torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed")
    size = zoo.input_size(factory)
    # The import checks itself: the compiled spec has the model's layers, kinds and
    # connections, and a tensor of the right shape for every weight.
    imported = import_model(f"tests.frameworks.zoo:{factory}", size)
    text = imported.text
    assert format_text(text) == text
    assert len(text.splitlines()) + 2 <= bound, text
    assert "\ndefine " in "\n" + text and call in text, text
    assert "repeat " in text and "block features {" in text, text
    # A call is a block of its instance's name inside `features`: both freeze.
    defined = "|".join(re.findall(r"^define (\w+)\(", text, re.M))
    instance = re.search(rf"^ +(?:{defined})\([^\n\"]*name=(features_[0-9_]+)\)$", text, re.M)
    assert instance is not None, text
    for block in ("features", f"features.{instance.group(1)}"):
        frozen = compile_text(f"{text}train {{ freeze {block} }}\n")
        assert frozen.ok, [d.message for d in frozen.diagnostics]
    model = zoo.build(factory)
    params = imported.spec.model.params
    assert params.trainable == sum(p.numel() for p in model.parameters())
    x = np.random.default_rng(0).standard_normal((1, size[2], size[0], size[1]))
    x = x.astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    assert_computes_what_torch_does(imported, logits, x)
