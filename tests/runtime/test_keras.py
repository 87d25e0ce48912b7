"""The Keras-specific code of the generated Keras scripts (cnnspec/runtime/keras.py), run as
the scripts run it: a strided depthwise convolution and TensorFlow's `same` padding, the
tf.data batches, freezing, the weights' (C, H, W) order after a flatten, a resume point saved
and restored, and the private-API fence (the versions it was tested with, one line of error
otherwise). The script's constants, and what a script defines from its spec (its
augmentation), are patched on the module where a function reads them. Tiny models on the
CPU: TensorFlow is imported once, here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from cnnspec.runtime import keras as rk  # noqa: E402
from cnnspec.runtime.common import DataError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_emitting_a_keras_script_imports_no_framework() -> None:
    # The backend reads cnnspec/runtime/keras.py as text.
    probe = (
        "import sys\n"
        "from cnnspec.compiler import compile_file\n"
        "from cnnspec.backends import keras\n"
        "spec = compile_file('specs/resnet18_cifar.cnn').spec\n"
        "assert 'class ResumePoint' in keras.emit(spec, 'resnet18_cifar.cnn')\n"
        "print(sorted(m for m in ('cnnspec.runtime.keras', 'tensorflow', 'keras', 'numpy',"
        " 'sklearn', 'safetensors') if m in sys.modules))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert found.strip() == "[]"


# --- Layer helpers


def test_a_strided_depthwise_convolution_is_the_stride_1_one_subsampled() -> None:
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 3)).astype("float32")
    strided = rk.StridedDepthwiseConv2D((3, 3), subsample=(2, 3), padding="same")
    y = strided(x)
    assert tuple(y.shape) == strided.compute_output_shape(x.shape) == (2, 4, 3, 3)
    full = layers.DepthwiseConv2D((3, 3), padding="same")
    full.build(x.shape)
    full.set_weights(strided.get_weights())
    np.testing.assert_allclose(np.asarray(y), np.asarray(full(x))[:, ::2, ::3], atol=1e-6)


def test_a_channel_shuffle_interleaves_the_groups_and_saves_them() -> None:
    x = np.arange(2 * 3 * 6, dtype="float32").reshape(1, 2, 3, 6)
    shuffle = rk.ChannelShuffle(2)
    y = np.asarray(shuffle(x))
    assert y.shape == x.shape and y[0, 1, 2].tolist() == x[0, 1, 2][[0, 3, 1, 4, 2, 5]].tolist()
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(shuffle))
    # By its registered name: a generated script loaded earlier in this process registers its
    # own copy of the class under the same name, and that copy is what comes back.
    assert type(again).__name__ == "ChannelShuffle" and again.groups == 2
    np.testing.assert_array_equal(np.asarray(again(x)), y)


@pytest.mark.parametrize(("size", "kernel", "stride"), [(7, 3, 2), (8, 3, 2), (5, 4, 1), (6, 1, 3)])
def test_same_padding_is_what_tensorflow_pads(size: int, kernel: int, stride: int) -> None:
    x = np.random.default_rng(1).normal(size=(1, size, size, 1)).astype("float32")
    w = np.random.default_rng(2).normal(size=(kernel, kernel, 1, 1)).astype("float32")
    pads = rk.same_padding(x, (kernel, kernel), (stride, stride))
    padded = np.pad(x, ((0, 0), *pads, (0, 0)))
    valid = tf.nn.conv2d(padded, w, stride, "VALID")
    np.testing.assert_allclose(valid, tf.nn.conv2d(x, w, stride, "SAME"), atol=1e-5)


# --- Data


def test_batches_are_rescaled_resized_and_augmented_in_training_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rk, "INPUT_SHAPE", (8, 8, 3))
    monkeypatch.setattr(rk, "RESCALE", 1 / 255)
    flip = layers.RandomFlip("horizontal", seed=0)
    monkeypatch.setattr(rk, "build_augmentation", lambda seed: keras.Sequential([flip]))
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (10, 8, 8, 3), dtype="uint8")
    splits = {"train": (images, np.arange(10) % 2), "test": (images, np.arange(10) % 2)}

    datasets = rk.make_datasets(splits, batch_size=4, seed=0)
    assert set(datasets) == {"train", "test"}
    test = [(np.asarray(x), np.asarray(y)) for x, y in datasets["test"]]
    assert [x.shape for x, _ in test] == [(4, 8, 8, 3), (4, 8, 8, 3), (2, 8, 8, 3)]
    np.testing.assert_allclose(np.concatenate([x for x, _ in test]), images / 255, atol=1e-6)
    assert np.concatenate([y for _, y in test]).tolist() == (np.arange(10) % 2).tolist()
    train = np.concatenate([np.asarray(x) for x, _ in datasets["train"]])
    assert train.shape == (10, 8, 8, 3) and train.min() >= 0.0 and train.max() <= 1.0

    resized = rk.make_datasets(splits, batch_size=4, seed=0, image_size=4)
    assert next(iter(resized["test"]))[0].shape == (4, 4, 4, 3)


# --- Training


def tiny_model() -> keras.Model:
    inputs = keras.Input(shape=(4,), name="image")
    x = layers.Dense(3, name="hidden")(inputs)
    x = layers.Activation("relu", name="hidden_act")(x)
    model = keras.Model(inputs, layers.Dense(2, name="out")(x), name="tiny")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def test_set_trainable_freezes_a_node_with_its_activation_and_pad_layers() -> None:
    model = tiny_model()
    rk.set_trainable(model, ["hidden"])
    trainable = {layer.name: layer.trainable for layer in model.layers}
    assert trainable == {"image": True, "hidden": False, "hidden_act": False, "out": True}
    rk.set_trainable(model, [])
    assert all(layer.trainable for layer in model.layers)


def test_a_resume_point_restores_weights_optimizer_and_counters(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(4).normal(size=(16, 4)).astype("float32")
    data = {"train": tf.data.Dataset.from_tensor_slices((x, x[:, :2])).batch(8)}
    model = tiny_model()
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=5)
    saved = rk.ResumePoint(tmp_path / "resume")
    # Two of the phase's three epochs (--epochs 2), as fit_phase trains them.
    history = rk.fit_phase(model, "train", 3, 2, data, [stop], None, 0, saved, rk.Tracking())
    assert [row["epoch"] for row in history] == [1, 2]
    assert {p.name for p in (tmp_path / "resume").iterdir()} >= set(rk.ResumePoint.FILES)
    state = json.loads((tmp_path / "resume" / "state.json").read_text())
    assert state["phase"] == "train" and not state["stopped"] and len(state["history"]) == 2

    loaded = rk.ResumePoint.load(tmp_path / "resume", tmp_path / "again")
    rows, over = loaded.progress("train")
    assert [row["epoch"] for row in rows] == [1, 2] and not over
    assert loaded.progress("another phase") == ([], False)
    other, other_stop = tiny_model(), keras.callbacks.EarlyStopping(monitor="loss", patience=5)
    other_stop.wait = 99
    loaded.follow(other, "train", 0, [other_stop], rows)
    loaded.restore()
    for mine, theirs in zip(other.weights, model.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs)
        )
    assert int(other.optimizer.iterations) == int(model.optimizer.iterations) == 4
    loaded.on_train_begin()  # after EarlyStopping reset its own counters
    assert other_stop.wait == stop.wait and other_stop.best == stop.best


def test_a_resume_point_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^--resume: no .*state\.json to carry on from$"):
        rk.ResumePoint.load(tmp_path)


# --- Weights in cnnspec's layout


def test_a_flattened_dense_kernel_is_saved_in_chw_order_and_loaded_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The conversion is cnnspec.runtime.rules' (tests/runtime/test_rules.py); the script
    # gives it each layer's flattened map from FLATTENED_FROM.
    from safetensors.numpy import load_file

    monkeypatch.setattr(rk, "FLATTENED_FROM", {"fc": (2, 3, 4)})
    places = {"kernel": ("weight", "dense"), "bias": ("bias", "vector")}
    monkeypatch.setattr(rk, "WEIGHT_LAYOUT", {"Dense": places})
    inputs = keras.Input((2, 3, 4))
    outputs = layers.Dense(5, name="fc")(layers.Flatten(name="flat")(inputs))
    model = keras.Model(inputs, outputs)
    kernel = np.arange(2 * 3 * 4 * 5, dtype="float32").reshape(24, 5)  # rows: (H, W, C)
    model.get_layer("fc").kernel.assign(kernel)
    path = tmp_path / "weights.safetensors"
    rk.export_weights(model, path)
    expected = kernel.reshape(2, 3, 4, 5).transpose(2, 0, 1, 3).reshape(24, 5).T
    np.testing.assert_array_equal(load_file(str(path))["fc.weight"], expected)
    model.get_layer("fc").kernel.assign(np.zeros_like(kernel))
    rk.load_weights(model, path)
    np.testing.assert_array_equal(np.asarray(model.get_layer("fc").kernel), kernel)


# --- Private API


def test_the_private_api_runs_under_the_tested_versions_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rk.check_private_api("anything", "Keras", "TensorFlow")  # the installed ones (constraints.txt)
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.raises(rk.UntestedVersion) as untested:
        rk.reset_layer_names()
    message = str(untested.value)
    assert message.startswith("Keras 3.99.0 is installed, but loading a backbone's weights")
    assert "\n" not in message and "keras==3.15.*" in message
    assert isinstance(untested.value, DataError)  # main() prints it as one line
    monkeypatch.setattr(keras, "__version__", rk.PRIVATE_API_TESTED["Keras"][-1] + ".7")
    monkeypatch.setattr(tf, "__version__", "2.0.0")
    with pytest.raises(
        rk.UntestedVersion, match=r"^TensorFlow 2\.0\.0 is installed, but --strategy"
    ):
        rk.across_workers(tiny_model())


def test_reset_layer_names_names_layers_as_a_fresh_session_does() -> None:
    layers.Dense(1), layers.Dense(1)
    assert layers.Dense(1).name != "dense"
    rk.reset_layer_names()
    assert layers.Dense(1).name == "dense"


def test_across_workers_averages_only_across_several_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from keras.src.backend.tensorflow import trainer

    monkeypatch.setattr(trainer, "reduce_per_replica", trainer.reduce_per_replica)
    model = tiny_model()
    rk.across_workers(model)
    assert model._distribute_strategy is None
    # Outside a multi-worker strategy (evaluate runs in the default one) Keras reduces.
    logs = {"loss": tf.constant(1.5)}
    reduced = trainer.reduce_per_replica(logs, tf.distribute.get_strategy(), "auto")
    assert float(reduced["loss"]) == 1.5
