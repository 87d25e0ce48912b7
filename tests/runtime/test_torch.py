"""The PyTorch-specific code of the generated PyTorch scripts (cnnspec/runtime/torch.py), run
as the scripts run it: TensorFlow's `same` padding and the helper layers, the loaders'
batches, the device-side preprocessing, the losses and scores, freezing, Keras's callbacks,
a run carried on from its resume point as if it had never stopped, and weight files. The
script's constants, and what a script defines from its spec (the network, `augment`, the
metric functions), are patched on the module where a function reads them. Small tensors on
the CPU throughout."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402
from sklearn.metrics import precision_score, recall_score, roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402

from cnnspec.backends import pytorch as pytorch_backend  # noqa: E402
from cnnspec.backends.runtime import code  # noqa: E402
from cnnspec.layers.base import same_pads  # noqa: E402
from cnnspec.metrics import METRICS  # noqa: E402
from cnnspec.runtime import common  # noqa: E402
from cnnspec.runtime import torch as rt  # noqa: E402

CPU = torch.device("cpu")


def test_emitting_a_pytorch_script_imports_no_framework() -> None:
    # The backend reads cnnspec/runtime/torch.py as text: building a script imports none of
    # the libraries the copied code uses.
    probe = (
        "import sys\n"
        "from cnnspec.compiler import compile_file\n"
        "from cnnspec.backends import pytorch\n"
        "spec = compile_file('specs/resnet18_cifar.cnn').spec\n"
        "assert 'class Conv2dSame' in pytorch.emit(spec, 'resnet18_cifar.cnn')\n"
        "print(sorted(m for m in ('cnnspec.runtime.torch', 'torch', 'numpy', 'sklearn',"
        " 'safetensors', 'tqdm') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    assert found.strip() == "[]"


# --- TensorFlow's `same` padding


def tensorflow_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's rule as its documentation states it (tf.nn.convolution, "SAME")."""
    remainder = size % stride or stride
    total = max(kernel - remainder, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_padding_is_tensorflows_rule(stride: int) -> None:
    for size, kernel in itertools.product(range(1, 13), range(1, 8)):
        before, after = rt.same_pads(size, kernel, stride, 1)
        assert (before, after) == tensorflow_padding(size, kernel, stride), (size, kernel)
        assert after - before in (0, 1)  # the odd pixel goes after
        # The output has ceil(size / stride) positions, as TensorFlow's `same` promises.
        assert (size + before + after - kernel) // stride + 1 == math.ceil(size / stride)


def test_same_padding_dilates_the_kernel() -> None:
    for size, kernel, stride, dilation in itertools.product(
        range(1, 10), range(1, 5), range(1, 4), range(1, 4)
    ):
        extent = dilation * (kernel - 1) + 1
        padding = rt.same_pads(size, kernel, stride, dilation)
        assert padding == tensorflow_padding(size, extent, stride)
        # One rule with the checker's (cnnspec.layers.base), which sizes the layers.
        assert padding == same_pads(size, kernel, stride, dilation)


@pytest.mark.parametrize("size", [(7, 8), (8, 7), (5, 6)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [2, 3, 4])
def test_conv2d_same_matches_explicit_padding(
    size: tuple[int, int], stride: int, kernel: int
) -> None:
    torch.manual_seed(0)
    conv = rt.Conv2dSame(2, 3, kernel, stride)
    x = torch.randn(1, 2, *size)
    y = conv(x)
    assert tuple(y.shape[-2:]) == tuple(math.ceil(s / stride) for s in size)
    top, bottom = tensorflow_padding(size[0], kernel, stride)
    left, right = tensorflow_padding(size[1], kernel, stride)
    padded = torch.nn.functional.pad(x, (left, right, top, bottom))
    expected = torch.nn.functional.conv2d(padded, conv.weight, conv.bias, stride)
    torch.testing.assert_close(y, expected)
    if stride == 1:  # where PyTorch has `same` of its own, it agrees
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an even kernel's padded copy
            same = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding="same")
        torch.testing.assert_close(y, same)


def test_pad_same_pads_height_and_width_apart() -> None:
    x = torch.ones(1, 1, 5, 6)
    padded = rt.pad_same(x, (3, 2), (2, 2), value=-1.0)
    # height 5, kernel 3, stride 2: (1, 1); width 6, kernel 2, stride 2: none.
    assert padded.shape == (1, 1, 7, 6)
    assert (padded[0, 0, 0] == -1).all() and (padded[0, 0, -1] == -1).all()
    assert rt.pair(3) == (3, 3) and rt.pair((2, 1)) == (2, 1)


def test_max_pooling_padding_never_wins() -> None:
    x = -torch.arange(1.0, 26.0).view(1, 1, 5, 5)  # every value negative
    y = rt.MaxPool2dSame(2, 2)(x)
    assert y.shape == (1, 1, 3, 3)
    assert y.max() < 0  # a zero pad would have won the edge windows
    assert y[0, 0, 2, 2] == x[0, 0, 4, 4]  # the corner window holds one pixel


def test_average_pooling_leaves_the_padding_out() -> None:
    y = rt.AvgPool2dSame(3, 2)(torch.full((1, 2, 6, 5), 4.0))
    assert y.shape == (1, 2, 3, 3)
    torch.testing.assert_close(y, torch.full_like(y, 4.0))


# --- The helper layers


@pytest.mark.parametrize(("padding", "shape"), [("same", (5, 4)), (0, (4, 3))])
def test_separable_conv2d(padding: str | int, shape: tuple[int, int]) -> None:
    layer = rt.SeparableConv2d(3, 8, 3, stride=(2, 2), padding=padding, depth_multiplier=2)
    assert layer(torch.randn(2, 3, 9, 8)).shape == (2, 8, *shape)
    # As Keras counts it: a depthwise kernel without bias, then a 1x1 kernel and bias.
    counts = [p.numel() for p in layer.parameters()]
    assert counts == [3 * 2 * 3 * 3, 3 * 2 * 8, 8]


def test_partial_batchnorm_keeps_only_what_keras_keeps() -> None:
    scale_only = rt.partial_batchnorm(nn.BatchNorm2d, 4, scale=True, center=False)
    assert [name for name, _ in scale_only.named_parameters()] == ["weight"]
    shift_only = rt.partial_batchnorm(nn.BatchNorm2d, 4, scale=False, center=True, eps=1e-3)
    assert [name for name, _ in shift_only.named_parameters()] == ["bias"]
    assert shift_only.eps == 1e-3
    assert shift_only(torch.randn(2, 4, 3, 3)).shape == (2, 4, 3, 3)


def test_normalization_with_given_values() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]]).view(1, 2, 2, 1)
    y = rt.Normalization(2, mean=[1.0, 2.0], variance=[4.0, 0.0])(x)
    # Channel 0: (x - 1) / 2; channel 1: variance 0 divides by Keras's floor, 1e-7.
    torch.testing.assert_close(y[0, 0, :, 0], torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(y[0, 1, :, 0], torch.tensor([1.0, 4.0]) / 1e-7)
    assert not list(rt.Normalization(2, [0.0, 0.0], [1.0, 1.0]).buffers())


def test_normalization_holds_its_statistics() -> None:
    layer = rt.Normalization(3)
    assert sorted(dict(layer.named_buffers())) == ["count", "mean", "variance"]
    layer.mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
    layer.variance.copy_(torch.tensor([1.0, 4.0, 9.0]))
    y = layer(torch.tensor([2.0, 4.0, 6.0]).view(1, 3, 1, 1))
    torch.testing.assert_close(y.view(-1), torch.tensor([1.0, 1.0, 1.0]))


def test_rescale_channels() -> None:
    x = torch.ones(1, 3, 2, 2)
    y = rt.rescale_channels(x, [1.0, 2.0, 3.0], 0.5)
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([1.5, 2.5, 3.5]))


