"""The PyTorch-specific code of the generated PyTorch scripts, as real Python:
TensorFlow's `same` padding and the helper layers that give PyTorch Keras's semantics,
the model's wrapper, the augmentation steps, the loaders, Keras's callbacks, the
training loop and its resume point, evaluation, weight files, a backbone's Keras
weights, tracking and main.

cnnspec.backends.pytorch copies these definitions into the scripts by name
(cnnspec.backends.runtime.code); nothing in cnnspec imports this module. The imports
below are for the linter, the type checker and the unit tests (tests/runtime/
test_torch.py): a script writes its own. A `# <NAME>` line is a slot the emitter fills
from the spec or drops. A few statements are the common case of what a spec decides,
which the emitter replaces whole (pytorch.py's DEFAULT_* and _replaced): data_loss's
per-example loss, scores' metric, evaluate's prediction and make_loaders' dataset.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import pickle
import sys
import time
import types
import urllib.request
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.metrics import accuracy_score, classification_report
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    TensorDataset,
    default_collate,
)
from tqdm import tqdm  # type: ignore[import-untyped]

from cnnspec.runtime.common import (
    DataError,
    Interrupted,
    check_not_empty,
    discard_unstarted,
    interrupted,
    mlflow_run,
    parse_args,
    read_image,
    run_folder,
    saved_readable,
    subset,
    torchvision_tensors,
    weights_to_load,
)
from cnnspec.runtime.rules import (
    from_keras,
    keras_h5_arrays,
    learning_rate,
    same_pads,
    window_coords,
    window_index,
    window_mask,
    window_shift,
)
from cnnspec.runtime.script import (
    BACKBONE,
    BACKBONE_CLASSES,
    BACKBONE_LAYERS,
    BATCH_SIZE,
    CLASS_NAMES,
    DEFAULT_OUTPUT_DIR,
    FILL,
    FILL_VALUE,
    FIXED_INPUT_SIZE,
    FLATTENED_FROM,
    INPUT_SHAPE,
    KERAS_WEIGHTS_FILE,
    KERAS_WEIGHTS_URL,
    L2,
    MEAN,
    PHASES,
    PIXEL_RANGE,
    RESCALE,
    RESUME,
    SEED,
    SPEC_NAME,
    STD,
    TORCHVISION_URL,
    WEIGHT_LAYOUT,
)

if TYPE_CHECKING:
    # What each script defines from its spec (cnnspec.backends.pytorch): the network,
    # the augmentation, the metric functions, and `load_data`, the data source's
    # loader (one of cnnspec.runtime.common's, renamed). The unit tests patch in what
    # they call.
    class Net(nn.Module): ...

    def augment(images, generator): ...

    def metric_accuracy(probabilities, predicted, targets, mixed=None): ...

    def load_data(data_dir): ...


# --- TensorFlow's `same` padding, which comes with every helper (SAME_PADDING): the
# rule along one axis, same_pads, is cnnspec.runtime.rules', which the checker sizes the
# layers with.


def pad_same(x, kernel, stride, dilation=(1, 1), value=0.0):
    top, bottom = same_pads(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = same_pads(x.shape[-1], kernel[1], stride[1], dilation[1])
    return F.pad(x, (left, right, top, bottom), value=value)


def pair(value):
    return value if isinstance(value, tuple) else (value, value)


# --- The helper layers and functions that give PyTorch Keras's semantics, by the names
# the layers' emitters ask for (TorchLayer.helpers).


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TensorFlow's `same` padding (PyTorch's refuses strides)."""

    def forward(self, x):
        x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return super().forward(x)


class MaxPool2dSame(nn.MaxPool2d):
    """Max pooling with `same` padding that never wins the max, as in Keras."""

    def forward(self, x):
        kernel, stride = pair(self.kernel_size), pair(self.stride)
        return super().forward(pad_same(x, kernel, stride, value=-torch.inf))


class AvgPool2dSame(nn.AvgPool2d):
    """Average pooling with `same` padding left out of the average, as in Keras."""

    def forward(self, x):
        kernel, stride = pair(self.kernel_size), pair(self.stride)
        total = super().forward(pad_same(x, kernel, stride))
        ones = pad_same(torch.ones_like(x[:, :1]), kernel, stride)
        return total / super().forward(ones)


class SeparableConv2d(nn.Module):
    """Keras's SeparableConv2D: a depthwise convolution (`depth_multiplier` filters
    per input channel, no bias), then a 1x1 convolution over its channels."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        depth_multiplier=1,
        bias=True,
    ):
        super().__init__()
        self.same = padding == "same"
        middle = in_channels * depth_multiplier
        self.depthwise = nn.Conv2d(
            in_channels,
            middle,
            kernel_size,
            stride,
            0 if self.same else padding,
            dilation,
            groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(middle, out_channels, 1, bias=bias)

    def forward(self, x):
        conv = self.depthwise
        if self.same:
            x = pad_same(x, conv.kernel_size, conv.stride, conv.dilation)
        return self.pointwise(conv(x))


def partial_batchnorm(batchnorm, num_features, scale, center, **options):
    """A BatchNorm with only its learnt scale (`weight`) or only its learnt shift
    (`bias`), as Keras's scale=False or center=False."""
    module = batchnorm(num_features, affine=False, **options)
    if scale:
        module.weight = nn.Parameter(torch.ones(num_features))
    if center:
        module.bias = nn.Parameter(torch.zeros(num_features))
    return module


class Normalization(nn.Module):
    """Keras's Normalization over the channels: (x - mean) / max(sqrt(variance),
    1e-7). Without given values it holds them, with Keras's sample count."""

    def __init__(self, channels, mean=None, variance=None):
        super().__init__()
        self.values = None if mean is None else (mean, variance)
        if mean is None:
            self.register_buffer("mean", torch.zeros(channels))
            self.register_buffer("variance", torch.ones(channels))
            self.register_buffer("count", torch.zeros(1))

    def forward(self, x):
        if self.values is None:
            mean, variance = self.mean, self.variance
        else:
            mean, variance = (x.new_tensor(v) for v in self.values)
        shape = (-1,) + (1,) * (x.dim() - 2)
        deviation = variance.sqrt().clamp_min(1e-7)
        return (x - mean.view(shape)) / deviation.view(shape)


def rescale_channels(x, scale, offset):
    """x * scale + offset with a value per channel (or one for all), as Keras's
    Rescaling."""
    shape = (-1,) + (1,) * (x.dim() - 2)
    return x * x.new_tensor(scale).view(shape) + x.new_tensor(offset).view(shape)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero each sample's whole input with
    probability `rate` and scale the rest by 1 / (1 - rate), as Keras's
    Dropout(rate, noise_shape=(None, 1, 1, 1)); the identity at inference."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate == 0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = torch.rand(shape, device=x.device) >= self.rate
        return x * mask.to(x.dtype) / keep


