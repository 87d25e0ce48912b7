"""Every layer kind a spec can use, one registry entry per class (see `cnnspec.registry`), in
modules by family. Importing this package registers them all.

Shapes follow Keras: channels last, `padding=same` gives ceil(size / stride), `valid` gives
floor((size - dilation * (kernel - 1) - 1) / stride) + 1. Parameter counts follow Keras too:
BatchNorm's moving mean and variance are non-trainable parameters (PyTorch keeps them as buffers,
so a PyTorch model's parameter count equals the trainable count here).
"""

from cnnspec.layers.activations import (
    ELU,
    GELU,
    LeakyReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    Softmax,
    Swish,
    Tanh,
)
from cnnspec.layers.base import format_shape, same_pads, spatial
from cnnspec.layers.conv import Conv2D, DepthwiseConv2D
from cnnspec.layers.core import Dense, Dropout, Flatten, SpatialDropout
from cnnspec.layers.joins import Add, Concat, Multiply
from cnnspec.layers.normalization import BatchNorm
from cnnspec.layers.pooling import AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool, ZeroPad

__all__ = [
    "ELU",
    "GELU",
    "Add",
    "AvgPool",
    "BatchNorm",
    "Concat",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "LeakyReLU",
    "MaxPool",
    "Multiply",
    "ReLU",
    "ReLU6",
    "Sigmoid",
    "Softmax",
    "SpatialDropout",
    "Swish",
    "Tanh",
    "ZeroPad",
    "format_shape",
    "same_pads",
    "spatial",
]
