"""Backbones as the checker sees them, without any framework: the library networks' counts,
their isolation from the user's defaults, and their failures."""

from __future__ import annotations

import pytest

from cnnspec.backbones import BACKBONES
from cnnspec.compiler import Compilation, compile_text

# keras.applications' count_params() without the classifier (tests/frameworks/test_backbones.py
# builds them in Keras; these pin the same numbers where no framework is installed).
NOTOP = {
    # torchvision's counts less the classifier, with position embeddings for 64x64 (17 or 5
    # tokens instead of 197 or 50).
    "vit_b16": 86_567_656 - 769_000 - 180 * 768,
    "vit_b32": 88_224_232 - 769_000 - 45 * 768,
    "vit_l16": 304_326_632 - 1_025_000 - 180 * 1024,
    "vit_l32": 306_535_400 - 1_025_000 - 45 * 1024,
    "vgg16": 14_714_688,
    "vgg19": 20_024_384,
    "resnet50": 23_587_712,
    "resnet101": 42_658_176,
    "resnet152": 58_370_944,
    "resnet50_v2": 23_564_800,
    "resnet101_v2": 42_626_560,
    "resnet152_v2": 58_331_648,
    "densenet121": 7_037_504,
    "densenet169": 12_642_880,
    "densenet201": 18_321_984,
    "efficientnet_b0": 4_049_571,
    "efficientnet_b1": 6_575_239,
    "efficientnet_b2": 7_768_569,
    "efficientnet_b3": 10_783_535,
    "efficientnet_b4": 17_673_823,
    "efficientnet_b5": 28_513_527,
    "efficientnet_b6": 40_960_143,
    "efficientnet_b7": 64_097_687,
    "efficientnet_v2_b0": 5_919_312,
    "efficientnet_v2_b1": 6_931_124,
    "efficientnet_v2_b2": 8_769_374,
    "efficientnet_v2_b3": 12_930_622,
    "efficientnet_v2_s": 20_331_360,
    "efficientnet_v2_m": 53_150_388,
    "efficientnet_v2_l": 117_746_848,
    "convnext_tiny": 27_820_128,
    "convnext_small": 49_454_688,
    "convnext_base": 87_566_464,
    "convnext_large": 196_230_336,
    "convnext_xlarge": 348_147_968,
    "mobilenet_v3_small": 939_120,
    "mobilenet_v3_large": 2_996_352,
    "mobilenet": 3_228_864,
    "xception": 20_861_480,
    "inception_v3": 21_802_784,
    "inception_resnet_v2": 54_336_736,
    "nasnet_mobile": 4_269_716,
    "nasnet_large": 84_916_818,
    "mobilenet_v2": 2_257_984,
}


def graph(body: str, size: int = 64) -> Compilation:
    compilation = compile_text(f"model m {{\n  input {size}x{size}x3\n{body}\n}}\n")
    assert compilation.spec is not None
    return compilation


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_library_counts_without_the_classifier(name: str) -> None:
    # 75x75: the smallest input every CNN family takes (Inception's stem needs it); a ViT
    # takes multiples of its patch.
    size = 64 if name.startswith("vit_") else 75
    compilation = graph(
        f"  backbone {name}(weights=none, pooling=avg)\n  dense(2, activation=softmax)", size=size
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