class LayerScale(nn.Module):
    """ConvNeXt's layer scale: the input times a learnt scale per channel."""

    def __init__(self, channels, init_values):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(init_values)))

    def forward(self, x):
        return x * self.weight.view((-1,) + (1,) * (x.dim() - 2))


class ClassToken(nn.Module):
    """A ViT's class token: a learnt vector put before the tokens of each example."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        return torch.cat([self.weight.expand(x.shape[0], -1, -1), x], dim=1)


class PositionEmbedding(nn.Module):
    """A ViT's learnt position embeddings, added to the tokens."""

    def __init__(self, tokens, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, tokens, dim).normal_(std=0.02))

    def forward(self, x):
        return x + self.weight


def patch_merge(x):
    """torchvision's patch merging before its norm and reduction, on NCHW: each 2x2
    square of positions one position of 4C channels, in torchvision's order; an odd
    height or width padded with zeros first."""
    x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
    parts = [
        x[..., 0::2, 0::2],
        x[..., 1::2, 0::2],
        x[..., 0::2, 1::2],
        x[..., 1::2, 1::2],
    ]
    return torch.cat(parts, 1)


class WindowAttention(nn.Module):
    """A Swin Transformer's shifted-window attention on a channels-last map (B, H, W,
    C), torchvision's ShiftedWindowAttention with its tensors' names: the map padded to
    whole windows and rolled by the shift, attention within each window with a learnt
    bias per relative position (masked across the roll's seams), rolled back. The
    relative-position index and the mask are fixed tables, plain attributes: neither is
    a weight nor part of the state. Version 2 is ShiftedWindowAttentionV2: cosine
    attention scaled by exp(logit_scale) (clamped at 100), the bias 16 * sigmoid of an
    MLP (cpb_mlp) on each offset's log-spaced coordinates (window_coords, another fixed
    table), and the key's third of qkv.bias zeroed as it computes."""

    def __init__(self, dim, heads, size, shift, map_size, version=1):
        super().__init__()
        self.heads, self.size, self.map_size = heads, size, map_size
        self.version = version
        self.padded = tuple(-(-n // w) * w for n, w in zip(map_size, size, strict=True))
        self.shift = window_shift(map_size, size, shift)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        rows = (2 * size[0] - 1) * (2 * size[1] - 1)
        if version == 2:
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(heads, 1, 1)))
            self.cpb_mlp = nn.Sequential(
                nn.Linear(2, 512), nn.ReLU(), nn.Linear(512, heads, bias=False)
            )
            self.coords = torch.tensor(window_coords(size)).view(rows, 2)
            # The key's third of qkv.bias is never used: zero where the query's and the
            # value's are one.
            self.keep = torch.ones(3 * dim)
            self.keep[dim : 2 * dim] = 0
        else:
            table = torch.empty(rows, heads)
            self.relative_position_bias_table = nn.Parameter(
                nn.init.trunc_normal_(table, std=0.02)
            )
        self.index = torch.tensor(window_index(size))
        count = size[0] * size[1]
        self.mask = None
        if any(self.shift):
            mask = window_mask(self.padded, size, self.shift)
            self.mask = torch.tensor(mask).view(1, -1, 1, count, count)

    def forward(self, x):
        batch, height, width, dim = x.shape
        (wh, ww), (ph, pw) = self.size, self.padded
        count, head = wh * ww, dim // self.heads
        x = F.pad(x, (0, 0, 0, pw - width, 0, ph - height))
        if any(self.shift):
            x = torch.roll(x, (-self.shift[0], -self.shift[1]), (1, 2))
        x = x.view(batch, ph // wh, wh, pw // ww, ww, dim).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(-1, count, dim)
        if self.version == 2:
            bias = self.qkv.bias * self.keep.to(x)
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = self.qkv(x)
        qkv = qkv.reshape(-1, count, 3, self.heads, head).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        if self.version == 2:
            query, key = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
            scores = query @ key.transpose(-2, -1)
            scale = torch.clamp(self.logit_scale, max=float(np.log(100.0))).exp()
            scores = scores * scale
            table = self.cpb_mlp(self.coords.to(x))
        else:
            scores = (query * head**-0.5) @ key.transpose(-2, -1)
            table = self.relative_position_bias_table
        bias = table[self.index.to(x.device)].view(count, count, -1).permute(2, 0, 1)
        if self.version == 2:
            bias = 16 * torch.sigmoid(bias)
        scores = scores + bias
        if self.mask is not None:
            windows = self.mask.shape[1]
            scores = scores.view(batch, windows, self.heads, count, count)
            scores = scores + self.mask.to(scores)
            scores = scores.view(-1, self.heads, count, count)
        x = (scores.softmax(-1) @ value).transpose(1, 2).reshape(-1, count, dim)
        x = self.proj(x).view(batch, ph // wh, pw // ww, wh, ww, dim)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, ph, pw, dim)
        if any(self.shift):
            x = torch.roll(x, self.shift, (1, 2))
        return x[:, :height, :width]


class PartitionAttention(nn.Module):
    """MaxViT's partitioned attention on an NCHW map, torchvision's
    RelativePositionalMultiHeadAttention with its tensors' names and the
    partitioning of its PartitionAttentionLayer: the map cut into windows of `size`
    (or, as a grid, into size[0] x size[1] positions at a stride of H/size),
    attention within each with a learnt bias per relative position, the scores
    scaled by C^-0.5 (torchvision's scale_factor, of the whole channel count), put
    back in place. The relative-position index is a fixed table, a plain attribute:
    neither a weight nor part of the state."""

    def __init__(self, dim, heads, size, grid=False):
        super().__init__()
        self.heads, self.size, self.grid = heads, size, grid
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.merge = nn.Linear(dim, dim)
        rows = (2 * size[0] - 1) * (2 * size[1] - 1)
        table = torch.empty(rows, heads)
        self.relative_position_bias_table = nn.Parameter(
            nn.init.trunc_normal_(table, std=0.02)
        )
        self.index = torch.tensor(window_index(size))

    def forward(self, x):
        batch, dim, height, width = x.shape
        (ph, pw), count = self.size, self.size[0] * self.size[1]
        head, (gh, gw) = dim // self.heads, (height // ph, width // pw)
        # Windows split each axis into (groups, P), a grid into (P, groups); either way
        # the partitions come out as (B, groups, groups, P, P, C).
        if self.grid:
            split, perm, back = (ph, gh, pw, gw), (0, 3, 5, 2, 4, 1), (0, 5, 3, 1, 4, 2)
        else:
            split, perm, back = (gh, ph, gw, pw), (0, 2, 4, 3, 5, 1), (0, 5, 1, 3, 2, 4)
        x = x.view(batch, dim, *split).permute(perm).reshape(-1, count, dim)
        qkv = self.to_qkv(x).reshape(-1, count, 3, self.heads, head)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)
        scores = query @ (key * dim**-0.5).transpose(-2, -1)
        index = self.index.to(x.device)
        bias = self.relative_position_bias_table[index].view(count, count, -1)
        bias = bias.permute(2, 0, 1)
        x = ((scores + bias).softmax(-1) @ value).transpose(1, 2)
        x = self.merge(x.reshape(-1, count, dim)).view(batch, gh, gw, ph, pw, dim)
        x = x.permute(back)
        return x.reshape(batch, dim, height, width)


# --- The model.


def build_model():
    """The network with freshly initialised weights, in training mode."""
    return Net()


class Logits(nn.Module):
    """The network up to its output activation, as the loss sees it; a module of its own
    so that DistributedDataParallel and torch.compile can wrap it."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, inputs):
        return self.net.logits(inputs)


# --- The augmentation steps (AugmentSection.torch_helpers): each transforms a batch
# (N, C, H, W) on its device, drawing from the training generator.


def uniform(generator, images, low, high, *shape):
    """Random numbers in [low, high), `shape` of them per image."""
    n = images.shape[0]
    values = torch.rand(n, *shape, generator=generator, device=generator.device)
    return (low + (high - low) * values).to(images.device)


def warp(images, theta):
    """Resample each image through its affine map (output to input, in [-1, 1]
    coordinates); uncovered pixels are filled as the spec's `fill` says."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if FILL == "wrap":
        grid = torch.remainder(grid + 1, 2) - 1
    padding = {"reflect": "reflection", "constant": "zeros"}.get(FILL, "border")
    warped = F.grid_sample(images, grid, padding_mode=padding, align_corners=False)
    if FILL == "constant" and FILL_VALUE:
        ones = torch.ones_like(images[:, :1])
        covered = F.grid_sample(ones, grid, padding_mode="zeros", align_corners=False)
        warped = warped + (1 - covered) * FILL_VALUE
    return warped


def identity_maps(images):
    """One identity affine map per image, to edit."""
    theta = torch.zeros(images.shape[0], 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    return theta


def random_rotation(images, generator, degrees):
    """Rotate each image by up to +/- `degrees`."""
    angle = torch.deg2rad(uniform(generator, images, -degrees, degrees))
    theta = identity_maps(images)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    return warp(images, theta)


def random_translation(images, generator, height, width):
    """Shift each image by up to a fraction of its height and width."""
    theta = identity_maps(images)
    theta[:, 0, 2] = 2 * width * uniform(generator, images, -1, 1)
    theta[:, 1, 2] = 2 * height * uniform(generator, images, -1, 1)
    return warp(images, theta)


def random_zoom(images, generator, factor):
    """Zoom each image in or out by up to `factor`, height and width apart."""
    scale = uniform(generator, images, 1 - factor, 1 + factor, 2)
    theta = identity_maps(images)
    theta[:, 0, 0], theta[:, 1, 1] = scale[:, 0], scale[:, 1]
    return warp(images, theta)


def random_shear(images, generator, factor):
    """Shear each image horizontally by up to `factor`."""
    theta = identity_maps(images)
    theta[:, 0, 1] = uniform(generator, images, -factor, factor)
    return warp(images, theta)


def random_flip(images, generator, mode):
    """Mirror each image with probability 1/2 along each axis `mode` names."""
    n = images.shape[0]
    if mode in ("horizontal", "horizontal_and_vertical"):
        chosen = uniform(generator, images, 0, 1).view(n, 1, 1, 1) < 0.5
        images = torch.where(chosen, images.flip(3), images)
    if mode in ("vertical", "horizontal_and_vertical"):
        chosen = uniform(generator, images, 0, 1).view(n, 1, 1, 1) < 0.5
        images = torch.where(chosen, images.flip(2), images)
    return images


def random_brightness(images, generator, factor):
    """Shift each image's pixels by up to +/- `factor` of the pixel range."""
    low, high = PIXEL_RANGE
    shift = uniform(generator, images, -factor, factor).view(-1, 1, 1, 1)
    return (images + shift * (high - low)).clamp(low, high)


def random_contrast(images, generator, factor):
    """Scale each image's contrast by a factor in [1 - factor, 1 + factor]."""
    low, high = PIXEL_RANGE
    scale = 1 + uniform(generator, images, -factor, factor).view(-1, 1, 1, 1)
    mean = images.mean(dim=(2, 3), keepdim=True)
    return ((images - mean) * scale + mean).clamp(low, high)


# --- Data: a folder's image files, the device-side preprocessing, the loaders.


class ImageFiles(Dataset):
    """Image files, read as the batches need them (read_image): pairs of uint8 CHW
    pixels and a label."""

    def __init__(self, files, labels, size):
        self.files, self.labels, self.size = files, labels, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        pixels = read_image(self.files[index], self.size)
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy()), self.labels[index]


MEAN_TENSOR = torch.tensor(MEAN).view(1, -1, 1, 1)
STD_TENSOR = torch.tensor(STD).view(1, -1, 1, 1)


def prepare(images, device, generator=None):
    """A batch of uint8 images as the model's input on the device: rescaled, augmented
    when a random generator is given (training), normalised."""
    images = images.to(device, non_blocking=True).float() * RESCALE
    if generator is not None:
        images = augment(images, generator)
    # <NORMALIZE>
    return images


def resizing(size):
    """A DataLoader's collate_fn that resizes each batch of pixel arrays to `size` as
    Keras's tf.image.resize does (bilinear, half-pixel centres, no antialiasing), in
    float32."""

    def collate(examples):
        images, labels = default_collate(examples)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(
                images.float(), size=size, mode="bilinear", align_corners=False
            )
        return images, labels

    return collate


def make_loaders(
    splits, batch_size=BATCH_SIZE, seed=SEED, image_size=None, distributed=False
):
    """DataLoaders of NCHW images and int labels; the training one shuffles. Images
    come at the model's size (image_size x image_size when given): image files are
    read at it, arrays resized batch by batch. Under torchrun the spec's batch is the
    global one: each process takes its share of it, of the training examples (a
    DistributedSampler) and of the validation ones (every world-th). Preprocessing
    runs on the device, in prepare()."""
    rank, world = 0, 1
    if distributed:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if batch_size % world:
            raise DataError(
                f"the batch, {batch_size}, does not split evenly over {world} processes"
            )
        batch_size //= world
    # <VALIDATION>
    size = (image_size, image_size) if image_size else INPUT_SHAPE[:2]
    loaders = {}
    for name, (images, labels) in splits.items():
        pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        dataset = TensorDataset(pixels, torch.from_numpy(np.asarray(labels)))
        collate = resizing(size) if image_size else None
        training = name == "train"
        sampler = None
        if training and distributed:
            sampler = DistributedSampler(dataset, seed=seed)
        elif name == "val" and distributed:
            dataset = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
        loaders[name] = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=training and sampler is None,
            sampler=sampler,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=torch.cuda.is_available(),
        )
    return loaders


