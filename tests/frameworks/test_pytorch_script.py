"""The generated PyTorch scripts, built and run for real, and their parity with the Keras ones.

Parity, for every shipped spec and example and for 100 hypothesis-generated specs (the generator
of tests/test_property.py: stride-2 `same` convolutions on even and odd sizes, flatten then
dense, batchnorm with non-default epsilon and momentum, every activation, residual blocks):

- `build_model()` has exactly the checker's trainable count as parameters and its
  non-trainable count as BatchNorm buffers, and every module's output has the checker's shape;
- the Keras script's `export_weights` writes `weights.safetensors`, the PyTorch script's
  `load_weights` reads it, and in eval mode both models give the same outputs on the same
  inputs within 1e-4 (absolute, float32). Specs where oneDNN miscomputes on CPU (see
  tests/test_framework_counts.py, `onednn_blind_spots`) compare shapes and counts only.

Training semantics: from the same weights, on the same batch, with dropout and augmentation
off and L2 on, an Adam step gives the same loss in both frameworks within 1e-4 (CIFAR-10 and a
smooth network), and four steps of SGD with Nesterov momentum on the smooth network give the
same four losses, so the gradients and updates agree too (see SMOOTH for why smooth).

End to end: the digits script trains to a test accuracy of at least 0.95; the CIFAR-10 script
trains one epoch on a tiny archive and writes every artifact, with the same metrics.json keys
as the Keras script; the script runs unchanged under torchrun with two CPU processes (gloo).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("hypothesis")

import keras
import torch
from hypothesis import given, settings

from cnnspec.ir import Graph, Spec
from tests.conftest import ROOT, SPECS
from tests.frameworks.scripts import (
    checked_spec,
    free_port,
    load_script,
    run_script,
    shipped_spec,
    write_script,
    write_tiny_cifar10,
    write_tiny_image_folders,
)
from tests.frameworks.test_keras_script import randomise_batchnorm
from tests.fuzzing import examples
from tests.test_framework_counts import onednn_blind_spots
from tests.test_property import Case, checked, specs

pytestmark = pytest.mark.frameworks

SOURCES = [*SPECS, ROOT / "examples" / "staged_finetune.cnn"]


def both_scripts(spec: Spec, directory: Path) -> tuple[ModuleType, ModuleType]:
    keras_module = load_script(write_script(spec, directory, "keras"))
    torch_module = load_script(write_script(spec, directory, "pytorch"))
    return keras_module, torch_module


def shape_mismatches(graph: Graph, net: torch.nn.Module) -> list[str]:
    """Where the PyTorch model's counts or per-module output shapes differ from the checker's."""
    found = []
    total = graph.params
    parameters = sum(p.numel() for p in net.parameters())
    buffers = sum(
        b.numel() for k, b in net.named_buffers() if not k.endswith("num_batches_tracked")
    )
    if (parameters, buffers) != (total.trainable, total.non_trainable):
        found.append(f"counts: torch {(parameters, buffers)}, checker {total}")
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        module.register_forward_hook(
            # nn.MultiheadAttention returns (output, weights)
            lambda _m, _i, out, name=name: shapes.__setitem__(
                name, tuple((out[0] if isinstance(out, tuple) else out).shape[1:])
            )
        )
        for name, module in net.named_children()
    ]
    assert graph.input_shape is not None
    h, w, c = graph.input_shape
    net.eval()
    with torch.no_grad():
        output = net(torch.zeros(2, c, h, w))
    for hook in hooks:
        hook.remove()
    modules = dict(net.named_children())
    for node in graph.nodes:
        if node.name in shapes:
            got = shapes[node.name]
            # A Linear on a map runs channels-last (see Dense.torch), so its output is HWC.
            channels_last = isinstance(modules[node.name], torch.nn.Linear)
            hwc = (got[1], got[2], got[0]) if len(got) == 3 and not channels_last else got
            if node.kind == "patch_embed":  # the convolution; the forward makes it tokens
                hwc = (got[1] * got[2], got[0])
            if hwc != node.output_shape:
                found.append(f"{node.name}: torch {hwc}, checker {node.output_shape}")
    if tuple(output.shape[1:]) != tuple(graph.output_shape or ())[-1:] and len(output.shape) == 2:
        found.append(f"output: torch {tuple(output.shape)}, checker {graph.output_shape}")
    return found


def output_difference(spec: Spec, directory: Path, seed: int = 0) -> float | None:
    """Export the Keras model's weights, load them into the PyTorch model, and return the
    largest absolute difference of their outputs on one random batch (None where oneDNN's
    CPU blind spots make values untrustworthy)."""
    keras_module, torch_module = both_scripts(spec, directory)
    keras.backend.clear_session()
    model = keras_module.build_model()
    randomise_batchnorm(model, seed)
    if onednn_blind_spots(spec.model, model):
        return None
    path = directory / "weights.safetensors"
    keras_module.export_weights(model, path)
    net = torch_module.build_model()
    torch_module.load_weights(net, path)
    net.eval()
    assert spec.model.input_shape is not None
    x = np.random.default_rng(seed).normal(0, 1, (3, *spec.model.input_shape)).astype("float32")
    expected = np.asarray(model(x, training=False))
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max())


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_build_model_matches_the_checker_and_keras(path: Path, tmp_path: Path) -> None:
    spec = shipped_spec(path)
    net = load_script(write_script(spec, tmp_path, "pytorch")).build_model()
    assert shape_mismatches(spec.model, net) == []
    difference = output_difference(spec, tmp_path)
    assert difference is not None and difference <= 1e-4


@settings(max_examples=examples(30))  # `make fuzz` runs 20 times as many, and the campaign
@given(specs())
def test_generated_specs_mean_the_same_network(case: Case) -> None:
    graph = checked(case)
    spec = checked_spec(case.text)
    with tempfile.TemporaryDirectory() as directory:
        net = load_script(write_script(spec, Path(directory), "pytorch")).build_model()
        assert shape_mismatches(graph, net) == [], case
        difference = output_difference(spec, Path(directory))
    assert difference is None or difference <= 1e-4, (difference, case)


# ---- training semantics --------------------------------------------------------------------


# A network without kinks (tanh, average pooling): float32 rounding differs between the
# frameworks (TensorFlow's BatchNorm rounds ~10x more coarsely), and through a max-pooling
# near-tie or a ReLU at zero that can send a gradient to a neighbouring pixel; a smooth network
# keeps every step comparable. It still has what matters: `same` stride-2 convolutions, L2 on
# every kernel, BatchNorm with Keras's settings, flatten then dense, dropout (turned off).
SMOOTH = """
model smooth {
  input 17x17x3
  defaults conv2d(kernel=3, padding=same, activation=tanh, l2=1e-3)
  conv2d(8)  batchnorm()  conv2d(16, stride=2)  avgpool(2, padding=same)  dropout(0.25)
  conv2d(16, kernel=(2, 3), stride=2)  batchnorm(epsilon=1e-5, momentum=0.9)
  head { flatten()  dense(32, activation=tanh, l2=1e-3)  batchnorm()  dense(10, activation=softmax) }
}
data { labels sparse }
"""

OPTIMIZERS = {
    # Keras adds Adam's epsilon to sqrt(v) before bias correction, PyTorch after, so their
    # updates differ slightly where gradients are tiny: Adam's first loss (from the shared
    # weights) must agree; SGD's updates agree, so all its losses must.
    "adam": (
        lambda: keras.optimizers.Adam(learning_rate=1e-3),
        lambda params: torch.optim.Adam(params, lr=1e-3, eps=1e-7),
        1,
    ),
    "sgd": (
        lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
        lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
        4,
    ),
}


@pytest.mark.parametrize(
    ("optimizer", "source"), [("adam", "cifar10"), ("adam", "smooth"), ("sgd", "smooth")]
)
def test_training_steps_give_the_same_loss(optimizer: str, source: str, tmp_path: Path) -> None:
    make_keras, make_torch, steps = OPTIMIZERS[optimizer]
    if source == "cifar10":
        spec = checked_spec(path=ROOT / "specs" / "cifar10.cnn")  # L2 on every kernel
    else:
        spec = checked_spec(SMOOTH)
    keras_module, torch_module = both_scripts(spec, tmp_path)
    keras.utils.set_random_seed(0)
    model = keras_module.build_model()
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    path = tmp_path / "start.safetensors"
    keras_module.export_weights(model, path)
    net = torch_module.build_model()
    torch_module.load_weights(net, path)
    for module in net.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0

    assert spec.model.input_shape is not None
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (16, *spec.model.input_shape)).astype("float32")
    labels = rng.integers(0, 10, 16)
    model.compile(optimizer=make_keras(), loss=keras.losses.CategoricalCrossentropy())
    onehot = np.eye(10, dtype="float32")[labels]
    keras_losses = [float(model.train_on_batch(images, onehot)) for _ in range(steps)]

    torch_optimizer = make_torch(net.parameters())
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    targets = torch.from_numpy(labels)
    torch_losses = []
    net.train()
    for _ in range(steps):
        loss = torch_module.data_loss(net.logits(inputs), targets)
        loss = loss + torch_module.l2_penalty(net)
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()
        torch_losses.append(float(loss.detach()))
    assert keras_losses == pytest.approx(torch_losses, abs=1e-4)
    assert torch_losses[-1] < torch_losses[0] or steps == 1


# ---- end to end -----------------------------------------------------------------------------

ARTIFACTS = {
    "metrics.json",
    "weights.safetensors",
    "model.pt",
    "curves.png",
    "confusion_matrix.png",
    "classification_report.txt",
}


def script_for(stem: str, tmp_path: Path) -> Path:
    return write_script(checked_spec(path=ROOT / "specs" / f"{stem}.cnn"), tmp_path, "pytorch")


@pytest.mark.parametrize(
    "stem",
    [
        "digits",
        # 80 s of the 10 minutes `make test` may take: `make test-library` trains it.
        pytest.param("inception_digits", marks=pytest.mark.library),
    ],
)
def test_digits_reaches_95_percent(stem: str, tmp_path: Path) -> None:
    """The plain CNN, and the one of branches, concat and a squeeze-and-excitation gate."""
    out = tmp_path / "run"
    result = run_script(script_for(stem, tmp_path), "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]
    assert {p.name for p in out.iterdir()} >= ARTIFACTS


def test_cifar10_trains_one_epoch_on_a_tiny_archive(tmp_path: Path) -> None:
    write_tiny_cifar10(tmp_path / "data")
    out = tmp_path / "run"
    result = run_script(
        script_for("cifar10", tmp_path),
        *("--data-dir", str(tmp_path / "data"), "--output-dir", str(out), "--epochs", "1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= ARTIFACTS
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"] == "pytorch"
    row = metrics["history"][0]
    assert {"phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy"} <= set(row)
    assert {"loss", "accuracy", "report"} <= set(metrics["test"])
    state = torch.load(out / "model.pt")
    assert sum(v.numel() for k, v in state.items() if "num_batches" not in k) == 1_196_586


def test_missing_cifar10_is_one_line(tmp_path: Path) -> None:
    result = run_script(script_for("cifar10", tmp_path), "--data-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no CIFAR-10 data at ")


EARLY_STOPPED = """\
model dist {
  input 8x8x1
  conv2d(8, 3, padding=same, activation=relu)  maxpool(2)  flatten()  dense(10, activation=softmax)
}
data { source digits  rescale 1/16  labels sparse  validation 0.1 }
train {
  batch 64  epochs 20  optimizer adam(lr=0.01)
  early_stopping(monitor=val_loss, patience=1, min_delta=0.2)
}
"""


@pytest.mark.library  # slow: `make test-library` runs it
def test_two_nodes_reduce_their_metrics_and_stop_together(tmp_path: Path) -> None:
    """Two torchrun nodes of one process each on localhost (c10d rendezvous): the batch of 64
    is split 32 + 32, every rank's early stopping decides on the metrics all-reduced over
    both, so every rank stops after the same epoch, and the validation loss rank 0 records is
    the whole validation split's, as one process computes it from the final weights."""
    spec = checked_spec(EARLY_STOPPED)
    script = write_script(spec, tmp_path, "pytorch")
    out = tmp_path / "run"
    port = free_port()

    def command(host: bool) -> list[str]:
        # One node hosts the rendezvous store and the other connects: left to torchrun's
        # guess, both may try to host it on one machine, and one run in a few hung.
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=1",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint=localhost:{port}",
            "--rdzv_id=cnnspec-test",
            f"--rdzv_conf=is_host={int(host)}",
            str(script),
            *("--output-dir", str(out), "--device", "cpu", "--no-tensorboard"),
        ]

    nodes = [
        subprocess.Popen(command(host), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for host in (True, False)
    ]
    try:
        results = [node.communicate(timeout=240) for node in nodes]
    except subprocess.TimeoutExpired:
        for node in nodes:
            node.kill()
        tails = [node.communicate()[1][-2000:] for node in nodes]
        raise AssertionError(f"the two nodes did not finish in 240 s: {tails}") from None
    for node, (_, stderr) in zip(nodes, results, strict=True):
        assert node.returncode == 0, stderr[-3000:]
    stdout = "".join(output for output, _ in results)
    metrics = json.loads((out / "metrics.json").read_text())
    last = metrics["history"][-1]["epoch"]
    assert last < 20  # early stopping decided
    for rank in (0, 1):
        assert f"rank {rank} of 2: train stopped early after epoch {last}" in stdout
    assert stdout.count("train epoch 1:") == 1  # printed by rank 0 only
    module = load_script(script)
    splits = module.split_validation(module.load_data(), module.VALIDATION_FRACTION, 0)
    loaders = module.make_loaders(splits, 64)
    network = module.build_model()
    module.load_weights(network, out / "weights.safetensors")
    whole, _ = module.run_epoch(network, network.logits, loaders["val"], torch.device("cpu"))
    assert whole["loss"] == pytest.approx(metrics["history"][-1]["val_loss"], rel=1e-5)
    assert whole["accuracy"] == pytest.approx(metrics["history"][-1]["val_accuracy"])


def test_staged_finetune_runs_both_phases_on_image_folders(tmp_path: Path) -> None:
    """Directory data read with Pillow, binary labels, balanced class weights, two phases with
    freezing (frozen layers keep their weights), the 0.3 threshold and the ROC plot."""
    spec = checked_spec(path=ROOT / "examples" / "staged_finetune.cnn")
    data = write_tiny_image_folders(tmp_path / "xrays", ("normal", "pneumonia"))
    script = write_script(spec, tmp_path, "pytorch")
    out = tmp_path / "run"
    result = run_script(script, "--data-dir", str(data), "--output-dir", str(out), "--epochs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(row["phase"], row["epoch"]) for row in metrics["history"]] == [
        ("head", 1),
        ("finetune", 2),
    ]
    assert {"auc", "val_auc"} <= set(metrics["history"][0])
    assert metrics["test"]["threshold"] == 0.3
    assert metrics["test"]["report"]["pneumonia"]["support"] == 12
    assert {p.name for p in out.iterdir()} >= {"roc.png", "confusion_matrix.png", "model.pt"}

    module = load_script(script)
    net = module.build_model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    module.set_trainable(net, ["block1_conv2d_1"])
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    images = torch.rand(4, 3, 64, 64)
    loss = module.data_loss(net.logits(images), torch.tensor([0, 1, 1, 0]))
    loss.backward()
    optimizer.step()
    after = net.state_dict()
    assert torch.equal(before["block1_conv2d_1.weight"], after["block1_conv2d_1.weight"])
    assert not torch.equal(before["block3_conv2d_1.weight"], after["block3_conv2d_1.weight"])
    assert module.class_weights(np.array([0] * 6 + [1] * 12)) == pytest.approx(
        {0: 18 / 12, 1: 18 / 24}
    )


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
    reason="torch.compile on CPU needs a C++ compiler",
)
@pytest.mark.library  # slow: `make test-library` runs it
def test_compile_flag_trains(tmp_path: Path) -> None:
    """`--compile` wraps the logits in torch.compile (about 40 s of compiling on 2 cores)."""
    out = tmp_path / "run"
    result = run_script(
        script_for("digits", tmp_path),
        *("--compile", "--epochs", "1", "--subset", "128", "--output-dir", str(out)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "weights.safetensors").exists()


EVERY_AUGMENTATION = (
    "augment { rotation(10)  shift(0.1)  flip(horizontal_and_vertical)  zoom(0.1)  shear(0.1)"
    "  brightness(0.2)  contrast(0.3)  fill(constant, value=0.5) }"
)


@pytest.mark.parametrize("backend_name", ["pytorch", "keras"])
def test_every_augmentation_transforms_a_batch(backend_name: str, tmp_path: Path) -> None:
    """All augmentation steps at once, in both scripts: the batch keeps its shape and pixel
    range, is changed, and the same seed gives the same batch."""
    from sklearn.datasets import load_digits

    text = (ROOT / "specs" / "digits.cnn").read_text("utf-8")
    text = text.replace("augment { shift(0.1)  fill(nearest) }", EVERY_AUGMENTATION)
    assert EVERY_AUGMENTATION in text
    module = load_script(write_script(checked_spec(text), tmp_path, backend_name))
    pixels = (load_digits().images[:16, np.newaxis] / 16).astype("float32")  # rescaled NCHW

    if backend_name == "pytorch":

        def augmented(seed: int) -> np.ndarray:
            generator = torch.Generator().manual_seed(seed)
            return module.augment(torch.from_numpy(pixels), generator).numpy()

        low, high = module.PIXEL_RANGE
    else:

        def augmented(seed: int) -> np.ndarray:
            layers = module.build_augmentation(seed)
            out = layers(pixels.transpose(0, 2, 3, 1), training=True)
            return np.asarray(out).transpose(0, 3, 1, 2)

        low, high = module.PIXEL_RANGE

    first, again, other = augmented(1), augmented(1), augmented(2)
    assert first.shape == pixels.shape
    assert low - 1e-4 <= first.min() and first.max() <= high + 1e-4
    assert np.abs(first - pixels).mean() > 0.05
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("labels", ["binary", "sparse"])
def test_epoch_metrics_are_keras_metrics(labels: str, tmp_path: Path) -> None:
    """The PyTorch script's metrics (one function per metric entry) report what Keras's own
    metric objects report on the same probabilities and labels (AUC: Keras interpolates over
    200 thresholds, sklearn is exact)."""
    units, activation = (1, "sigmoid") if labels == "binary" else (3, "softmax")
    spec = checked_spec(
        f"model m {{ input 4x4x1  flatten()  dense({units}, activation={activation}) }}\n"
        f"data {{ labels {labels} }}\ntrain {{ metrics(accuracy, auc, precision, recall) }}"
    )
    script = load_script(write_script(spec, tmp_path, "pytorch"))
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 2 if units == 1 else 3, 200)
    logits = rng.normal(0, 1, (200, units)) + (targets[:, None] if units == 1 else 0)
    if units == 1:
        probabilities = 1 / (1 + np.exp(-logits))
        truth = targets[:, None].astype("float32")
    else:
        logits[np.arange(200), targets] += 1.0
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        truth = np.eye(3)[targets].astype("float32")
    got = script.scores(probabilities, targets)
    keras_metrics = {
        "accuracy": keras.metrics.BinaryAccuracy()
        if units == 1
        else keras.metrics.CategoricalAccuracy(),
        "auc": keras.metrics.AUC(),
        "precision": keras.metrics.Precision(),
        "recall": keras.metrics.Recall(),
    }
    for name, metric in keras_metrics.items():
        metric.update_state(truth, probabilities.astype("float32"))
        expected = float(metric.result())
        assert got[name] == pytest.approx(expected, abs=1e-2 if name == "auc" else 1e-6), name


def test_a_layer_named_like_a_module_method_keeps_its_l2(tmp_path: Path) -> None:
    spec = checked_spec(
        "model m { input 8x8x1  conv2d(4, l2=0.5, name=train)  flatten()"
        "  dense(2, activation=softmax) }\ndata { labels sparse }"
    )
    script = load_script(write_script(spec, tmp_path, "pytorch"))
    net = script.build_model()
    net.train()  # still nn.Module's method
    kernel = net._modules["train"].weight
    expected = 0.5 * float(kernel.detach().square().sum())
    assert float(script.l2_penalty(net).detach()) == pytest.approx(expected, rel=1e-6)
