"""The generated Keras scripts, built and run for real.

- `build_model()` of every shipped spec and example, and of 100 hypothesis-generated specs (the
  generator of tests/test_property.py), reports exactly the checker's total, trainable and
  non-trainable counts and the same output shape per node, and computes the same function as
  the independent Keras reference of tests/frameworks/keras_ref.py once it has its weights.
- `weights.safetensors` is in PyTorch's layout: loaded by name into an NCHW PyTorch network that
  flattens the PyTorch way, it gives the Keras model's outputs; and `load_weights` reads back
  exactly what `export_weights` wrote.
- End to end (subprocesses, as a user runs them): the CIFAR-10 script trains one epoch on a tiny
  archive of the standard layout that the test writes, and writes every artifact; the digits
  script trains on the real bundled digits to a test accuracy of at least 0.95; a missing
  archive is one line of error; `--strategy mirrored` trains on two logical CPU devices.
"""

from __future__ import annotations

import json
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
from safetensors.numpy import load_file
from torch import nn

from cnnspec.ir import Graph
from tests.conftest import ROOT, SPECS
from tests.frameworks.keras_ref import build_keras, multi_head_weights
from tests.frameworks.scripts import (
    checked_spec,
    load_script,
    run_mirrored,
    run_script,
    shipped_spec,
    tensorflow_noise,
    write_script,
    write_tiny_cifar10,
    write_tiny_image_folders,
)
from tests.frameworks.torch_ref import build_torch
from tests.fuzzing import examples
from tests.test_framework_counts import keras_mismatches, onednn_blind_spots
from tests.test_property import Case, checked, specs

pytestmark = pytest.mark.frameworks

SOURCES = [*SPECS, ROOT / "examples" / "staged_finetune.cnn"]


def randomise_batchnorm(model: keras.Model, seed: int) -> None:
    """Give every BatchNormalization non-trivial statistics, so its settings matter."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.weights[0].shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, shape),
                    rng.normal(0, 0.5, shape),
                    rng.normal(0, 0.5, shape),
                    rng.uniform(0.5, 2.0, shape),
                ]
            )


def output_differences(graph: Graph, generated: keras.Model, seed: int = 0) -> list[str]:
    """Copy the generated model's weights into the reference model layer by layer, then compare
    both models' outputs on one random batch (inference mode)."""
    reference = build_keras(graph)
    randomise_batchnorm(generated, seed)
    for node in graph.nodes:
        weights = generated.get_layer(node.name).get_weights()
        if node.kind == "attention":  # the reference is keras.layers.MultiHeadAttention
            weights = multi_head_weights(weights, node.layer.heads)  # type: ignore[attr-defined]
        if weights:
            reference.get_layer(node.name).set_weights(weights)
    if onednn_blind_spots(graph, reference):
        return []  # values there are not trustworthy on CPU; shapes and counts still compared
    assert graph.input_shape is not None
    x = np.random.default_rng(seed).normal(0, 1, (2, *graph.input_shape)).astype("float32")
    ours = np.asarray(generated(x, training=False))
    theirs = np.asarray(reference(x, training=False))
    if not np.allclose(ours, theirs, rtol=1e-4, atol=1e-5):
        return [f"outputs differ by up to {np.abs(ours - theirs).max()}"]
    return []


def generated_model(graph_source: Path | str, tmp_path: Path) -> tuple[Graph, ModuleType]:
    spec = (
        shipped_spec(graph_source) if isinstance(graph_source, Path) else checked_spec(graph_source)
    )
    module = load_script(write_script(spec, tmp_path))
    return spec.model, module


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_build_model_matches_the_checker(path: Path, tmp_path: Path) -> None:
    graph, module = generated_model(path, tmp_path)
    model = module.build_model()
    assert keras_mismatches(graph, model) == []
    assert output_differences(graph, model) == []


@settings(max_examples=examples(25))  # `make fuzz` runs 20 times as many, and the campaign
@given(specs())
def test_generated_models_match_the_checker(case: Case) -> None:
    graph = checked(case)
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        _, module = generated_model(case.text, Path(directory))
    keras.backend.clear_session()
    model = module.build_model()
    assert keras_mismatches(graph, model) == [], case
    assert output_differences(graph, model) == [], case


