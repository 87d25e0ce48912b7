"""The preprocessing conventions equal keras.applications' own preprocess_input, and both
generated scripts (and model.keras) give a caffe-style backbone the input its weights expect."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")

import keras
import torch

from cnnspec.backbones import BACKBONES
from cnnspec.preprocessing import MODES
from tests.frameworks.scripts import checked_spec, load_script, write_script

pytestmark = pytest.mark.frameworks

# The module of keras.applications whose preprocess_input each family uses.
MODULES = {
    "vgg16": "vgg16",
    "vgg19": "vgg19",
    "resnet": "resnet",
    "resnet_v2": "resnet_v2",
    "mobilenet": "mobilenet",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3": "mobilenet_v3",
    "densenet": "densenet",
    "xception": "xception",
    "inception_v3": "inception_v3",
    "inception_resnet_v2": "inception_resnet_v2",
    "nasnet": "nasnet",
    "efficientnet": "efficientnet",
    "efficientnet_v2": "efficientnet_v2",
    "convnext": "convnext",
    # torchvision's ImageNet normalisation is keras.applications' `torch` mode, DenseNet's
    # (test_backbones_vit checks torchvision's own constants against it).
    "vit": "densenet",
}


def _apply(mode: str, pixels: np.ndarray) -> np.ndarray:
    rule = MODES[mode]  # type: ignore[index]
    x = pixels * rule.rescale
    if rule.bgr:
        x = x[..., ::-1]
    if rule.mean is not None and rule.std is not None:
        x = (x - np.asarray(rule.mean)) / np.asarray(rule.std)
    return x


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_convention_is_keras_applications_preprocess_input(name: str) -> None:
    backbone = BACKBONES[name]
    module = importlib.import_module(f"keras.applications.{MODULES[backbone.family]}")
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    expected = np.asarray(module.preprocess_input(pixels.copy()))
    np.testing.assert_allclose(_apply(backbone.preprocessing, pixels), expected, atol=1e-4)


def test_scripts_feed_caffe_weights_bgr_with_the_mean_subtracted(tmp_path: Path) -> None:
    spec = checked_spec(
        "model m { input 32x32x3  backbone vgg16(weights=imagenet, pooling=avg)"
        "  dense(10, activation=softmax) }\ndata { source cifar10  labels sparse }"
    )
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    expected = keras.applications.vgg16.preprocess_input(pixels.astype(np.float32))

    keras_script = load_script(write_script(spec, tmp_path, "keras"))
    datasets = keras_script.make_datasets({"test": (pixels, np.zeros(4, "int64"))}, batch_size=4)
    images, _ = next(iter(datasets["test"]))
    np.testing.assert_allclose(np.asarray(images), expected, atol=1e-4)

    torch_script = load_script(write_script(spec, tmp_path, "pytorch"))
    batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    prepared = torch_script.prepare(batch, torch.device("cpu")).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(prepared, expected, atol=1e-4)

    # model.keras takes the source's pixels: the network after the same preprocessing.
    model = keras_script.build_model()
    inference = keras_script.inference_model(model)
    np.testing.assert_allclose(
        np.asarray(inference(pixels.astype(np.float32))),
        np.asarray(model(expected)),
        atol=1e-5,
    )
