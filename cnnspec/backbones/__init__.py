"""Pretrained backbones: keras.applications networks written in cnnspec's own language.

Each backbone is a library spec in this folder (`vgg16.cnn`, ...) whose layer and block names are
keras.applications', so the checker knows every shape and parameter of `backbone vgg16()`, a spec
can `unfreeze backbone.block5`, and ImageNet weights move between frameworks by layer name. The
library spec's `head` is the ImageNet classifier, used only with `include_top=true`.

This module holds what the language cannot say: which keras.applications class builds the same
network, and where Keras keeps its ImageNet weight files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal

from cnnspec import syntax as ast
from cnnspec.binding import Bound
from cnnspec.diagnostics import Diagnostics
from cnnspec.source import Source

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
# Input sizes MobileNetV2 has ImageNet weights for; Keras falls back to 224 for the others.
MOBILENET_SIZES = (96, 128, 160, 192, 224)


class BackboneArgs(Bound):
    """The arguments of `backbone NAME(...)`, as keras.applications takes them."""

    include_top: bool = False
    # "imagenet", None (written `none`: random initialisation), or a Keras .h5 weight file.
    weights: str | None = "imagenet"
    pooling: Literal["avg", "max"] | None = None


@dataclass(frozen=True, slots=True)
class Backbone:
    name: str
    keras_class: str
    # keras.applications' folder under KERAS_WEIGHTS_URL, and its file names with and without
    # the classifier; `{size}` is MobileNetV2's input size.
    folder: str
    top_file: str
    notop_file: str

    ARGS: ClassVar[type[BackboneArgs]] = BackboneArgs

    def weights_file(self, include_top: bool, size: int) -> str:
        """The file keras.applications downloads to ~/.keras/models for ImageNet weights."""
        size = size if size in MOBILENET_SIZES else 224
        return (self.top_file if include_top else self.notop_file).format(size=size)

    def weights_url(self, include_top: bool, size: int) -> str:
        return f"{KERAS_WEIGHTS_URL}{self.folder}/{self.weights_file(include_top, size)}"

    def source(self) -> Source:
        text = Path(__file__).with_name(f"{self.name}.cnn").read_text("utf-8")
        return Source(f"<backbone {self.name}>", text)

    def model(self) -> ast.Section:
        """The library spec's model section, parsed once."""
        return _model_section(self.name)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "vgg16",
            "VGG16",
            "vgg16",
            "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
            "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            "vgg19",
            "VGG19",
            "vgg19",
            "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
            "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            "resnet50",
            "ResNet50",
            "resnet",
            "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
            "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            "mobilenet_v2",
            "MobileNetV2",
            "mobilenet_v2",
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}.h5",
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5",
        ),
    )
}


@cache
def _model_section(name: str) -> ast.Section:
    source = BACKBONES[name].source()
    diagnostics = Diagnostics(source)
    document = ast.parse(source, diagnostics)
    assert document is not None and not diagnostics.has_errors, f"backbone {name} does not parse"
    models = [
        item
        for item in document.items
        if isinstance(item, ast.Section) and item.key.text == "model"
    ]
    assert len(models) == 1, f"backbone {name} needs exactly one model"
    return models[0]