# ---- the canonical weight layout ------------------------------------------------------------


def load_canonical_into_torch(graph: Graph, tensors: dict[str, np.ndarray]) -> nn.Module:
    """The reference PyTorch network with the canonical tensors loaded by name, and flatten done
    the PyTorch way (NCHW), as the PyTorch and ONNX backends will."""
    net = build_torch(graph)
    for node in graph.nodes:
        module = net.nodes[node.name]
        if node.kind == "flatten":
            net.nodes[node.name] = nn.Flatten()
            continue
        target = {
            "conv2d": lambda m: m.conv,
            "depthwise_conv2d": lambda m: m.conv,
            "dense": lambda m: m.linear,
        }.get(node.kind, lambda m: m)(module)
        for key in ("weight", "bias", "running_mean", "running_var"):
            name = f"{node.name}.{key}"
            if name in tensors:
                slot = getattr(target, key)
                assert tuple(slot.shape) == tensors[name].shape, name
                with torch.no_grad():
                    slot.copy_(torch.from_numpy(tensors[name]))
    return net.eval()


@pytest.mark.parametrize("stem", ["cifar10", "lenet5", "digits", "inception_digits"])
def test_exported_weights_are_in_pytorch_layout(stem: str, tmp_path: Path) -> None:
    graph, module = generated_model(ROOT / "specs" / f"{stem}.cnn", tmp_path)
    model = module.build_model()
    randomise_batchnorm(model, 1)
    path = tmp_path / "weights.safetensors"
    module.export_weights(model, path)
    tensors = load_file(str(path))
    assert all(t.dtype == np.float32 for t in tensors.values())

    net = load_canonical_into_torch(graph, tensors)
    assert graph.input_shape is not None
    x = np.random.default_rng(2).normal(0, 1, (3, *graph.input_shape)).astype("float32")
    expected = np.asarray(model(x, training=False))
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    fresh = module.build_model()
    module.load_weights(fresh, path)
    for before, after in zip(model.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))


# ---- end to end -----------------------------------------------------------------------------

ARTIFACTS = {
    "metrics.json",
    "weights.safetensors",
    "model.keras",
    "curves.png",
    "confusion_matrix.png",
    "classification_report.txt",
}


def script_for(stem: str, tmp_path: Path) -> Path:
    return write_script(checked_spec(path=ROOT / "specs" / f"{stem}.cnn"), tmp_path)


def test_cifar10_trains_one_epoch_on_a_tiny_archive(tmp_path: Path) -> None:
    write_tiny_cifar10(tmp_path / "data")
    script = script_for("cifar10", tmp_path)
    out = tmp_path / "run"
    result = run_script(
        script, "--data-dir", str(tmp_path / "data"), "--output-dir", str(out), "--epochs", "1"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name for p in out.iterdir()} >= ARTIFACTS
    metrics = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(metrics["history"][0])
    test = metrics["test"]
    assert {"loss", "accuracy", "report"} <= set(test)
    assert sum(test["report"][c]["support"] for c in module_classes(script)) == 20
    model = keras.saving.load_model(out / "model.keras")
    assert model.count_params() == 1_196_586
    assert "test accuracy" in result.stdout


def module_classes(script: Path) -> list[str]:
    return list(load_script(script).CLASS_NAMES)


def test_missing_cifar10_is_one_line(tmp_path: Path) -> None:
    script = script_for("cifar10", tmp_path)
    result = run_script(
        script, "--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no CIFAR-10 data at ")
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in line
    assert "cifar-10-python.tar.gz" in line


def test_digits_reaches_95_percent(tmp_path: Path) -> None:
    script = script_for("digits", tmp_path)
    out = tmp_path / "run"
    result = run_script(script, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]
    assert {p.name for p in out.iterdir()} >= ARTIFACTS
    report = (out / "classification_report.txt").read_text()
    assert "precision" in report and "9" in report
    # The user sees the script's own output and Keras's progress, not TensorFlow's start-up.
    assert tensorflow_noise(result.stderr) == [], result.stderr[-3000:]