# --- Keras's callbacks, with Keras's rules.


class EarlyStopping:
    """Keras's EarlyStopping: stop after `patience` epochs without an improvement
    of more than `min_delta`; optionally restore the best weights at the end."""

    def __init__(self, monitor, mode, patience=0, min_delta=0.0, restore_best=False):
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best = min_delta, restore_best
        self.best, self.wait, self.best_state = None, 0, None

    def improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, model, logs):
        """True to stop training."""
        value = logs[self.monitor]
        if self.improved(value):
            self.best, self.wait = value, 0
            if self.restore_best:
                self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.wait += 1
        if self.wait >= self.patience:
            if is_main():
                epochs = "epoch" if self.wait == 1 else "epochs"
                stalled = f"{self.monitor} stalled for {self.wait} {epochs}"
                print(f"early stopping: {stalled}")
            return True
        return False

    def on_train_end(self, model):
        if self.best_state is not None:
            if is_main():
                print(f"restoring the best weights ({self.monitor} {self.best:.4f})")
            model.load_state_dict(self.best_state)


class ReduceLROnPlateau:
    """Keras's ReduceLROnPlateau: multiply the learning rate by `factor` after
    `patience` epochs without an improvement of more than `min_delta`, down to
    `min_lr`."""

    def __init__(
        self,
        optimizer,
        monitor,
        mode,
        factor=0.1,
        patience=10,
        min_lr=0.0,
        min_delta=1e-4,
    ):
        self.optimizer, self.monitor, self.mode = optimizer, monitor, mode
        self.factor, self.patience, self.min_lr = factor, patience, min_lr
        self.min_delta, self.best, self.wait = min_delta, None, 0

    def on_epoch_end(self, model, logs):
        value = logs[self.monitor]
        better = self.best is None or (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
        if better:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            for group in self.optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.factor, self.min_lr)
            rate = self.optimizer.param_groups[0]["lr"]
            if is_main():
                print(f"reducing the learning rate to {rate:.3g}")
            self.wait = 0
        return False

    def on_train_end(self, model):
        pass


