"""torchvision's classification zoo and timm's CNNs as factories for `cnnspec import`:

    cnnspec import tests.frameworks.zoo:tv_resnet18 --input-size 224x224x3
    cnnspec import tests.frameworks.zoo:timm_resnet18d --input-size 224x224x3

`tv_NAME` is `torchvision.models.NAME(weights=None)` and `timm_NAME` is
`timm.create_model(NAME, pretrained=False)`, each seeded, in eval mode, with weights that a
wrong import cannot hide behind: batchnorms with a trained network's statistics (the import
tests' own `_trained_statistics`), and every parameter that its initialisation leaves constant
(a ViT head's zero weights, layer norms' ones and zeros, ConvNeXt's 1e-6 layer scales, zero
biases) drawn around its value, so that no layer is the identity or a constant.

The registry's torchvision is a CUDA build: its C++ ops do not load beside the CPU torch, and
`import torchvision` then fails registering fake kernels for the two operators it expects those
ops to have defined (`torchvision::nms`, `torchvision::qnms`). `torchvision()` defines their
schemas first (no classification model calls them); timm imports torchvision, so it goes
through it too. Nothing here is imported by cnnspec: torchvision and timm are test-only."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch import nn

from tests.frameworks.import_models.torch_nets import _trained_statistics

# torchvision's schemas for the ops its Python code registers fake kernels for at import
# (torchvision/csrc/ops/nms.cpp and quantized/cpu/qnms_kernel.cpp define them in C++).
_SCHEMAS = {
    "torchvision::nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "torchvision::qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

# The input each model is built for where it is not 224x224x3.
SIZES = {"tv_inception_v3": (299, 299, 3)}

# Popular timm CNNs (and one small ViT), built with pretrained=False.
TIMM = [
    "resnet18d",
    "resnet50",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "regnety_008",
    "convnext_tiny",
    "ghostnet_100",
    "cspresnet50",
    "dpn68",
    "mixnet_s",
    "rexnet_100",
    "hrnet_w18_small",
    "densenet121",
    "vit_tiny_patch16_224",
]


def _defined(qualname: str) -> bool:
    namespace, name = qualname.split("::")
    try:
        getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return False
    return True


def torchvision() -> ModuleType:
    """torchvision, imported beside the CPU torch (see the module's docstring)."""
    for qualname, schema in _SCHEMAS.items():
        if not _defined(qualname):
            torch.library.define(qualname, schema)
    import torchvision as module

    return module


def timm() -> ModuleType:
    torchvision()
    import timm as module

    return module


def torchvision_names() -> list[str]:
    """Every classification model torchvision lists (detection, segmentation, video and
    optical flow live in submodules, which `module=torchvision.models` leaves out)."""
    vision = torchvision()
    return list(vision.models.list_models(module=vision.models))


def input_size(factory: str) -> tuple[int, int, int]:
    """The `--input-size` for `factory` (`tv_NAME` or `timm_NAME`) as HxWxC."""
    return SIZES.get(factory, (224, 224, 3))


def constructor(factory: str) -> Callable[[], nn.Module]:
    """What builds `factory`'s model with its initial weights (no seeding, no statistics)."""
    if factory.startswith("tv_"):
        name = factory[3:]

        def make() -> nn.Module:
            with warnings.catch_warnings():
                # googlenet's and inception_v3's notice that their default initialisation
                # will change: the import's output is not the place for it.
                warnings.simplefilter("ignore", FutureWarning)
                return torchvision().models.get_model(name, weights=None)

        return make
    if factory.startswith("timm_"):
        name = factory[5:]
        return lambda: timm().create_model(name, pretrained=False)
    raise ValueError(f"not a zoo factory: {factory} (tv_NAME or timm_NAME)")


def _no_constant_parameters(model: nn.Module) -> nn.Module:
    """Each parameter whose values are all equal drawn uniformly around that value (within
    0.05, or half of it where it is larger): seeded."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            flat = parameter.detach().reshape(-1)
            if flat.numel() == 0 or not bool((flat == flat[0]).all()):
                continue
            spread = max(abs(float(flat[0])), 0.1)
            noise = torch.rand(parameter.shape, generator=generator) - 0.5
            parameter.add_(noise.to(parameter.dtype) * spread)
    return model


def build(factory: str) -> nn.Module:
    """`factory`'s model: seeded, batchnorms with trained statistics, no constant
    parameters, in eval mode."""
    make = constructor(factory)
    torch.manual_seed(0)
    model = make()
    return _no_constant_parameters(_trained_statistics(model)).eval()


def parameter_count(factory: str) -> int:
    """The model's parameter count, on the meta device (no weights allocated) where its
    constructor allows (torchvision's RegNets compute their widths with real tensors)."""
    make = constructor(factory)
    try:
        with torch.device("meta"):
            model = make()
    except Exception:  # a constructor that needs real tensors: built for real
        model = make()
    return sum(p.numel() for p in model.parameters())


def __getattr__(factory: str) -> Any:
    """`tv_NAME` and `timm_NAME` as module attributes, which `cnnspec import` looks up."""
    if factory.startswith(("tv_", "timm_")) and factory[factory.index("_") + 1 :]:

        def make() -> nn.Module:
            return build(factory)

        make.__name__ = make.__qualname__ = factory
        return make
    raise AttributeError(f"module {__name__!r} has no attribute {factory!r}")
