"""The imported keras.applications ResNet50, VGG16 and MobileNetV2 read like the hand-written
library specs: at most 1.5x their lines (they are shorter or close), in fmt layout, with the
blocks, defines, repeats, residuals and defaults a person writes; and they count exactly what
Keras counts. Built from the models' configs: the writer needs no weights."""

import json
import re
from pathlib import Path

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