class PhaseSchedule(torch.optim.lr_scheduler.LambdaLR):
    """A phase's learning-rate schedule, as one of its callbacks: a LambdaLR over base
    rates of 1 whose factor is learning_rate()'s rate (the Keras script's too) for each
    optimizer step, stepped after every optimizer step. Its position is saved and
    restored with the callbacks' counters (see ResumePoint)."""

    def __init__(self, optimizer, steps_per_epoch, epochs, kind, lr, **options):
        for group in optimizer.param_groups:
            group["lr"] = 1.0  # so that the factor is the rate
        rate = functools.partial(
            learning_rate,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            kind=kind,
            lr=lr,
            **options,
        )
        super().__init__(optimizer, rate)
        optimizer.register_step_post_hook(self.after_step)

    def after_step(self, optimizer, args, kwargs):
        self.step()

    def on_epoch_end(self, model, logs):
        return False

    def on_train_end(self, model):
        pass


class WeightAverage:
    """Keras's use_ema: a moving average of the phase's trainable weights, updated
    after every optimizer step (a step post-hook) as momentum * average + (1 -
    momentum) * weight, the first step's average being the weights themselves. When
    the phase ends the averages replace the weights, before the other callbacks'
    on_train_end (as Keras's fit does: EarlyStopping's restore_best then restores its
    best epoch's weights). The averages are saved and restored with the callbacks'
    counters (see ResumePoint)."""

    def __init__(self, optimizer, momentum):
        self.optimizer, self.momentum, self.averages = optimizer, momentum, None
        optimizer.register_step_post_hook(self.after_step)

    def weights(self):
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @torch.no_grad()
    def after_step(self, optimizer, args, kwargs):
        weights = self.weights()
        if self.averages is None:
            self.averages = [weight.detach().clone() for weight in weights]
            return
        if self.averages[0].device != weights[0].device:  # restored from resume.pt
            self.averages = [
                a.to(w.device) for a, w in zip(self.averages, weights, strict=True)
            ]
        for average, weight in zip(self.averages, weights, strict=True):
            average.mul_(self.momentum).add_(weight, alpha=1 - self.momentum)

    def on_epoch_end(self, model, logs):
        return False

    @torch.no_grad()
    def on_train_end(self, model):
        if self.averages is not None:
            for weight, average in zip(self.weights(), self.averages, strict=True):
                weight.copy_(average)


class Checkpoint:
    """Keras's ModelCheckpoint: save the weights when the monitored value improves."""

    def __init__(self, path, monitor, mode, save_best=True):
        self.path, self.monitor, self.mode = path, monitor, mode
        self.save_best, self.best = save_best, None

    def on_epoch_end(self, model, logs):
        value = logs[self.monitor]
        better = self.best is None or (
            value < self.best if self.mode == "min" else value > self.best
        )
        if (better or not self.save_best) and is_main():
            torch.save(model.state_dict(), self.path)
        if better:
            self.best = value
        return False

    def on_train_end(self, model):
        pass


# --- Training.


def data_loss(logits, targets, class_weight=None):
    """The loss on logits, per example, weighted by class as Keras weighs samples, then
    averaged over the batch."""
    losses = F.cross_entropy(logits, targets, reduction="none")
    if class_weight is not None:
        losses = losses * class_weight[class_labels(targets)]
    return losses.mean()


def class_labels(targets):
    """Each example's class: integer targets as they are; mixed ones (mixup, cutmix:
    class probabilities) their most weighted class, as Keras's accuracy and class
    weights read mixed labels."""
    if targets.ndim == 2 and targets.shape[1] > 1:
        return targets.argmax(1)
    if isinstance(targets, np.ndarray):
        return targets.reshape(-1)
    return targets.view(-1).long()


def l2_penalty(model):
    """What Keras's kernel_regularizer=L2(factor) adds to the loss:
    factor * sum(kernel ** 2)."""
    penalty = 0.0
    for name, factor in L2.items():
        # (_modules: a layer may be named like a method, `logits` or `train`)
        penalty = penalty + factor * model._modules[name].weight.square().sum()
    return penalty


