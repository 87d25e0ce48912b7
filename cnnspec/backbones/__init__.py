"""Pretrained backbones: keras.applications' networks, and torchvision's Vision Transformers,
written in cnnspec's own language.

Each backbone is a library spec in this folder (`vgg16.cnn`, ...) whose layer and block names are
keras.applications', so the checker knows every shape and parameter of `backbone vgg16()`, a spec
can `unfreeze backbone.block5`, and ImageNet weights move between frameworks by layer name. The
library spec's `head` is the ImageNet classifier, used only with `include_top=true`.

This module holds what the language cannot say: which keras.applications class builds the same
network, and where Keras keeps its ImageNet weight files; for a torchvision network, where its
checkpoint is and how its state dict's keys name the spec's tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal

from cnnspec import syntax as ast
from cnnspec.binding import Bound
from cnnspec.diagnostics import Diagnostics
from cnnspec.preprocessing import Mode
from cnnspec.source import Source

KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"
# Input sizes MobileNetV2 and MobileNet have ImageNet weight files for (`{size}` in their URLs);
# Keras falls back to the 224 file for the others.
SIZES_WITH_WEIGHTS = {"mobilenet_v2": (96, 128, 160, 192, 224), "mobilenet": (128, 160, 192, 224)}


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
    # The library file that writes it (`efficientnet.cnn` holds B0 to B7, as `model NAME`).
    family: str
    # Where keras.applications downloads its ImageNet weights from, with and without the
    # classifier; `{size}` is MobileNet's input size.
    top_url: str
    notop_url: str

    # Whose ImageNet weights: keras.applications' (.h5 files, by layer name) or torchvision's
    # (a state dict, by key: see `torchvision_keys`).
    weights_from: Literal["keras", "torchvision"] = "keras"
    # The `pooling` values it takes (a ViT pools tokens: their mean, or the class token).
    poolings: tuple[str, ...] = ("avg", "max")
    # The names keras.applications saves its weight files under in ~/.keras/models, with and
    # without the classifier, where they are not the URL's last part (NASNet's).
    keras_files: tuple[str, str] | None = None

    ARGS: ClassVar[type[BackboneArgs]] = BackboneArgs

    @property
    def torchvision_keys(self) -> tuple[tuple[str, str], ...]:
        """How a torchvision state dict names the spec's tensors: (pattern, replacement)
        pairs of regular expressions, tried in order, that turn a canonical key
        (`encoder_layer_3_mlp_0.weight`) into torchvision's
        (`encoder.layers.encoder_layer_3.mlp.0.weight`)."""
        return TORCHVISION_KEYS.get(self.family, ())

    @property
    def preprocessing(self) -> Mode:
        """What its ImageNet weights expect as input: keras.applications' preprocess_input."""
        return PREPROCESSING[self.family]

    def weights_file(self, include_top: bool, size: int) -> str:
        """The file keras.applications downloads to ~/.keras/models for ImageNet weights."""
        if self.keras_files is not None:
            return self.keras_files[0 if include_top else 1]
        return self.weights_url(include_top, size).rsplit("/", 1)[-1]

    def weights_url(self, include_top: bool, size: int) -> str:
        size = size if size in SIZES_WITH_WEIGHTS.get(self.family, ()) else 224
        return (self.top_url if include_top else self.notop_url).format(size=size)

    def source(self) -> Source:
        text = Path(__file__).with_name(f"{self.family}.cnn").read_text("utf-8")
        return Source(f"<backbone {self.name}>", text)

    def model(self) -> ast.Section:
        """The library spec's model section, parsed once."""
        return _library(self.family, self.name)[0]

    def top_items(self) -> tuple[ast.Item, ...]:
        """The library file's top-level items: the `define`s its models use."""
        return _library(self.family, self.name)[1]


# keras.applications.<family>.preprocess_input, by family (see cnnspec.preprocessing).
PREPROCESSING: dict[str, Mode] = {
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet": "caffe",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "resnet_v2": "tf",
    "xception": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "mobilenet_v3": "raw",
    "efficientnet": "raw",
    "efficientnet_v2": "raw",
    "convnext": "raw",
    # torchvision's transforms: 0-1, then ImageNet's mean and standard deviation.
    "vit": "torch",
}

# torchvision's module paths for the library's names (see Backbone.torchvision_keys); the
# scripts apply them in this order, the first that matches.
TORCHVISION_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "vit": (
        (r"^class_token\.weight$", "class_token"),
        (r"^encoder_pos_embedding\.weight$", "encoder.pos_embedding"),
        (r"^encoder_layer_(\d+)_mlp_(\d+)\.", r"encoder.layers.encoder_layer_\1.mlp.\2."),
        (r"^encoder_layer_(\d+)_", r"encoder.layers.encoder_layer_\1."),
        (r"^encoder_ln\.", "encoder.ln."),
        (r"^heads_head\.", "heads.head."),
    ),
}


def _tf_kernels(folder: str, stem: str) -> tuple[str, str]:
    """The weight files of the older families: `<stem>_weights_tf_dim_ordering_tf_kernels`."""
    base = f"{KERAS}{folder}/{stem}_weights_tf_dim_ordering_tf_kernels"
    return f"{base}.h5", f"{base}_notop.h5"


