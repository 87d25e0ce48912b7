"""MobileNetV3Small/Large and MobileNet (V1) from cnnspec's library equal keras.applications
layer by layer (every layer's name, shape and size, and the total, trainable and non-trainable
counts), agree across Keras, PyTorch and onnxruntime, load keras.applications' weight files by
layer name, and freeze by their block names.

keras.applications leaves some parameter-free layers unnamed: MobileNetV3's Rescaling, its
ReLUs and hard_swish Activations (and the ReLU(6) of each squeeze-and-excitation gate), the
classifiers' GlobalAveragePooling2D. The library names them as a fresh Keras session does
(rescaling; re_lu, re_lu_1 ...; activation, activation_1 ...; global_average_pooling2d), and
keras_application() clears the session before each build, so the strict name check applies.
Keras's gate is ReLU(6)(x + 3) * (1 / 6) where only the ReLU is a layer; the library's gate is
one hard_sigmoid named as that ReLU (same shape, no weights; assert_verifies checks the
values). MobileNetV3's classifier convolution is named `logits`, like the generated PyTorch Net's
own method: the PyTorch backend reads such a module as self._modules["logits"]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")


from cnnspec import verify
from tests.campaign import random_weights
from tests.frameworks.backbone_check import (
    assert_equals_keras_applications,
    assert_freezes_by_block,
    assert_verifies,
    assert_weights_load_by_name,
)
from tests.frameworks.scripts import checked_spec

pytestmark = pytest.mark.frameworks

# (backbone, input size, include_top, pooling): 32 is the smallest input keras.applications
# accepts; at 56 a stride-2 block meets an odd size (7x7: correct_pad pads both sides, for the
# 5x5 kernels of Small and the 3x3 of Large), at 33 MobileNet's fixed one-pixel pads follow odd
# sizes. The ImageNet classifiers at 224.
CASES = [
    ("mobilenet_v3_small", 224, True, None),
    ("mobilenet_v3_small", 32, False, None),
    ("mobilenet_v3_small", 56, False, "avg"),
    ("mobilenet_v3_large", 224, True, None),
    ("mobilenet_v3_large", 32, False, None),
    ("mobilenet_v3_large", 56, False, "max"),
    ("mobilenet", 224, True, None),
    ("mobilenet", 32, False, None),
    ("mobilenet", 33, False, "avg"),
]


@pytest.mark.parametrize(("name", "size", "include_top", "pooling"), CASES)
def test_backbone_equals_keras_applications(
    name: str, size: int, include_top: bool, pooling: str | None
) -> None:
    assert_equals_keras_applications(name, size, include_top, pooling)


# MobileNetV3Small with its classifier (hard_swish head, dropout, the `logits` convolution,
# flatten, softmax); MobileNet at an odd size (its fixed bottom-right pads).
@pytest.mark.parametrize(
    ("name", "size", "include_top"), [("mobilenet_v3_small", 224, True), ("mobilenet", 33, False)]
)
def test_backbone_verifies_across_frameworks(name: str, size: int, include_top: bool) -> None:
    assert_verifies(name, size, include_top)


@pytest.mark.parametrize(
    ("name", "block"), [("mobilenet_v3_small", "expanded_conv_3"), ("mobilenet", "block_12")]
)
def test_backbone_freezes_by_block(name: str, block: str) -> None:
    assert_freezes_by_block(name, 32, block)


def test_classifier_weights_load_by_name_and_reproduce_keras_applications(tmp_path: Path) -> None:
    """A weight file in keras.applications' layout (what weights=imagenet downloads for
    include_top=true) loads by layer name into both generated scripts, and both give
    MobileNetV3Small's own outputs on 0-255 pixels (its Rescaling is part of the network)."""
    assert_weights_load_by_name("mobilenet_v3_small", 224, tmp_path, include_top=True, atol=1e-6)


def test_layers_named_like_the_pytorch_nets_methods_still_run() -> None:
    """`self.logits` (and `self.forward`, `self.train` ...) would be the method, not the layer."""
    spec = checked_spec(
        "model m { input 8x8x3  conv2d(4, name=logits)  batchnorm(name=train)"
        "  global_avg_pool()  dense(3, activation=softmax, name=forward) }\ndata { labels sparse }"
    )
    weights = random_weights(spec, np.random.default_rng(0))
    report = verify.run_verify(spec, weights, 1e-4, batch=2)
    assert report.skipped == {}, report.skipped
    assert report.passed(1e-4), [(c.first, c.second, c.max_abs) for c in report.comparisons]