def scores(probabilities, targets):
    """The spec's metrics over an epoch, named as Keras names them. `targets` are
    integers, or class probabilities where batches were mixed (mixup, cutmix): those
    go to the metrics as `mixed`, with their most weighted classes as `targets`."""
    mixed = targets if targets.ndim == 2 and targets.shape[1] > 1 else None
    targets = class_labels(targets)
    if probabilities.shape[1] == 1:
        predicted = (probabilities[:, 0] >= 0.5).astype(int)
    else:
        predicted = probabilities.argmax(axis=1)
    result = {}
    result["accuracy"] = metric_accuracy(probabilities, predicted, targets, mixed)
    return result


def set_trainable(model, frozen):
    """Freeze the named layers and unfreeze the rest. Frozen BatchNorm layers stay
    in eval mode during training (see run_epoch), as Keras runs them in inference
    mode."""
    for name, module in model.named_children():
        for parameter in module.parameters():
            parameter.requires_grad = name not in frozen


class KerasSGD(torch.optim.Optimizer):
    """Keras's SGD with momentum, whose velocity holds the learning rate (m = momentum
    * m - lr * g, then w += m, or with Nesterov w += momentum * m - lr * g).
    torch.optim.SGD keeps the rate out of its buffer (b = momentum * b + g, then
    w -= lr * b): the same step while the rate is constant, another under a schedule
    or reduce_lr."""

    def __init__(self, params, lr, momentum, nesterov=False):
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                gradient = weight.grad
                state = self.state[weight]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(weight)
                velocity = state["velocity"]
                velocity.mul_(momentum).sub_(lr * gradient)
                if group["nesterov"]:
                    weight.add_(momentum * velocity - lr * gradient)
                else:
                    weight.add_(velocity)


class KerasRMSprop(torch.optim.Optimizer):
    """Keras's RMSprop: the step lr * g / sqrt(v + epsilon), and a momentum over those
    steps. torch.optim.RMSprop divides by sqrt(v) + eps and keeps the rate out of its
    momentum, a different step wherever gradients are small (BatchNorm's)."""

    def __init__(self, params, lr, rho=0.9, momentum=0.0, epsilon=1e-7):
        defaults = {"lr": lr, "rho": rho, "momentum": momentum, "epsilon": epsilon}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, rho, momentum = group["lr"], group["rho"], group["momentum"]
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                gradient = weight.grad
                state = self.state[weight]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(weight)
                    state["momentum"] = torch.zeros_like(weight)
                velocity = state["velocity"]
                velocity.mul_(rho).add_((1 - rho) * gradient.square())
                increment = lr * gradient / torch.sqrt(velocity + group["epsilon"])
                if momentum:
                    state["momentum"].mul_(momentum).add_(increment)
                    weight.sub_(state["momentum"])
                else:
                    weight.sub_(increment)


def clip_by_global_norm(gradients, clip_norm):
    """Keras's clip_by_global_norm, in place: each gradient times clip_norm *
    min(1 / norm, 1 / clip_norm), where norm is all the gradients' together (NaN when
    the norm is not finite, as in Keras; clip_grad_norm_ divides by norm + 1e-6)."""
    norm = torch.stack([g.square().sum() for g in gradients]).sum().sqrt()
    scale = clip_norm * torch.minimum(1.0 / norm, norm.new_tensor(1.0 / clip_norm))
    scale = scale + (norm - norm)
    for gradient in gradients:
        gradient.mul_(scale)


def keras_optimizer_options(
    optimizer, weight_decay=0.0, clip_norm=None, clip_value=None
):
    """What Keras's optimizers do before their update, as a step pre-hook, in Keras's
    order: clip the gradients, by their global norm (clip_norm) or each value
    (clip_value), then decay the weights that have one, decoupled from the gradient:
    w becomes w - w * weight_decay * lr at the step's rate. (The weight_decay of
    PyTorch's SGD and RMSprop is L2, added to the gradient instead: the spec's l2=.)"""

    @torch.no_grad()
    def before_step(optimizer, args, kwargs):
        weights = [
            (p, group["lr"])
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        gradients = [p.grad for p, _ in weights]
        if clip_norm is not None and gradients:
            clip_by_global_norm(gradients, clip_norm)
        if clip_value is not None:
            for gradient in gradients:
                gradient.clamp_(-clip_value, clip_value)
        if weight_decay:
            for weight, lr in weights:
                weight.sub_(weight * weight_decay * lr)

    optimizer.register_step_pre_hook(before_step)


def run_epoch(
    net, logits_of, loader, device, optimizer=None, class_weight=None, generator=None
):
    """One pass over `loader`, training when an optimizer is given; `logits_of` is the
    network's logits as trained (possibly under DDP or torch.compile). Returns the loss
    (with L2, as Keras reports it) and the metrics, and the throughput."""
    training = optimizer is not None
    net.train(training)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            frozen = not any(p.requires_grad for p in module.parameters())
            if frozen:
                module.eval()
    total, count, correct, outputs, targets_seen = 0.0, 0, 0, [], []
    started = time.perf_counter()
    progress = tqdm(loader, "train" if training else "eval", leave=False, disable=None)
    weights = None
    if class_weight is not None:
        weights = torch.tensor(
            [class_weight.get(i, 1.0) for i in range(len(CLASS_NAMES))], device=device
        )
    for images, targets in progress:
        targets = targets.to(device, non_blocking=True)
        inputs = prepare(images, device, generator if training else None)
        # <MIX>
        with torch.set_grad_enabled(training), autocast(device):
            logits = logits_of(inputs)
            loss = data_loss(logits.float(), targets, weights) + l2_penalty(net)
        if training:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        total += loss.item() * len(targets)
        count += len(targets)
        with torch.no_grad():
            outputs.append(output_probabilities(logits.float()).cpu().numpy())
        targets_seen.append(targets.cpu().numpy())
        batch = outputs[-1]
        predicted = batch.argmax(1) if batch.shape[1] > 1 else batch[:, 0] >= 0.5
        correct += int((predicted == class_labels(targets_seen[-1])).sum())
        rate = count / (time.perf_counter() - started)
        progress.set_postfix(
            loss=f"{total / count:.4f}",
            accuracy=f"{correct / count:.4f}",
            images_per_s=f"{rate:.0f}",
        )
    probabilities, targets = np.concatenate(outputs), np.concatenate(targets_seen)
    rate = count / (time.perf_counter() - started)
    if torch.distributed.is_initialized():
        # Every process's share: the loss and metrics are the whole epoch's, the same
        # in every process, so that each one's callbacks decide alike.
        shares = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(
            shares, (total, count, probabilities, targets)
        )
        total, count = sum(s[0] for s in shares), sum(s[1] for s in shares)
        probabilities = np.concatenate([s[2] for s in shares])
        targets = np.concatenate([s[3] for s in shares])
    logs = {"loss": total / count, **scores(probabilities, targets)}
    return logs, rate


def train(
    model,
    loaders,
    output_dir,
    device,
    epochs=None,
    class_weight=None,
    logits_of=None,
    resume=None,
    tracking=None,
    seed=SEED,
):
    """Fit the model phase by phase: freeze, a new optimizer, the callbacks;
    `epochs` caps each phase. `logits_of` computes the logits as trained (default
    model.logits; DDP or torch.compile wrap it). `resume` carries on from where a
    run stopped (see ResumePoint); `tracking` reports each epoch (see Tracking);
    `seed` seeds each phase's augmentation. Returns the per-epoch history.
    """
    if logits_of is None:
        logits_of = model.logits
    if resume is None:
        resume = ResumePoint(Path(output_dir) / "resume.pt")
    if tracking is None:
        tracking = Tracking()
    history = []
    # <PHASES>
    return history


class ResumePoint:
    """Where a run is, saved to <output-dir>/resume.pt as each phase starts and after
    each of its epochs: the weights, the history, the optimizer and the callbacks of the
    phase under way, and the random generators. A run started with --resume carries on
    from it: the phases before the saved one are done, and that one carries on from its
    last saved epoch (to --epochs N in all, when given), drawing the same random numbers
    as a run that was never stopped."""

    # The generators that run on from phase to phase (the others are each phase's own).
    ACROSS_PHASES = ("loader",)

    def __init__(self, path, state=None):
        self.path, self.state = Path(path), state
        self.pending = state is not None  # to restore, into the first phase trained

    @classmethod
    def load(cls, path):
        path = Path(path)
        if not path.is_file():
            raise DataError(f"--resume: no {path} to carry on from")
        state = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(state.get("generators"), dict):
            raise DataError(f"--resume: {path} was saved by an older script")
        return cls(path, state)

    def progress(self, phase):
        """The epochs this phase has trained, and whether it is over: a phase before
        the one saved last, or that one stopped early."""
        if self.state is None:
            return [], False
        rows = [row for row in self.state["history"] if row["phase"] == phase]
        last = self.state["phase"] == phase
        return rows, bool(rows) and (not last or self.state["stopped"])

    def follow(self, phase, done, optimizer, callbacks, generators):
        """The phase under way, after `done` epochs of the phases before it: what the
        saves record and a restore sets. `generators`: {name: torch.Generator}."""
        self.phase, self.done, self.optimizer = phase, done, optimizer
        self.callbacks, self.generators = callbacks, generators

    def restore(self):
        """Carry on from the saved point in the first phase this run trains: all of it
        when the point is in this phase; when it ended the phase before, the random
        generators that run on across phases (the rest starts anew, as it would)."""
        self.pending = False
        state = self.state
        within = state["phase"] == self.phase
        if within:
            self.optimizer.load_state_dict(state["optimizer"])
            for callback, saved in zip(self.callbacks, state["callbacks"], strict=True):
                vars(callback).update(saved)
        for name, generator in self.generators.items():
            if within or name in self.ACROSS_PHASES:
                generator.set_state(state["generators"][name])
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])

    def save(self, net, history, stopped):
        """The phase's `history` so far, and whether it stopped early."""
        if not is_main():
            return
        earlier = self.state["history"][: self.done] if self.state else []
        self.state = {
            "phase": self.phase,
            "stopped": stopped,
            "history": [*earlier, *history],
            "model": net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "callbacks": [
                {k: v for k, v in vars(c).items() if k != "optimizer"}
                for c in self.callbacks
            ],
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
        }
        partial = self.path.with_suffix(".partial")
        torch.save(self.state, partial)
        os.replace(partial, self.path)  # a run stopped while saving keeps the last one