def test_drop_path_drops_whole_samples() -> None:
    layer = rt.DropPath(0.5)
    x = torch.ones(64, 2, 3, 3)
    layer.eval()
    assert layer(x) is x
    layer.train()
    torch.manual_seed(0)
    y = layer(x)
    per_sample = y.view(64, -1)
    kept = per_sample[:, 0] != 0
    assert 0 < int(kept.sum()) < 64
    assert (per_sample[kept] == 2.0).all() and (per_sample[~kept] == 0).all()
    assert rt.DropPath(0.0).train()(x) is x


def test_layer_scale() -> None:
    layer = rt.LayerScale(3, 0.1)
    assert layer.weight.shape == (3,)
    torch.testing.assert_close(layer(torch.ones(2, 3, 4, 4)), torch.full((2, 3, 4, 4), 0.1))


def test_logits_wraps_the_networks_logits() -> None:
    net = TinyNet().eval()
    x = torch.randn(2, 1, 2, 2)
    torch.testing.assert_close(rt.Logits(net)(x), net.logits(x))


# --- Augmentation


def test_augmentations_keep_shapes_and_the_pixel_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "PIXEL_RANGE", (0.0, 1.0))
    images = torch.rand(4, 3, 8, 6)
    generator = torch.Generator().manual_seed(0)
    for step in (
        lambda x: rt.random_rotation(x, generator, 30.0),
        lambda x: rt.random_translation(x, generator, 0.2, 0.1),
        lambda x: rt.random_zoom(x, generator, 0.2),
        lambda x: rt.random_shear(x, generator, 0.2),
        lambda x: rt.random_flip(x, generator, "horizontal_and_vertical"),
        lambda x: rt.random_brightness(x, generator, 0.5),
        lambda x: rt.random_contrast(x, generator, 0.5),
    ):
        out = step(images)
        assert out.shape == images.shape
        assert out.min() >= 0 and out.max() <= 1


