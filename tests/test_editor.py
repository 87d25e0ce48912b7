"""What editors show, computed without the protocol: cnnspec.editor on whole, partial and
broken specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnspec import editor
from cnnspec.backbones import BACKBONES
from cnnspec.compiler import compile_text
from tests.conftest import ROOT, SPECS


def labels(text: str) -> list[str]:
    return [c.label for c in editor.completions(text, len(text))]


@pytest.mark.parametrize(
    "text",
    [
        "model m { input 8x8x3  # a comment about conv",
        'data { source directory("chest x',
        "model m {\n  conv2d(8)  # what about ",
    ],
)
def test_no_completion_inside_comments_or_strings(text: str) -> None:
    assert labels(text) == []


def test_completion_follows_the_section_it_is_in() -> None:
    # A section opened after other items on the same line is still the one the cursor is in.
    phase = labels("train { seed 1  phase x { ")
    assert "early_stopping" in phase and "seed" not in phase and "phase" not in phase
    assert "shortcut" in labels("model m { input 8x8x3  residual r { conv2d(4) ")
    assert "shortcut" not in labels("model m { input 8x8x3  block b { ")
    assert labels('data { source directory("x", ') == [
        "path=",
        "size=",
        "grayscale_to_rgb=",
        "color=",
        "classes=",
    ]
    assert labels("model m {\n  backbone vgg16(weights=") == ["imagenet", "none"]
    backbones = labels("model m {\n  backbone ")
    assert backbones == list(BACKBONES)
    assert {"vgg16", "resnet50", "resnet152", "mobilenet_v2"} <= set(backbones)
    assert labels("train {\n  optimizer ") == ["adam", "adamw", "sgd", "rmsprop"]
    assert labels("model m { conv2d(8, activation=leaky_relu(")[:1] == ["alpha="]


def test_hover_and_hints_on_a_backbone_spec() -> None:
    compilation = compile_text((ROOT / "specs" / "pneumonia_vgg16.cnn").read_text())
    text = compilation.source.text
    hover = editor.hover(compilation, text.index("vgg16("))
    assert hover is not None and "**backbone vgg16**: 18 layers" in hover
    assert "params: 14,714,688" in hover
    hints = dict(editor.inlay_hints(compilation))
    line_end = text.index("vgg16(weights=imagenet)") + len("vgg16(weights=imagenet)")
    assert hints[line_end] == " → (7, 7, 512) · 14,714,688 params"
    freeze = text.index("unfreeze backbone.block5") + len("unfreeze back")
    (target,) = editor.definition(compilation, freeze)
    assert text[target.start : target.end] == "backbone"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_offset_of_a_broken_spec_answers(path: Path) -> None:
    """Every question at every offset of a spec cut short gets an answer, not an exception.
    Cut mid-section, the text does not parse: completion, which reads the text, still helps.
    Cut between sections, the model is still described: hovers and inlay hints."""
    text = path.read_text()
    mid = text[: len(text) * 2 // 3]
    between = text[: text.rindex("\n}\n") + 3]  # up to the end of the last section
    for cut in (mid, between):
        compilation = compile_text(cut)
        hints = editor.inlay_hints(compilation)
        editor.outline(compilation)
        hovers = completions = 0
        for offset in range(0, len(cut) + 1, 7):
            hovers += editor.hover(compilation, offset) is not None
            editor.definition(compilation, offset)
            completions += bool(editor.completions(cut, offset))
        assert completions
        if cut is between:
            assert hovers and hints and editor.outline(compilation)


def test_metrics_complete_with_the_metrics_and_their_arguments() -> None:
    """metrics(...) takes metrics, bare or called, not keyword arguments: the names come first,
    then each one's own arguments and their values (in a phase too)."""
    head = "model m { input 8x8x1  flatten()  dense(10, activation=softmax) }\n"
    assert labels(head + "train { metrics(acc") == [
        "accuracy",
        "auc",
        "precision",
        "recall",
        "f1",
        "top_k_accuracy",
    ]
    assert labels(head + "train { metrics(accuracy, top_k_accuracy(") == ["k="]
    assert labels(head + "train { phase a { metrics(f1(average=") == ["macro", "micro", "weighted"]


def test_from_goes_to_the_value_it_reads() -> None:
    """Go to definition on `from NAME` lands on what it reads: a layer (relative to the call
    it is written in), a named block, or the model's input."""
    text = (
        "define cell(p) {\n"
        "  conv2d(8, 1, name=h)\n"
        "  concat { branch { from p } branch { from h } }\n"
        "}\n"
        "model m {\n"
        "  input 8x8x1\n"
        "  block stem { conv2d(8, 3, padding=same) }\n"
        "  cell(input, name=c1)\n"
        "  concat { branch { from stem } branch { } }\n"
        "  head { flatten()  dense(10, activation=softmax) }\n"
        "}\n"
    )
    compilation = compile_text(text)
    assert not compilation.diagnostics.has_errors, list(compilation.diagnostics)

    def target(marker: str) -> str:
        (span,) = editor.definition(compilation, text.index(marker) + len("from "))
        return text[span.start : span.end]

    assert target("from h") == "conv2d(8, 1, name=h)"
    # Hover says what it reads, as written in the last call of the define.
    hover = editor.hover(compilation, text.index("from stem") + len("from s"))
    assert hover == "**from stem**: the output of block stem, (8, 8, 8)"
    hover = editor.hover(compilation, text.index("from h") + len("from "))
    assert hover == "**from c1_h**: the output of c1_h (conv2d), (8, 8, 8)"
    assert target("from stem") == "stem"
    assert target("from p") == "8x8x1"