def fit_phase(
    model,
    loaders,
    optimizer,
    callbacks,
    phase,
    epochs,
    cap,
    device,
    class_weight,
    done,
    resume,
    tracking,
    seed=SEED,
):
    """Fit one phase for its `epochs` (at most `cap`, when given), continuing the epoch
    count from `done`, or from where `resume` says this phase stopped. Ctrl-C raises
    Interrupted, saying where."""
    net, logits_of = model
    history, over = resume.progress(phase)
    if over:
        return history
    generators = {
        "augment": torch.Generator(device=device).manual_seed(seed + done),
        "loader": loaders["train"].generator,
    }
    resume.follow(phase, done, optimizer, callbacks, generators)
    if resume.pending:
        resume.restore()
        if history:
            print(f"{phase}: carrying on after epoch {history[-1]['epoch']}")
    if not history:
        resume.save(net, history, False)  # the phase's start, to carry on from
    stopped = False
    first = epoch = done + len(history) + 1
    try:
        for epoch in range(first, done + min(epochs, cap or epochs) + 1):
            sampler = loaders["train"].sampler
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)  # a new order each epoch, as a shuffle has
            logs, rate = run_epoch(
                net,
                logits_of,
                loaders["train"],
                device,
                optimizer,
                class_weight,
                generators["augment"],
            )
            if "val" in loaders:
                # Each process its share, outside DistributedDataParallel, whose forward
                # would wait for the others' batches.
                distributed = torch.distributed.is_initialized()
                evaluated = net.logits if distributed else logits_of
                val_logs, _ = run_epoch(net, evaluated, loaders["val"], device)
                logs.update({f"val_{key}": value for key, value in val_logs.items()})
            logs["learning_rate"] = optimizer.param_groups[0]["lr"]
            summary = " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())
            if is_main():
                print(f"{phase} epoch {epoch}: {summary} - {rate:.0f} images/s")
            history.append({"phase": phase, "epoch": epoch, **logs})
            tracking.epoch(history[-1])
            stopped = any([callback.on_epoch_end(net, logs) for callback in callbacks])
            resume.save(net, history, stopped)
            if stopped:
                break
    except KeyboardInterrupt:
        raise Interrupted(phase, epoch) from None
    for callback in callbacks:
        callback.on_train_end(net)
    if torch.distributed.is_initialized() and history:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        how = "stopped early" if stopped else "ended"
        last = history[-1]["epoch"]
        print(f"rank {rank} of {world}: {phase} {how} after epoch {last}")
    if stopped or len(history) >= epochs:
        # Over: the next phase starts from here (the best weights, if restored). A phase
        # cut short by --epochs keeps its last epoch's state, to carry on from.
        resume.save(net, history, stopped)
    return history


# --- Evaluation.


def evaluate(model, loaders, output_dir, device):
    """Test loss, accuracy and the per-class report, in eval mode."""
    model.eval()
    losses, count, outputs, truth = 0.0, 0, [], []
    with torch.no_grad():
        for images, targets in loaders["test"]:
            targets = targets.to(device)
            inputs = prepare(images, device)
            with autocast(device):
                logits = model.logits(inputs).float()
            loss = data_loss(logits, targets) + l2_penalty(model)
            losses += loss.item() * len(targets)
            count += len(targets)
            outputs.append(output_probabilities(logits).cpu().numpy())
            truth.append(targets.cpu().numpy())
    probabilities = np.concatenate(outputs)
    y_true = np.concatenate(truth).ravel().astype(int)
    y_pred = np.argmax(probabilities, axis=1)
    labels = list(range(len(CLASS_NAMES)))
    test = {"loss": losses / count, "accuracy": float(accuracy_score(y_true, y_pred))}
    # <EXTRA>
    test["report"] = classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=CLASS_NAMES,
        output_dict=True,
        zero_division=0,
    )
    # <OUTPUTS>
    return test