def test_identity_maps_warp_nothing() -> None:
    images = torch.rand(2, 1, 5, 7)
    torch.testing.assert_close(rt.warp(images, rt.identity_maps(images)), images)


# --- Data


def arrays(count: int, size: int = 4, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`count` uint8 images, each filled with its index, and alternating labels."""
    images = np.repeat(np.arange(count, dtype="uint8"), size * size * channels)
    labels = np.arange(count) % 2
    return images.reshape(count, size, size, channels), labels


def test_loaders_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "INPUT_SHAPE", (4, 4, 1))
    splits = {"train": arrays(10), "test": arrays(6)}
    loaders = rt.make_loaders(splits, batch_size=4, seed=3)
    images, labels = next(iter(loaders["test"]))
    assert images.shape == (4, 1, 4, 4) and images.dtype == torch.uint8  # NCHW, as read
    assert labels.tolist() == [0, 1, 0, 1]
    assert images[:, 0, 0, 0].tolist() == [0, 1, 2, 3]  # the test set in its order
    assert [len(b[1]) for b in loaders["test"]] == [4, 2]
    order = [int(i) for batch, _ in loaders["train"] for i in batch[:, 0, 0, 0]]
    assert sorted(order) == list(range(10)) and order != list(range(10))  # shuffled
    again = rt.make_loaders(splits, batch_size=4, seed=3)
    assert order == [int(i) for batch, _ in again["train"] for i in batch[:, 0, 0, 0]]
    for batch, targets in loaders["train"]:  # pixels and labels stay together
        assert (batch[:, 0, 0, 0] % 2 == targets).all()


def test_loaders_resize_arrays_to_the_image_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "INPUT_SHAPE", (4, 4, 3))
    loaders = rt.make_loaders({"test": arrays(3, channels=3)}, batch_size=8, image_size=6)
    images, _ = next(iter(loaders["test"]))
    assert images.shape == (3, 3, 6, 6) and images.dtype == torch.float32
    torch.testing.assert_close(images[2], torch.full((3, 6, 6), 2.0))  # bilinear, flat
    # At the model's own size the arrays are not resized: no collate_fn at all.
    loaders = rt.make_loaders({"test": arrays(3, channels=3)}, batch_size=8)
    assert next(iter(loaders["test"]))[0].dtype == torch.uint8


def test_image_files_read_at_the_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(common, "INPUT_SHAPE", (4, 6, 3))
    path = tmp_path / "red.png"
    Image.new("RGB", (12, 8), (255, 0, 0)).save(path)
    dataset = rt.ImageFiles(np.array([str(path)]), np.array([1]), (4, 6))
    pixels, label = dataset[0]
    assert len(dataset) == 1 and label == 1
    assert pixels.shape == (3, 4, 6) and pixels.dtype == torch.uint8
    assert pixels[:, 0, 0].tolist() == [255, 0, 0]


def test_prepare_rescales_and_augments_only_in_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rt, "RESCALE", 1 / 255)
    monkeypatch.setattr(rt, "augment", lambda images, generator: -images, raising=False)
    images = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    torch.testing.assert_close(rt.prepare(images, CPU), torch.ones(2, 3, 2, 2))
    generator = torch.Generator().manual_seed(0)
    torch.testing.assert_close(rt.prepare(images, CPU, generator), -torch.ones(2, 3, 2, 2))


def test_prepare_normalises_as_the_script_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # A spec with `normalize` and BGR weights: prepare as the backend emits it, run here.
    namespace = dict(vars(rt))
    namespace.update(RESCALE=1.0, MEAN=(1.0, 2.0, 3.0), STD=(2.0, 2.0, 2.0))
    tensors = code("torch", "MEAN_TENSOR") + code("torch", "STD_TENSOR")
    flip = "images = images.flip(1)  # RGB to BGR, as the weights expect"
    normalize = "images = (images - MEAN_TENSOR.to(images.device)) / STD_TENSOR.to(images.device)"
    exec(tensors + code("torch", "prepare", NORMALIZE=f"{flip}\n{normalize}"), namespace)
    assert namespace["MEAN_TENSOR"].shape == (1, 3, 1, 1)
    rgb = torch.tensor([5, 7, 9], dtype=torch.uint8).view(1, 3, 1, 1)
    out = namespace["prepare"](rgb, CPU)
    torch.testing.assert_close(out.view(-1), torch.tensor([(9 - 1) / 2, 2.5, (5 - 3) / 2]))


# --- Losses and scores


def test_data_loss_weighs_classes_as_keras_weighs_samples() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0, 1, 1])
    plain = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(rt.data_loss(logits, targets), plain.mean())
    weights = torch.tensor([1.0, 3.0])
    expected = (plain * torch.tensor([1.0, 3.0, 3.0])).mean()  # averaged over the batch
    torch.testing.assert_close(rt.data_loss(logits, targets, weights), expected)


def test_l2_penalty_is_what_keras_adds(monkeypatch: pytest.MonkeyPatch) -> None:
    net = TinyNet()
    monkeypatch.setattr(rt, "L2", {"dense": 0.01})
    expected = 0.01 * net.dense.weight.square().sum()
    torch.testing.assert_close(rt.l2_penalty(net), expected)
    monkeypatch.setattr(rt, "L2", {})
    assert rt.l2_penalty(net) == 0.0


def accuracy(probabilities, predicted, targets, mixed=None):
    return float((predicted == targets).mean())


def test_scores_predict_by_threshold_or_argmax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt, "metric_accuracy", accuracy, raising=False)
    binary = np.array([[0.2], [0.5], [0.9], [0.4]])
    assert rt.scores(binary, np.array([[0], [1], [1], [1]])) == {"accuracy": 0.75}
    classes = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert rt.scores(classes, np.array([1, 0, 0])) == {"accuracy": pytest.approx(2 / 3)}


def emitted_scores(*names: str) -> dict:
    """`scores` and the metric functions as cnnspec.backends.pytorch writes them."""
    entries = tuple(METRICS[name]() for name in names)
    spec = SimpleNamespace(train=SimpleNamespace(metrics=SimpleNamespace(entries=entries)))
    text = pytorch_backend._Script.scores(SimpleNamespace(spec=spec))
    namespace = {**vars(rt), "roc_auc_score": roc_auc_score}
    exec(text, namespace)
    return namespace


def test_emitted_scores_are_keras_metrics() -> None:
    scores = emitted_scores("accuracy", "precision", "recall", "auc")["scores"]
    probabilities = np.array([[0.9], [0.6], [0.4], [0.2], [0.7], [0.1]])
    targets = np.array([1, 0, 1, 0, 1, 1])
    result = scores(probabilities, targets)
    predicted = (probabilities[:, 0] >= 0.5).astype(int)
    assert list(result) == ["accuracy", "precision", "recall", "auc"]
    assert result["accuracy"] == pytest.approx(3 / 6)
    assert result["precision"] == pytest.approx(precision_score(targets, predicted))
    assert result["recall"] == pytest.approx(recall_score(targets, predicted))
    assert result["auc"] == pytest.approx(roc_auc_score(targets, probabilities[:, 0]))


# --- Freezing


class TinyNet(nn.Module):
    """A network as the scripts' Net is: `logits`, and `forward` with the activation.
    Stochastic depth draws from torch's own generator in training."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.drop = rt.DropPath(0.25)
        self.dense = nn.Linear(8, 2)

    def logits(self, inputs):
        return self.dense(torch.flatten(self.drop(self.bn(self.conv(inputs))), 1))

    def forward(self, inputs):
        return torch.softmax(self.logits(inputs), dim=1)


def test_set_trainable_freezes_by_name() -> None:
    net = TinyNet()
    rt.set_trainable(net, ["conv", "bn"])
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"dense.weight", "dense.bias"}
    rt.set_trainable(net, [])
    assert all(p.requires_grad for p in net.parameters())


