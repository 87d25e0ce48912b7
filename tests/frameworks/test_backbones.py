"""Pretrained backbones: the library specs equal keras.applications layer by layer, the scripts
move Keras weight files into both frameworks by layer name, and the reference tutorial's chest
X-ray spec trains, verifies and exports."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")
pytest.importorskip("onnx")

import keras
import onnx
import torch

from cnnspec.backbones import BACKBONES
from tests.conftest import ROOT
from tests.frameworks.backbone_check import (
    assert_equals_keras_applications,
    assert_freezes_by_block,
    assert_verifies,
)
from tests.frameworks.scripts import (
    checked_spec,
    load_script,
    run_script,
    write_script,
    write_tiny_image_folders,
)
from tests.frameworks.test_keras_script import randomise_batchnorm
from tests.test_cli import no_traceback, run

pytestmark = pytest.mark.frameworks

PNEUMONIA = ROOT / "specs" / "pneumonia_vgg16.cnn"

# (backbone, input size, include_top, pooling): odd sizes exercise MobileNetV2's correct_pad.
CASES = [
    ("vgg16", 64, False, None),
    ("vgg19", 48, False, "max"),
    ("resnet50", 64, False, "avg"),
    ("resnet50", 224, True, None),
    ("mobilenet_v2", 97, False, None),
    ("mobilenet_v2", 224, True, None),
    ("resnet101", 64, False, "max"),
    ("resnet152", 224, True, None),
]


@pytest.mark.parametrize(("name", "size", "include_top", "pooling"), CASES)
def test_backbone_equals_keras_applications(
    name: str, size: int, include_top: bool, pooling: str | None
) -> None:
    assert_equals_keras_applications(name, size, include_top, pooling)


def test_resnet152_verifies_and_freezes_by_stage() -> None:
    assert_verifies("resnet152", 32)
    assert_freezes_by_block("resnet101", 32, "conv4")


def write_keras_weight_file(model: keras.Model, path: Path) -> None:
    """The HDF5 layout of keras.applications' weight files (what `weights=imagenet` downloads):
    a `layer_names` attribute, and per layer its `weight_names` (`block1_conv1/kernel:0`) and
    one dataset each; a model inside the model (ConvNeXt's stem) is one group holding its
    layers' weights (`convnext_tiny_stem_conv/kernel:0`)."""

    def owned(layer: keras.Layer) -> list[tuple[str, np.ndarray]]:
        if isinstance(layer, keras.Model):
            return [item for inner in layer.layers for item in owned(inner)]
        return [(f"{layer.name}/{weight.name}:0", np.asarray(weight)) for weight in layer.weights]

    with h5py.File(path, "w") as file:
        layers = [layer for layer in model.layers if layer.weights]
        file.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        file.attrs["backend"] = b"tensorflow"
        file.attrs["keras_version"] = b"2.2.4"
        for layer in layers:
            group = file.create_group(layer.name)
            weights = owned(layer)
            group.attrs["weight_names"] = [name.encode() for name, _ in weights]
            for name, value in weights:
                group.create_dataset(name, data=value)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_keras_weight_files_load_by_layer_name_in_both_scripts(name: str, tmp_path: Path) -> None:
    keras.backend.clear_session()
    network = getattr(keras.applications, BACKBONES[name].keras_class)
    source = network(include_top=False, weights=None, input_shape=(32, 32, 3))
    randomise_batchnorm(source, seed=1)
    weight_file = tmp_path / f"{name}_notop.h5"
    write_keras_weight_file(source, weight_file)

    spec = checked_spec(
        f"model t {{ input 32x32x3  backbone {name}(weights=none, pooling=avg)"
        "  head { dense(3, activation=softmax) } }\ndata { labels sparse }"
    )
    keras_script = load_script(write_script(spec, tmp_path, "keras"))
    model = keras_script.build_model()
    keras_script.load_backbone_weights(model, str(weight_file))
    for layer in (layer for layer in source.layers if layer.weights):
        for got, expected in zip(
            model.get_layer(layer.name).get_weights(), layer.get_weights(), strict=True
        ):
            np.testing.assert_array_equal(got, expected)

    torch_script = load_script(write_script(spec, tmp_path, "pytorch"))
    net = torch_script.build_model()
    torch_script.load_backbone_weights(net, str(weight_file))
    canonical = tmp_path / "keras.safetensors"
    keras_script.export_weights(model, canonical)
    from safetensors.numpy import load_file

    expected = load_file(str(canonical))
    state = net.state_dict()
    backbone = set(spec.model.backbone.nodes) if spec.model.backbone else set()
    compared = [key for key in expected if key.split(".")[0] in backbone]
    assert len(compared) == sum(len(layer.weights) for layer in source.layers)
    for key in compared:
        np.testing.assert_allclose(state[key].numpy(), expected[key], rtol=0, atol=1e-7)

    # The same network in both frameworks: with the head copied too, the outputs agree.
    torch_script.load_weights(net, canonical)
    net.eval()
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    np.testing.assert_allclose(got, np.asarray(model(x, training=False)), atol=1e-4)


def test_weights_imagenet_reads_keras_cache_and_refuses_foreign_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = checked_spec(
        "model t { input 32x32x3  backbone vgg16(pooling=avg)"
        "  head { dense(2, activation=softmax) } }\ndata { labels sparse }"
    )
    script = load_script(write_script(spec, tmp_path, "pytorch"))
    cached = tmp_path / "keras" / "models" / script.KERAS_WEIGHTS_FILE
    assert script.KERAS_WEIGHTS_FILE == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert script.KERAS_WEIGHTS_URL.endswith("/vgg16/" + script.KERAS_WEIGHTS_FILE)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert script.keras_weights_file("imagenet") == cached  # no download when cached

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as file:
        file.create_dataset("x", data=np.zeros(3))
    with pytest.raises(script.DataError, match="no layer names"):
        script.load_backbone_weights(script.build_model(), str(foreign))
    with pytest.raises(script.DataError, match="cannot read"):
        script.load_backbone_weights(script.build_model(), str(tmp_path / "missing.h5"))


def test_pneumonia_counts_per_phase_equal_keras(tmp_path: Path) -> None:
    spec = checked_spec(path=PNEUMONIA)
    script = load_script(write_script(spec, tmp_path, "keras"))
    model = script.build_model()
    assert model.count_params() == spec.model.params.total == 14_863_553
    backbone = [model.get_layer(name) for name in spec.model.backbone.nodes]
    assert sum(layer.count_params() for layer in backbone) == 14_714_688  # VGG16 without top
    expected = {"head": 148_353, "finetune": 7_227_777}
    assert [plan.phase.name for plan in spec.phases] == list(expected)
    for plan in spec.phases:
        script.set_trainable(model, plan.frozen)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert trainable == plan.trainable_params == expected[plan.phase.name]
    # block5 holds three convolutions (the tutorial's comment says four): the summary says so.
    assert spec.phases[1].unfrozen == ("block5_conv1", "block5_conv2", "block5_conv3")


@pytest.mark.parametrize("backend_name", ["keras", "pytorch"])
def test_pneumonia_script_runs_both_phases_on_xray_folders(
    backend_name: str, tmp_path: Path
) -> None:
    spec = checked_spec(path=PNEUMONIA)
    data = write_tiny_image_folders(tmp_path / "xrays", ("NORMAL", "PNEUMONIA"), size=72)
    script = write_script(spec, tmp_path, backend_name)
    out = tmp_path / "run"
    result = run_script(
        script,
        *("--data-dir", str(data), "--output-dir", str(out), "--epochs", "1"),
        *("--image-size", "64", "--weights", "none", "--batch-size", "8"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(row["phase"], row["epoch"]) for row in metrics["history"]] == [
        ("head", 1),
        ("finetune", 2),
    ]
    test = metrics["test"]
    assert 0.0 <= test["auc"] <= 1.0
    assert test["threshold"] == 0.3
    assert test["report"]["PNEUMONIA"]["support"] == 12
    assert {"roc.png", "confusion_matrix.png", "weights.safetensors"} <= {
        p.name for p in out.iterdir()
    }


def test_backbone_weights_error_is_one_line(tmp_path: Path) -> None:
    spec = checked_spec(path=PNEUMONIA)
    data = write_tiny_image_folders(tmp_path / "xrays", ("NORMAL", "PNEUMONIA"), size=72)
    script = write_script(spec, tmp_path, "pytorch")
    result = run_script(
        script,
        *("--data-dir", str(data), "--output-dir", str(tmp_path / "run")),
        *("--image-size", "64", "--weights", str(tmp_path / "nowhere.h5")),
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot read Keras weights")
    assert "Traceback" not in result.stderr


def test_pneumonia_exports_to_onnx_and_verifies(tmp_path: Path) -> None:
    target = tmp_path / "pneumonia.onnx"
    result = run("export", str(PNEUMONIA), "--image-size", "64", "-o", str(target))
    assert result.returncode == 0, result.stderr
    no_traceback(result)
    model = onnx.load(str(target))
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["cnnspec.input_size"] == "[64, 64, 3]"
    assert props["cnnspec.threshold"] == "0.3"
    verified = run("verify", str(PNEUMONIA), "--image-size", "64")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "equivalent: every pair agrees within the tolerance" in verified.stdout


def test_both_scripts_ask_for_the_same_imagenet_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MobileNetV2 has one ImageNet file per input size: the Keras script (through
    keras.applications) and the PyTorch script (its own constant) must want the same one."""
    from keras.src.applications import mobilenet_v2

    spec = checked_spec(path=ROOT / "specs" / "mobilenet_v2_transfer.cnn")
    torch_script = load_script(write_script(spec, tmp_path, "pytorch"))
    keras_script = load_script(write_script(spec, tmp_path, "keras"))
    asked: list[str] = []

    def offline(fname: str, *args: object, **kwargs: object) -> str:
        asked.append(fname)
        raise OSError("offline")

    monkeypatch.setattr(mobilenet_v2.file_utils, "get_file", offline)
    with pytest.raises(keras_script.DataError, match="cannot load MobileNetV2 weights"):
        keras_script.load_backbone_weights(keras_script.build_model(), "imagenet")
    assert asked == [torch_script.KERAS_WEIGHTS_FILE]
    assert torch_script.KERAS_WEIGHTS_FILE.endswith("_1.0_160_no_top.h5")