# --- Weight files, and a backbone's Keras weights.


def export_weights(model, path):
    """Save the weights in cnnspec's backend-neutral layout, which is this model's own
    state dict without BatchNorm's step counters."""
    tensors = {
        key: value.detach().float().contiguous().cpu()
        for key, value in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    saved_readable(lambda partial: save_file(tensors, str(partial)), path)


def load_weights(model, path):
    """Load weights saved in cnnspec's layout (by this script or another backend's)."""
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"weights do not fit: missing {missing}, extra {unexpected}")


def init_weights(model, path):
    """Start from the weights in `path` (--init-weights), checked against the model's
    tensors first."""
    needed = {
        key: tuple(value.shape)
        for key, value in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    keys = weights_to_load(path, needed)
    tensors = load_file(str(path))
    model.load_state_dict({key: tensors[key] for key in keys}, strict=False)
    print(f"weights from {path}")


def keras_weights_file(weights):
    """The Keras .h5 file behind --weights. For `imagenet`, keras.applications' own
    file in Keras's cache ($KERAS_HOME or ~/.keras, then models/), downloaded once."""
    if weights != "imagenet":
        return Path(weights)
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    path = cache / KERAS_WEIGHTS_FILE
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"downloading {KERAS_WEIGHTS_URL}")
        partial = path.with_name(path.name + ".part")
        try:
            urllib.request.urlretrieve(KERAS_WEIGHTS_URL, partial)
        except OSError as error:
            raise DataError(
                f"cannot download {KERAS_WEIGHTS_URL} ({error}): "
                "pass --weights none, or the path of the file"
            ) from error
        partial.replace(path)
    return path


def keras_arrays(path):
    """[(layer, weight, index, array)] from a Keras .h5 weight file (keras.applications'
    format, as Keras wrote it before Keras 3: see keras_h5_arrays), or one line of
    error."""
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"cannot read Keras weights {path}: {error}") from error
    with file:
        found = keras_h5_arrays(file)
    if found is None:
        # Keras 3's .weights.h5 stores layers by position, not by name.
        raise DataError(
            f"{path} has no layer names: use keras.applications' .h5 file "
            "(what --weights imagenet downloads), not a Keras 3 .weights.h5"
        )
    return found


def load_backbone_weights(net, weights):
    """Copy Keras weights into the backbone by layer name, through WEIGHT_LAYOUT: each
    weight's place in the state dict and its layout. `none` keeps the initialisation."""
    if weights == "none":
        return
    path = keras_weights_file(weights)
    classes = {}
    for kind, names in BACKBONE_CLASSES.items():
        classes.update(dict.fromkeys(names.split(), kind))
    state = net.state_dict()
    loaded = {}
    for layer, variable, index, value in keras_arrays(path):
        if layer not in classes:
            raise DataError(f"{path} has weights for {layer}, which the model lacks")
        places = WEIGHT_LAYOUT[classes[layer]]
        # By the weight's name; a file that names them otherwise, by their order.
        suffix, layout = places.get(variable) or list(places.values())[index]
        key = f"{layer}.{suffix}"
        canonical = from_keras(value, layout, FLATTENED_FROM.get(layer))
        tensor = np.ascontiguousarray(canonical, dtype="float32")
        needed = tuple(state[key].shape) if key in state else None
        if needed != tensor.shape:
            raise DataError(
                f"{path}: {layer} holds {tensor.shape} for {variable}, "
                f"the model needs {needed}"
            )
        loaded[key] = torch.from_numpy(tensor)
    missing = set(classes) - {key.split(".")[0] for key in loaded}
    if missing:
        raise DataError(f"{path} has no weights for {len(missing)} backbone layers")
    net.load_state_dict(loaded, strict=False)
    print(f"backbone weights from {path}")


def torchvision_state(weights):
    """torchvision's state dict behind --weights: `imagenet` is its ImageNet checkpoint
    (downloaded once, into torch.hub's cache), a path a torch.save file or a
    .safetensors file."""
    try:
        if weights == "imagenet":
            return torch.hub.load_state_dict_from_url(
                TORCHVISION_URL, map_location="cpu"
            )
        if str(weights).endswith(".safetensors"):
            return load_file(str(weights))
        return torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        raise DataError(
            f"cannot read {weights} as a torchvision checkpoint: {error}"
        ) from error