@pytest.mark.library  # slow: `make test-library` runs it
def test_mirrored_strategy_on_two_cpu_devices(tmp_path: Path) -> None:
    script = script_for("digits", tmp_path)
    out = tmp_path / "run"
    result = run_mirrored(script, tmp_path, "--epochs", "1", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored over 2 devices" in result.stdout
    assert (out / "metrics.json").exists()


MULTIWORKER = """\
model workers {
  input 8x8x1
  conv2d(8, 3, padding=same, activation=relu)  maxpool(2)  flatten()  dense(10, activation=softmax)
}
data { source digits  rescale 1/16  labels sparse  validation 0.1 }
train { batch 64  epochs 1  optimizer adam(lr=0.01)  checkpoint(monitor=val_loss) }
evaluate { curves() }
"""


@pytest.mark.library  # slow: `make test-library` runs it
def test_two_workers_train_under_a_multiworker_strategy(tmp_path: Path) -> None:
    """Two processes on localhost, each with its own TF_CONFIG, finish an epoch on the digits
    under MultiWorkerMirroredStrategy: each takes half of every batch of 64 (4 steps of 256
    examples each), both end with the same weights, the chief writes the artifacts and its
    checkpoint, and the other worker writes to a temporary folder that is gone at the end."""
    import os
    import re
    import subprocess
    import sys

    from tests.frameworks.scripts import free_port

    script = write_script(checked_spec(MULTIWORKER), tmp_path)
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    workers = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        environment = {**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONHASHSEED": "0"}
        command = [sys.executable, str(script), "--strategy", "multiworker", "--subset", "256"]
        workers.append(
            subprocess.Popen(
                [*command, "--output-dir", str(tmp_path / "run"), "--no-tensorboard"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environment,
            )
        )
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    chief, other = (stdout for stdout, _ in outputs)
    assert "multi-worker over 2 replicas" in chief and "multi-worker over 2 replicas" in other
    assert "4/4" in chief  # 256 examples in global batches of 64
    accuracy = re.search(r"test accuracy \S+, loss \S+", chief)
    assert accuracy and accuracy.group(0) in other  # the same weights in both
    out = tmp_path / "run"
    assert {"metrics.json", "checkpoint.keras", "model.keras", "curves.png"} <= {
        path.name for path in out.iterdir()
    }
    scratch = re.search(r"not the chief: writing to (\S+),", other)
    assert scratch and not Path(scratch.group(1)).exists()
    assert f"artifacts in {out}" in chief and "artifacts in" not in other


def test_a_multiworker_strategy_without_tf_config_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    module = load_script(write_script(checked_spec(MULTIWORKER), tmp_path))
    with pytest.raises(SystemExit) as exited:
        module.main(["--strategy", "multiworker", "--output-dir", str(tmp_path / "run")])
    assert str(exited.value.code).startswith("error: --strategy multiworker needs TF_CONFIG")


def test_staged_finetune_runs_both_phases_on_image_folders(tmp_path: Path) -> None:
    """Directory data, binary labels, balanced class weights, two phases with freezing, a
    lowered decision threshold and the ROC plot, one epoch per phase."""
    spec = checked_spec(path=ROOT / "examples" / "staged_finetune.cnn")
    data = write_tiny_image_folders(tmp_path / "xrays", ("normal", "pneumonia"))
    script = write_script(spec, tmp_path)
    out = tmp_path / "run"
    result = run_script(script, "--data-dir", str(data), "--output-dir", str(out), "--epochs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(row["phase"], row["epoch"]) for row in metrics["history"]] == [
        ("head", 1),
        ("finetune", 2),
    ]
    assert {"auc", "val_auc"} <= set(metrics["history"][0])
    test = metrics["test"]
    assert test["threshold"] == 0.3
    assert 0.0 <= test["auc"] <= 1.0
    assert test["report"]["normal"]["support"] == 6
    assert test["report"]["pneumonia"]["support"] == 12
    assert {p.name for p in out.iterdir()} >= {"roc.png", "confusion_matrix.png", "model.keras"}

    module = load_script(script)
    weights = module.class_weights(np.array([0] * 6 + [1] * 12))
    assert weights == pytest.approx({0: 18 / 12, 1: 18 / 24})
