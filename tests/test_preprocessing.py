"""Input preprocessing: keras.applications' conventions by name, implied by ImageNet weights,
and a warning (W308) when a spec feeds pretrained weights something else."""

from __future__ import annotations

import numpy as np
import pytest

from cnnspec.backbones import BACKBONES, PREPROCESSING
from cnnspec.compiler import compile_text
from cnnspec.preprocessing import MODES
from tests.conftest import ROOT


def _compile(data: str, backbone: str = "vgg16(weights=imagenet, pooling=avg)"):  # type: ignore[no-untyped-def]
    text = (
        f"model m {{ input 32x32x3  backbone {backbone}  dense(10, activation=softmax) }}\n"
        f"data {{ source cifar10  {data} }}\n"
    )
    return compile_text(text, "t.cnn")


def _codes(compilation) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.code for d in compilation.diagnostics]


def test_the_tutorials_rescale_is_not_what_vgg16_weights_expect() -> None:
    faithful = compile_text((ROOT / "specs" / "pneumonia_vgg16.cnn").read_text(), "p.cnn")
    warned = [d for d in faithful.diagnostics if d.code == "W308"]
    assert len(warned) == 1
    assert warned[0].message.startswith("vgg16's ImageNet weights expect caffe preprocessing")
    assert "pixels x 1/255 (0 to 1)" in warned[0].message
    assert warned[0].span.line == 28  # at `1/255`
    corrected = (ROOT / "specs" / "pneumonia_vgg16_imagenet.cnn").read_text()
    assert "W308" not in _codes(compile_text(corrected, "c.cnn"))


def test_imagenet_weights_imply_their_preprocessing_when_the_data_says_nothing() -> None:
    compilation = _compile("labels onehot")
    assert _codes(compilation) == []
    data = compilation.spec.data  # type: ignore[union-attr]
    assert (data.rescale, data.color_order) == (1.0, "bgr")
    assert data.normalize.mean == (103.939, 116.779, 123.68)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("backbone", "data", "codes"),
    [
        ("mobilenet_v2(weights=imagenet, pooling=avg)", "preprocess imagenet", []),
        ("mobilenet_v2(weights=imagenet, pooling=avg)", "preprocess tf", []),
        ("mobilenet_v2(weights=imagenet, pooling=avg)", "preprocess caffe", ["W308"]),
        # [-1, 1] written out by hand is the same thing as `tf`.
        (
            "mobilenet_v2(weights=imagenet, pooling=avg)",
            "rescale 1/127.5  normalize(mean=(1, 1, 1), std=(1, 1, 1))",
            [],
        ),
        # The mean subtracted in RGB order is not caffe's BGR.
        (
            "resnet50(weights=imagenet, pooling=avg)",
            "normalize(mean=(123.68, 116.779, 103.939), std=(1, 1, 1))",
            ["W308"],
        ),
        (
            "resnet50(weights=imagenet, pooling=avg)",
            "color_order bgr  normalize(mean=(103.939, 116.779, 123.68), std=(1, 1, 1))",
            [],
        ),
        # Random weights expect nothing in particular.
        ("vgg16(weights=none, pooling=avg)", "rescale 1/255", []),
        ("vgg16(weights=imagenet, pooling=avg)", "preprocess imagenet  rescale 1/255", ["E205"]),
    ],
)
def test_what_the_weights_expect_is_checked(backbone: str, data: str, codes: list[str]) -> None:
    assert _codes(_compile(data, backbone)) == codes


def test_preprocess_imagenet_needs_a_backbone() -> None:
    text = (
        "model m { input 32x32x3  flatten()  dense(10, activation=softmax) }\n"
        "data { source cifar10  preprocess imagenet }\n"
    )
    diagnostics = list(compile_text(text, "t.cnn").diagnostics)
    assert [(d.code, d.span.line, d.span.column) for d in diagnostics] == [("E308", 2, 35)]


def test_every_backbone_family_has_a_convention() -> None:
    assert {b.family for b in BACKBONES.values()} <= set(PREPROCESSING)
    assert set(PREPROCESSING.values()) == set(MODES)


def test_predict_reverses_the_channels_of_a_bgr_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from cnnspec.predict import Preprocessing

    pixels = np.zeros((2, 2, 3), np.uint8)
    pixels[..., 0] = 200  # red
    Image.fromarray(pixels).save(tmp_path / "red.png")
    caffe = MODES["caffe"]
    preprocessing = Preprocessing(
        height=2,
        width=2,
        channels=3,
        layout="nhwc",
        pixel_max=255.0,
        rescale=caffe.rescale,
        mean=list(caffe.mean or ()),
        std=list(caffe.std or ()),
        color_order="bgr",
        class_names=["a", "b"],
        binary=False,
        threshold=0.5,
    )
    x = preprocessing.load(tmp_path / "red.png")
    # Red comes last, as in keras.applications.vgg16.preprocess_input.
    np.testing.assert_allclose(x[0, 0], [-103.939, -116.779, 200 - 123.68], atol=1e-3)