def load_torchvision_weights(net, weights):
    """Copy a torchvision checkpoint into the backbone's layers (BACKBONE_LAYERS), each
    tensor from the key torchvision names it by. `none` keeps the initialisation."""
    if weights == "none":
        return
    layers = set(BACKBONE_LAYERS.split())
    state = net.state_dict()
    needed = {k: tuple(v.shape) for k, v in state.items() if k.split(".")[0] in layers}
    source = {k: v.numpy() for k, v in torchvision_state(weights).items()}
    tensors = torchvision_tensors(source, needed)
    net.load_state_dict(
        {k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False
    )
    print(f"{BACKBONE} weights from {weights}")


# --- Where the run is reported.


class Tracking:
    """Where the run is reported besides metrics.json: TensorBoard event files in
    `log_dir`, as keras.callbacks.TensorBoard writes them (training values in train/,
    validation values in validation/, each tagged epoch_<name>, the step counting epochs
    from 0), an MLflow run (see mlflow_run), and `epochs`, a file of one JSON line per
    epoch as it ends (metrics.json's history rows), for whatever watches the run."""

    def __init__(self, log_dir=None, mlflow=None, epochs=None):
        self.log_dir, self.mlflow, self.writers = log_dir, mlflow, {}
        self.epochs = epochs
        if log_dir is None:
            return
        # TensorBoard's writer loads TensorFlow, where it is installed, for file access
        # alone (seconds, and its log lines): its own stand-in does that for a folder,
        # which it takes when tensorboard.compat.notf can be imported.
        notf = "tensorboard.compat.notf"
        sys.modules.setdefault(notf, types.ModuleType(notf))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise DataError(
                "TensorBoard logging needs the tensorboard package: pip install "
                "tensorboard, or pass --no-tensorboard"
            ) from None
        for split in ("train", "validation"):
            self.writers[split] = SummaryWriter(Path(log_dir) / split)

    def graph(self, network, inputs):
        """The network's graph, traced in eval mode on `inputs`, for the Graphs tab."""
        if not self.writers:
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python values
                self.writers["train"].add_graph(Logits(network), inputs)
        except Exception as error:  # a network the tracer cannot follow
            print(f"TensorBoard: no graph ({type(error).__name__}: {error})")

    def epoch(self, row):
        """One epoch's values, as metrics.json records them."""
        if self.writers:
            step = row["epoch"] - 1
            values = {k: v for k, v in row.items() if k not in ("phase", "epoch")}
            values["phase"] = PHASES.index(row["phase"]) + 1
            for key, value in values.items():
                split = "validation" if key.startswith("val_") else "train"
                tag = f"epoch_{key.removeprefix('val_')}"
                self.writers[split].add_scalar(tag, value, step)
            for writer in self.writers.values():
                writer.flush()
        if self.mlflow is not None:
            self.mlflow.epoch(row)
        if self.epochs is not None:
            with open(self.epochs, "a") as stream:
                stream.write(json.dumps(row) + "\n")

    def finish(self, test, output_dir):
        """The test metrics and the artifacts, once they are written."""
        for writer in self.writers.values():
            writer.close()
        if self.mlflow is not None:
            self.mlflow.finish(test, output_dir)
        if self.log_dir is not None:
            print(f"TensorBoard: tensorboard --logdir {self.log_dir}")


# --- The run.


def is_main():
    """True in the process that reports and writes artifacts (rank 0 under torchrun)."""
    distributed = torch.distributed.is_initialized()
    return not distributed or torch.distributed.get_rank() == 0


def output_probabilities(logits):
    """What the model's forward returns, from its logits."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def autocast(device):
    """bf16 mixed precision on CUDA; full precision elsewhere."""
    enabled = device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def make_deterministic():
    """Bitwise-reproducible training: PyTorch's deterministic kernels (an error where an
    operation has none), cuDNN's without autotuning, and the fixed cuBLAS workspace
    that CUDA needs for them (set before CUDA starts)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def main(argv=None):
    """Train, evaluate and save. A problem with the data or the device is one line of
    error, and Ctrl-C one line that says how to carry on: never a traceback."""
    args = parse_args(argv)
    # The process that reports (rank 0 under torchrun) picks the folder and logs the
    # MLflow run; the others take the folder as given.
    reports = os.environ.get("RANK", "0") == "0"
    folder, created = Path(args.output_dir or DEFAULT_OUTPUT_DIR), False
    try:
        if reports:
            folder = run_folder(args, distributed="WORLD_SIZE" in os.environ)
            created = not folder.exists()
        args.output_dir = str(folder)
        with mlflow_run(args.mlflow if reports else None, "pytorch", args) as mlflow:
            run(args, mlflow)
    except DataError as error:
        if created:
            discard_unstarted(folder)
        sys.exit(f"error: {error}")
    except (Interrupted, KeyboardInterrupt) as stop:
        interrupted(stop, folder, created)


def run(args, mlflow=None):
    """Train, evaluate and write the artifacts; `mlflow` is the run to report to, if any
    (see mlflow_run)."""
    distributed = "WORLD_SIZE" in os.environ
    if args.device == "cuda" and not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
        raise DataError(
            f"--device cuda, but this PyTorch ({torch.__version__}, {built}) sees no "
            "GPU; use --device cpu, or auto to take a GPU when there is one"
        )
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    rank = 0
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        rank = torch.distributed.get_rank()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.deterministic:
        make_deterministic()
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.image_size and FIXED_INPUT_SIZE and args.image_size != INPUT_SHAPE[0]:
        raise DataError("--image-size: this model's flatten fixes its input size")
    output_dir = Path(args.output_dir)
    splits = load_data(args.data_dir)
    # <SPLIT>
    check_not_empty(splits)
    if args.subset is not None:
        splits = {
            name: subset(split, args.subset, args.seed)
            for name, split in splits.items()
        }
        check_not_empty(splits)
    # <CHECK_IMAGES>
    loaders = make_loaders(
        splits, args.batch_size, args.seed, args.image_size, distributed
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    network = build_model()
    # <BACKBONE>
    resume = ResumePoint(output_dir / RESUME)
    if args.resume:
        resume = ResumePoint.load(output_dir / RESUME)
        network.load_state_dict(resume.state["model"])
    elif args.init_weights:
        init_weights(network, args.init_weights)
    network = network.to(device)
    if device.type == "cuda":
        network = network.to(memory_format=torch.channels_last)
    logits_of = Logits(network)
    if distributed:
        logits_of = torch.nn.parallel.DistributedDataParallel(logits_of)
    if args.compile:
        logits_of = torch.compile(logits_of)
    # Counted as Keras and the spec count: BatchNorm's running statistics are weights
    # that are not trained (buffers here), its step counter is not a weight.
    weights = sum(p.numel() for p in network.parameters())
    statistics = sum(
        b.numel()
        for name, b in network.named_buffers()
        if not name.endswith("num_batches_tracked")
    )
    if distributed and rank == 0:
        processes = torch.distributed.get_world_size()
        print(f"DistributedDataParallel over {processes} processes")
    if rank == 0:
        total = f"{weights + statistics:,} parameters ({weights:,} trainable)"
        print(f"{SPEC_NAME}: {total} on {device}")
    tensorboard = output_dir / "tensorboard" if args.tensorboard and rank == 0 else None
    epochs = output_dir / "epochs.jsonl" if rank == 0 else None
    if epochs is not None:
        # The epochs saved so far: one that Ctrl-C cut short is trained (and reported)
        # again when the run resumes.
        saved = resume.state["history"] if args.resume else []
        epochs.write_text("".join(json.dumps(row) + "\n" for row in saved))
    tracking = Tracking(tensorboard, mlflow, epochs)
    size = (args.image_size,) * 2 if args.image_size else INPUT_SHAPE[:2]
    tracking.graph(network, torch.zeros(1, INPUT_SHAPE[2], *size, device=device))
    history = train(
        network,
        loaders,
        output_dir,
        device,
        epochs=args.epochs,
        # <CLASS_WEIGHT>
        logits_of=logits_of,
        resume=resume,
        tracking=tracking,
        seed=args.seed,
    )
    if rank == 0:
        test = evaluate(network, loaders, output_dir, device)
        # <CURVES>
        metrics = {"spec": SPEC_NAME, "backend": "pytorch", "history": history}
        metrics["test"] = test
        # <PREPROCESSING>
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        export_weights(network, output_dir / "weights.safetensors")
        torch.save(network.state_dict(), output_dir / "model.pt")
        tracking.finish(test, output_dir)
        print(f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f}")
        print(f"artifacts in {output_dir}")
    if distributed:
        torch.distributed.destroy_process_group()