def test_a_frozen_batchnorm_trains_in_inference_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    patch_script(monkeypatch)
    torch.manual_seed(0)
    net = TinyNet()
    loader = rt.make_loaders({"train": arrays(8, size=2)}, batch_size=4)["train"]
    rt.set_trainable(net, ["bn"])
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    before = net.bn.running_mean.clone()
    logs, _ = rt.run_epoch(net, net.logits, loader, CPU, optimizer)
    torch.testing.assert_close(net.bn.running_mean, before)  # no statistics updated
    assert set(logs) == {"loss", "accuracy"}
    rt.set_trainable(net, [])
    rt.run_epoch(net, net.logits, loader, CPU, optimizer)
    assert not torch.equal(net.bn.running_mean, before)


# --- Callbacks


def test_early_stopping_counts_patience_and_restores_the_best() -> None:
    net = TinyNet()
    stop = rt.EarlyStopping("val_loss", "min", patience=2, min_delta=0.1, restore_best=True)
    best = {k: v.clone() for k, v in net.state_dict().items()}
    assert not stop.on_epoch_end(net, {"val_loss": 1.0})
    with torch.no_grad():
        net.dense.weight.add_(1.0)
    assert not stop.on_epoch_end(net, {"val_loss": 0.95})  # not better by min_delta
    assert stop.on_epoch_end(net, {"val_loss": 0.92})
    stop.on_train_end(net)
    torch.testing.assert_close(net.state_dict()["dense.weight"], best["dense.weight"])


