"""Backbones as the checker sees them, without any framework: the library networks' counts,
their isolation from the user's defaults, and their failures."""

from __future__ import annotations

import pytest

from cnnspec.backbones import BACKBONES
from cnnspec.compiler import Compilation, compile_text

# keras.applications' count_params() without the classifier (tests/frameworks/test_backbones.py
# builds them in Keras; these pin the same numbers where no framework is installed).
NOTOP = {
    "vgg16": 14_714_688,
    "vgg19": 20_024_384,
    "resnet50": 23_587_712,
    "resnet101": 42_658_176,
    "resnet152": 58_370_944,
    "mobilenet_v2": 2_257_984,
}


def graph(body: str, size: int = 64) -> Compilation:
    compilation = compile_text(f"model m {{\n  input {size}x{size}x3\n{body}\n}}\n")
    assert compilation.spec is not None
    return compilation


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_library_counts_without_the_classifier(name: str) -> None:
    compilation = graph(
        f"  backbone {name}(weights=none, pooling=avg)\n  dense(2, activation=softmax)"
    )
    assert not compilation.diagnostics.has_errors
    model = compilation.spec.model  # type: ignore[union-attr]
    backbone = [n for n in model.nodes if n.name in model.backbone.nodes]  # type: ignore[union-attr]
    assert sum(n.params.total for n in backbone) == NOTOP[name]
    assert all(n.scope[0] == "backbone" for n in backbone)
    assert len({n.name for n in model.nodes}) == len(model.nodes)


def test_user_defaults_do_not_reach_into_the_backbone() -> None:
    compilation = graph(
        "  defaults conv2d(activation=relu, padding=same, use_bias=false, l2=1e-4)\n"
        "  backbone resnet50(weights=none, pooling=avg)\n  dense(2, activation=softmax)"
    )
    assert not compilation.diagnostics.has_errors
    conv = compilation.spec.model.node("conv1_conv")  # type: ignore[union-attr]
    assert conv.output_shape == (32, 32, 64)  # valid padding after conv1_pad, as in Keras
    assert conv.params.total == 7 * 7 * 3 * 64 + 64  # with its bias
    assert conv.layer.activation is None and conv.layer.l2 == 0.0  # type: ignore[attr-defined]


def test_a_bare_backbone_name_takes_the_defaults() -> None:
    compilation = graph(
        "  backbone mobilenet_v2\n  global_avg_pool()\n  dense(2, activation=softmax)"
    )
    assert not compilation.diagnostics.has_errors
    assert compilation.spec.model.backbone.args.weights == "imagenet"  # type: ignore[union-attr]


def test_a_failed_backbone_leaves_the_shape_unknown() -> None:
    """No warning or error after a broken backbone line judges a shape that was guessed."""
    compilation = graph("  backbone vgg61(pooling=avg)\n  dense(2, activation=softmax)")
    assert [d.code for d in compilation.diagnostics] == ["E110"]
