"""The crop and erasing entries without a framework: their defaults are torchvision's, their
bounds are located errors, the checker's E316 and E317 stop where the setting is possible, and
the scripts call each step with the spec's values."""

from __future__ import annotations

import pytest

from cnnspec.augment.crops import RandomCrop, RandomErasing, RandomResizedCrop
from cnnspec.backends import backend
from cnnspec.compiler import compile_text


def spec(augment: str) -> str:
    return f"""\
model crops {{
  input 8x8x1
  flatten()
  dense(10, activation=softmax)
}}
data {{ source digits  rescale 1/16  labels sparse }}
augment {{ {augment} }}
train {{ epochs 1 }}
"""


def codes(augment: str) -> list[tuple[str, str]]:
    """Each diagnostic's code and the text it points at."""
    text = spec(augment)
    compilation = compile_text(text, "t.cnn")
    return [
        (d.code, text[d.span.start : d.span.end] if d.span else "") for d in compilation.diagnostics
    ]


def test_defaults_are_torchvisions() -> None:
    crop = RandomCrop.model_validate({})
    assert (crop.padding, crop.fill, crop.value) == (4, "constant", 0.0)
    resized = RandomResizedCrop.model_validate({})
    assert resized.scale == (0.08, 1.0) and resized.ratio == (3 / 4, 4 / 3)
    erasing = RandomErasing.model_validate({})
    assert (erasing.p, erasing.scale, erasing.ratio, erasing.value) == (
        0.5,
        (0.02, 0.33),
        (0.3, 3.3),
        0.0,
    )


def test_a_spec_writes_ranges_as_tuples_of_expressions() -> None:
    compilation = compile_text(
        spec("random_resized_crop(scale=(0.25, 1), ratio=(3/4, 4/3))"), "t.cnn"
    )
    assert compilation.ok and compilation.spec is not None
    step = compilation.spec.augment.get("random_resized_crop")
    assert isinstance(step, RandomResizedCrop)
    assert step.scale == (0.25, 1.0) and step.ratio == (0.75, 4 / 3)


@pytest.mark.parametrize(
    ("augment", "expected"),
    [
        ("random_crop(0)", [("E113", "0")]),
        ("random_crop(4, fill=symmetric)", [("E113", "symmetric")]),
        ("random_resized_crop(scale=(0, 1))", [("E113", "(0, 1)")]),
        ("random_resized_crop(scale=(0.5, 1.5))", [("E113", "(0.5, 1.5)")]),
        ("random_resized_crop(ratio=(2, 1))", [("E113", "(2, 1)")]),
        ("random_resized_crop(ratio=(0, 1))", [("E113", "(0, 1)")]),
        ("random_resized_crop(scale=(0.5,))", [("E113", "(0.5,)")]),
        ("random_erasing(p=1.5)", [("E113", "1.5")]),
        ("random_erasing(scale=(0.3, 0.1))", [("E113", "(0.3, 0.1)")]),
        # A reflection needs pixels to mirror: 7 for an 8x8 image, not 8.
        ("random_crop(8, fill=reflect)", [("E316", "8")]),
        ("random_crop(7, fill=reflect)", []),
        ("random_crop(12, fill=edge)", []),
        ("random_crop(12)", []),
        # The pixels are 0 to 1 here (rescale 1/16 of the digits' 0 to 16).
        ("random_crop(2, value=255)", [("E317", "255")]),
        ("random_crop(2, fill=edge, value=255)", []),
        ("random_crop(2, value=1)", []),
        ("random_erasing(value=-0.5)", [("E317", "-0.5")]),
        ("random_erasing(value=0.5)", []),
    ],
)
def test_impossible_settings_are_located_errors(
    augment: str, expected: list[tuple[str, str]]
) -> None:
    assert codes(augment) == expected


def test_the_reflection_is_checked_at_the_models_input_size() -> None:
    text = spec("random_crop(31, fill=reflect)").replace("8x8x1", "32x32x3")
    text = text.replace("source digits  rescale 1/16", "source cifar10  rescale 1/255")
    assert compile_text(text, "t.cnn").ok
    wider = compile_text(text.replace("random_crop(31", "random_crop(32"), "t.cnn")
    assert [d.code for d in wider.diagnostics] == ["E316"]


def test_both_scripts_call_each_step_with_the_specs_values() -> None:
    text = spec(
        "random_crop(3, fill=edge)  random_resized_crop(scale=(0.25, 1))  "
        "random_erasing(0.25, value=0.5)"
    )
    compilation = compile_text(text, "t.cnn")
    assert compilation.spec is not None
    keras = backend("keras").emit(compilation.spec, "t.cnn")
    for call in (
        'PaddedRandomCrop(3, "edge", 0.0, seed=seed)',
        "ResizedRandomCrop((0.25, 1.0), (0.75, 1.3333333333333333), seed=seed + 1)",
        "RandomRectangleErasing(0.25, (0.02, 0.33), (0.3, 3.3), 0.5, seed=seed + 2)",
        "class PaddedRandomCrop(layers.Layer):",
        "def draw_random_resized_crop(seed_generator, images, scale, ratio):",
    ):
        assert call in keras, call
    torch = backend("pytorch").emit(compilation.spec, "t.cnn")
    augment = torch[torch.index("def augment(") :]
    for call in (
        'images = random_crop(images, generator, 3, "edge", 0.0)',
        "images = random_erasing(images, generator, 0.25, (0.02, 0.33), (0.3, 3.3), 0.5)",
    ):
        assert call in augment, call
    assert "def draw_random_erasing(generator, images, p, scale, ratio):" in torch
    # Each shared definition once.
    assert torch.count("def box_tries(") == keras.count("def box_tries(") == 1