def test_reduce_lr_on_plateau() -> None:
    optimizer = torch.optim.SGD(TinyNet().parameters(), lr=1.0)
    reduce = rt.ReduceLROnPlateau(optimizer, "accuracy", "max", factor=0.5, patience=1, min_lr=0.3)
    rates = []
    for value in (0.5, 0.5, 0.5, 0.6, 0.6):
        assert not reduce.on_epoch_end(None, {"accuracy": value})
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == [1.0, 0.5, 0.3, 0.3, 0.3]


# --- A run carried on from its resume point


def patch_script(monkeypatch: pytest.MonkeyPatch) -> None:
    """The script's constants and spec-defined functions for TinyNet on 2x2 images."""
    monkeypatch.setattr(rt, "INPUT_SHAPE", (2, 2, 1))
    monkeypatch.setattr(rt, "CLASS_NAMES", ["even", "odd"])
    monkeypatch.setattr(rt, "L2", {"dense": 1e-3})
    monkeypatch.setattr(rt, "RESCALE", 1 / 16)
    monkeypatch.setattr(rt, "metric_accuracy", accuracy, raising=False)
    # An augmentation that draws from the generator, so that its state matters.
    flip = lambda images, generator: rt.random_flip(images, generator, "horizontal")  # noqa: E731
    monkeypatch.setattr(rt, "augment", flip, raising=False)


class StopAt:
    """A callback that presses Ctrl-C as the epoch `target` names ends: (phase, epoch of
    the phase). The target is the class's, not saved with the callback's state."""

    target: tuple[str, int] | None = None

    def __init__(self, phase: str) -> None:
        self.phase, self.seen = phase, 0

    def on_epoch_end(self, model, logs):
        self.seen += 1
        if (self.phase, self.seen) == StopAt.target:
            raise KeyboardInterrupt
        return False

    def on_train_end(self, model):
        pass


PHASES = (("head", 2), ("all", 3))