def _catalog() -> list[Backbone]:
    found = [
        Backbone("vgg16", "VGG16", "vgg16", *_tf_kernels("vgg16", "vgg16")),
        Backbone("vgg19", "VGG19", "vgg19", *_tf_kernels("vgg19", "vgg19")),
        Backbone(
            "mobilenet_v2",
            "MobileNetV2",
            "mobilenet_v2",
            f"{KERAS}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{{size}}.h5",
            f"{KERAS}mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{{size}}_no_top.h5",
        ),
        Backbone(
            "mobilenet",
            "MobileNet",
            "mobilenet",
            f"{KERAS}mobilenet/mobilenet_1_0_{{size}}_tf.h5",
            f"{KERAS}mobilenet/mobilenet_1_0_{{size}}_tf_no_top.h5",
        ),
        Backbone("xception", "Xception", "xception", *_tf_kernels("xception", "xception")),
        Backbone(
            "inception_v3",
            "InceptionV3",
            "inception_v3",
            *_tf_kernels("inception_v3", "inception_v3"),
        ),
        Backbone(
            "inception_resnet_v2",
            "InceptionResNetV2",
            "inception_resnet_v2",
            *_tf_kernels("inception_resnet_v2", "inception_resnet_v2"),
        ),
        Backbone(
            "nasnet_mobile",
            "NASNetMobile",
            "nasnet",
            f"{KERAS}nasnet/NASNet-mobile.h5",
            f"{KERAS}nasnet/NASNet-mobile-no-top.h5",
            keras_files=("nasnet_mobile.h5", "nasnet_mobile_no_top.h5"),
        ),
        Backbone(
            "nasnet_large",
            "NASNetLarge",
            "nasnet",
            f"{KERAS}nasnet/NASNet-large.h5",
            f"{KERAS}nasnet/NASNet-large-no-top.h5",
            keras_files=("nasnet_large.h5", "nasnet_large_no_top.h5"),
        ),
    ]
    for depth in (50, 101, 152):
        found.append(
            Backbone(
                f"resnet{depth}",
                f"ResNet{depth}",
                "resnet",
                *_tf_kernels("resnet", f"resnet{depth}"),
            )
        )
        found.append(
            Backbone(
                f"resnet{depth}_v2",
                f"ResNet{depth}V2",
                "resnet_v2",
                *_tf_kernels("resnet", f"resnet{depth}v2"),
            )
        )
    for depth in (121, 169, 201):
        found.append(
            Backbone(
                f"densenet{depth}",
                f"DenseNet{depth}",
                "densenet",
                *_tf_kernels("densenet", f"densenet{depth}"),
            )
        )
    for size in ("small", "large"):
        model = f"{size}_224_1.0_float"
        found.append(
            Backbone(
                f"mobilenet_v3_{size}",
                f"MobileNetV3{size.title()}",
                "mobilenet_v3",
                f"{KERAS}mobilenet_v3/weights_mobilenet_v3_{model}.h5",
                f"{KERAS}mobilenet_v3/weights_mobilenet_v3_{model}_no_top_v2.h5",
            )
        )
    for b in range(8):
        found.append(
            Backbone(
                f"efficientnet_b{b}",
                f"EfficientNetB{b}",
                "efficientnet",
                f"https://storage.googleapis.com/keras-applications/efficientnetb{b}.h5",
                f"https://storage.googleapis.com/keras-applications/efficientnetb{b}_notop.h5",
            )
        )
    for size in ("b0", "b1", "b2", "b3", "s", "m", "l"):
        stem = f"{KERAS}efficientnet_v2/efficientnetv2-{size}"
        found.append(
            Backbone(
                f"efficientnet_v2_{size}",
                f"EfficientNetV2{size.upper()}",
                "efficientnet_v2",
                f"{stem}.h5",
                f"{stem}_notop.h5",
            )
        )
    for size, patch, checkpoint in (
        ("b", 16, "c867db91"),
        ("b", 32, "d86f8d99"),
        ("l", 16, "852ce7e3"),
        ("l", 32, "c7638314"),
    ):
        # torchvision's IMAGENET1K_V1 checkpoints; the classifier is in the same file.
        url = f"https://download.pytorch.org/models/vit_{size}_{patch}-{checkpoint}.pth"
        found.append(
            Backbone(
                f"vit_{size}{patch}",
                f"vit_{size}_{patch}",
                "vit",
                url,
                url,
                weights_from="torchvision",
                poolings=("avg",),
            )
        )
    for size in ("tiny", "small", "base", "large", "xlarge"):
        stem = f"{KERAS}convnext/convnext_{size}"
        found.append(
            Backbone(
                f"convnext_{size}",
                f"ConvNeXt{size.title().replace('Xl', 'XL')}",
                "convnext",
                f"{stem}.h5",
                f"{stem}_notop.h5",
            )
        )
    return found


BACKBONES: dict[str, Backbone] = {b.name: b for b in _catalog()}


@cache
def _library(family: str, name: str) -> tuple[ast.Section, tuple[ast.Item, ...]]:
    source = BACKBONES[name].source()
    diagnostics = Diagnostics(source)
    document = ast.parse(source, diagnostics)
    assert document is not None and not diagnostics.has_errors, f"backbone {name} does not parse"
    models = [
        item
        for item in document.items
        if isinstance(item, ast.Section)
        and item.key.text == "model"
        and isinstance(item.label, ast.Name)
        and item.label.text == name
    ]
    assert len(models) == 1, f"{family}.cnn needs exactly one model {name}"
    return models[0], document.items
