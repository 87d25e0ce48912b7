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
    HardSigmoid,
    HardSwish,
    LeakyReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    Softmax,
    Swish,
    Tanh,
)
from cnnspec.layers.base import format_shape, same_pads, spatial
from cnnspec.layers.conv import Conv2D, DepthwiseConv2D, SeparableConv2D
from cnnspec.layers.core import (
    Dense,
    Dropout,
    Flatten,
    LayerScale,
    Rescaling,
    Reshape,
    SpatialDropout,
    StochasticDepth,
)
from cnnspec.layers.joins import Add, Concat, Multiply
from cnnspec.layers.normalization import BatchNorm, LayerNorm, Normalization
from cnnspec.layers.partitions import PartitionAttention
from cnnspec.layers.pooling import (
    AvgPool,
    Crop,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool,
    ZeroPad,
)
from cnnspec.layers.resampling import ChannelShuffle, Upsample
from cnnspec.layers.slicing import ChannelSlice
from cnnspec.layers.tokens import Attention, ClassToken, PatchEmbed, PositionEmbedding, TokenPool
from cnnspec.layers.windows import PatchMerge, WindowAttention

__all__ = [
    "ELU",
    "GELU",
    "Add",
    "Attention",
    "AvgPool",
    "BatchNorm",
    "ChannelShuffle",
    "ChannelSlice",
    "ClassToken",
    "Concat",
    "Conv2D",
    "Crop",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "LayerNorm",
    "LayerScale",
    "LeakyReLU",
    "MaxPool",
    "Multiply",
    "Normalization",
    "PartitionAttention",
    "PatchEmbed",
    "PatchMerge",
    "PositionEmbedding",
    "ReLU",
    "ReLU6",
    "Rescaling",
    "Reshape",
    "SeparableConv2D",
    "Sigmoid",
    "Softmax",
    "SpatialDropout",
    "StochasticDepth",
    "Swish",
    "Tanh",
    "TokenPool",
    "Upsample",
    "WindowAttention",
    "ZeroPad",
    "format_shape",
    "same_pads",
    "spatial",
]