def fit(output_dir: Path, stop: tuple[str, int] | None = None, resume: bool = False):
    """The generated train(): two phases of SGD with momentum, each with a plateau rule,
    from a fresh network, or from the resume point as main() carries on from it."""
    StopAt.target = stop
    output_dir.mkdir(exist_ok=True)
    torch.manual_seed(0)
    net = TinyNet()
    point = rt.ResumePoint(output_dir / "resume.pt")
    if resume:
        point = rt.ResumePoint.load(output_dir / "resume.pt")
        net.load_state_dict(point.state["model"])
    splits = {"train": arrays(12, size=2), "val": arrays(4, size=2)}
    loaders = rt.make_loaders(splits, batch_size=4, seed=0)
    history = []
    for phase, epochs in PHASES:
        rt.set_trainable(net, ["conv"] if phase == "head" else [])
        parameters = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(parameters, lr=0.1, momentum=0.9)
        plateau = rt.ReduceLROnPlateau(optimizer, "val_loss", "min", factor=0.5, patience=1)
        history += rt.fit_phase(
            (net, net.logits),
            loaders,
            optimizer,
            [plateau, StopAt(phase)],
            phase=phase,
            epochs=epochs,
            cap=None,
            device=CPU,
            class_weight=None,
            done=len(history),
            resume=point,
            tracking=rt.Tracking(),
            seed=0,
        )
    return net, history


@pytest.mark.parametrize("stop", [("head", 1), ("head", 2), ("all", 2)])
def test_a_resumed_run_is_the_run_never_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stop: tuple[str, int]
) -> None:
    patch_script(monkeypatch)
    whole, whole_history = fit(tmp_path / "whole")
    with pytest.raises(common.Interrupted) as raised:
        fit(tmp_path / "cut", stop=stop)
    assert (raised.value.phase, raised.value.epoch) == (stop[0], stop[1] + (stop[0] == "all") * 2)
    resumed, history = fit(tmp_path / "cut", resume=True)
    assert history == whole_history
    assert [(row["phase"], row["epoch"]) for row in history] == [
        ("head", 1),
        ("head", 2),
        ("all", 3),
        ("all", 4),
        ("all", 5),
    ]
    for key, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_the_resume_point_says_which_phases_are_over(tmp_path: Path) -> None:
    point = rt.ResumePoint(tmp_path / "resume.pt")
    assert point.progress("a") == ([], False)
    history = [{"phase": "a", "epoch": 1}, {"phase": "b", "epoch": 2}]
    point.state = {"phase": "b", "stopped": False, "history": history}
    assert point.progress("a") == ([history[0]], True)  # a phase before the saved one
    assert point.progress("b") == ([history[1]], False)  # carries on
    point.state["stopped"] = True
    assert point.progress("b") == ([history[1]], True)  # stopped early: over


def test_resume_refuses_what_it_cannot_carry_on_from(tmp_path: Path) -> None:
    with pytest.raises(common.DataError, match=r"no .* to carry on from"):
        rt.ResumePoint.load(tmp_path / "resume.pt")
    torch.save({"phase": "a"}, tmp_path / "old.pt")
    with pytest.raises(common.DataError, match="saved by an older script"):
        rt.ResumePoint.load(tmp_path / "old.pt")


# --- Weight files and tracking


def test_weights_round_trip(tmp_path: Path) -> None:
    net = TinyNet()
    rt.export_weights(net, tmp_path / "weights.safetensors")
    other = TinyNet()
    rt.load_weights(other, tmp_path / "weights.safetensors")
    for key, value in net.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(other.state_dict()[key], value), key
    with pytest.raises(ValueError, match="do not fit"):
        rt.load_weights(nn.Linear(2, 2), tmp_path / "weights.safetensors")


def test_tracking_writes_each_epoch_as_a_line(tmp_path: Path) -> None:
    tracking = rt.Tracking(epochs=tmp_path / "epochs.jsonl")
    rows = [{"phase": "a", "epoch": 1, "loss": 0.5}, {"phase": "a", "epoch": 2, "loss": 0.25}]
    for row in rows:
        tracking.epoch(row)
    lines = (tmp_path / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows


def test_output_probabilities() -> None:
    logits = torch.tensor([[0.0], [2.0]])
    torch.testing.assert_close(rt.output_probabilities(logits), torch.sigmoid(logits))
    logits = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(rt.output_probabilities(logits), torch.full((2, 2), 0.5))
