"""`cnnspec import` of Keras files, against the Keras models that wrote them.

Every model is built here with Keras (keras.applications with weights=None, or written by hand),
given random batchnorm statistics and biases, saved, and imported with `cnnspec import` as a user
runs it.
The import stands only if what it wrote compiles to a model with keras's trainable and
non-trainable counts, keeps every weighted Keras layer's name, and -- loaded into the generated
Keras and PyTorch scripts -- computes what the ORIGINAL Keras model computes on a random batch,
within 1e-4 (and Keras, PyTorch and onnxruntime agree with one another: `cnnspec verify`).

Nothing here reads the spec text itself (its layout is the importer's to choose): only the
compiled spec, the weights and the outputs.

- keras.applications: ResNet50 under a head, MobileNetV2 with its classifier and VGG16 with a
  flattening head by default (a bare feature extractor is refused in one line: a cnnspec model
  is a classifier); the other library families (`make test-library`) with their classifier and
  under a head.
- Hand-written models: inception branches with Concatenate and a residual, squeeze-and-excite
  gating, separable and depthwise convolutions, odd input sizes with strided 'same' padding,
  Flatten into Dense after a non-square map (the HWC/CHW trap, shown to matter), Dropout,
  Rescaling, Normalization (adapted and constant), layer norm, activations, a Sequential model,
  blocks split by an auto-named layer, values used past their joins (NASNet's cells reading
  the two cells before them, DPN's dual path), which the spec reads with `from`; Keras ops on a constant (MobileNetV3's hard_sigmoid),
  frozen layers (train { freeze ... }); and the legacy .h5 format.
- Honest refusals: unsupported layers (one line each, naming the layer), corrupt, foreign and
  missing files: exit status 1, one line, no traceback, nothing written.
- No clobbering: a hand-written or edited spec, or a foreign weight file, is kept without
  --force (and neither file is written); --force replaces; importing twice rewrites nothing.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")
pytest.importorskip("h5py")
pytest.importorskip("safetensors")

import keras
import torch
from keras import layers
from safetensors.numpy import load_file, save_file

from cnnspec.cli import main
from cnnspec.compiler import compile_file
from cnnspec.ir import Spec
from tests.conftest import ROOT
from tests.frameworks.scripts import load_script, write_script

pytestmark = pytest.mark.frameworks

ATOL = 1e-4


# ---- running the command ----------------------------------------------------------------------


def cnnspec(*args: str) -> tuple[int, str, str]:
    """`cnnspec ARGS...` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exit:
        main(list(args))
    code = exit.value.code
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


def cnnspec_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`cnnspec ARGS...` as a user runs it (its own process, its own stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "cnnspec", *args],
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def import_into(folder: Path, model: str, process: bool) -> tuple[int, str, str]:
    """`cnnspec import MODEL -o out.cnn` in `folder`: as a user runs it (its own process,
    which shows what reaches the terminal), or in this one (faster, and as strict: anything
    but an exit is an exception here)."""
    if process:
        result = cnnspec_process("import", model, "-o", "out.cnn", cwd=folder)
        return result.returncode, result.stdout, result.stderr
    return cnnspec("import", str(folder / model), "-o", str(folder / "out.cnn"))


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---- the Keras side ---------------------------------------------------------------------------


def randomise(model: keras.Model, seed: int) -> None:
    """Non-trivial values wherever Keras starts from constants (which would hide a value that
    is lost or misplaced on the way): batchnorm's gamma, beta, moving mean and (positive)
    moving variance, every bias, layer norm's gamma and beta, ConvNeXt's layer scales and an
    adapted Normalization's mean and variance; nested models included. Kernels keep their
    random initial values."""
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        if not layer.weights:
            continue
        values = []
        for variable in layer.weights:
            name = variable.path.rsplit("/", 1)[-1]
            shape = tuple(variable.shape)
            if name in ("moving_variance", "variance"):
                values.append(rng.uniform(0.5, 2.0, shape))
            elif name == "gamma" or type(layer).__name__ == "LayerScale":
                values.append(rng.uniform(0.5, 1.5, shape))
            elif name in ("beta", "moving_mean", "mean"):
                values.append(rng.normal(0.0, 0.5, shape))
            elif name == "bias":
                values.append(rng.normal(0.0, 0.2, shape))
            else:  # kernels, Normalization's sample count
                values.append(keras.ops.convert_to_numpy(variable))
        layer.set_weights(values)
        if isinstance(layer, layers.Normalization):
            layer.finalize_state()  # as adapt() and loading do: it computes with them now


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def keras_counts(model: keras.Model) -> tuple[int, int]:
    def size(variables: list) -> int:  # type: ignore[type-arg]
        return sum(int(np.prod(v.shape)) for v in variables)

    return size(model.trainable_weights), size(model.non_trainable_weights)


def calm_classifier(model: keras.Model, x: np.ndarray) -> None:
    """Scale the last Dense layer's kernel so that its logits are of order 1: a softmax over
    huge logits is one-hot, and one-hot outputs would hide any difference before it."""
    dense = [layer for layer in all_layers(model) if isinstance(layer, layers.Dense)]
    if not dense:
        return
    last = dense[-1]
    if last.get_config().get("activation") != "softmax":
        return
    kernel, *rest = last.get_weights()
    logits_of = keras.Model(model.inputs[0], last.input) if last in model.layers else None
    if logits_of is None:  # inside a nested model: the head sits on its output
        return
    features = np.asarray(logits_of(x, training=False))
    logits = features @ kernel
    spread = float(np.std(logits)) or 1.0
    last.set_weights([kernel / spread * 2.0, *rest])


def under_head(base: keras.Model, classes: int = 5, name: str = "transfer") -> keras.Model:
    """The transfer-learning pattern: a keras.applications model without its top, called as a
    layer, under global average pooling and a softmax classifier."""
    inputs = keras.Input(base.input_shape[1:], name="image")
    features = base(inputs, training=False)
    pooled = layers.GlobalAveragePooling2D(name="head_pool")(features)
    outputs = layers.Dense(classes, activation="softmax", name="head_dense")(pooled)
    return keras.Model(inputs, outputs, name=name)


# ---- the check --------------------------------------------------------------------------------


@dataclass
class Imported:
    spec: Spec
    weights: Path  # what `cnnspec import` wrote
    x: np.ndarray  # the random batch
    expected: np.ndarray  # the original Keras model's outputs on it


def pytorch_outputs(spec: Spec, weights: Path, x: np.ndarray, folder: Path) -> np.ndarray:
    """The generated PyTorch script's model, with `weights`, on the NHWC batch `x`."""
    script = load_script(write_script(spec, folder, "pytorch"))
    net = script.build_model()
    script.load_weights(net, weights)
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()


def import_and_compare(
    model: keras.Model,
    folder: Path,
    suffix: str = ".keras",
    seed: int = 0,
    verify: bool = True,
    keras_script: bool = True,
) -> Imported:
    """Save `model`, import it, and check counts, names and outputs against it."""
    randomise(model, seed)
    h, w, c = model.input_shape[1:]
    x = np.random.default_rng(seed + 1).normal(0.0, 1.0, (2, h, w, c)).astype(np.float32)
    calm_classifier(model, x)
    source = folder / f"{model.name}{suffix}"
    model.save(source)
    target = folder / "out" / "imported.cnn"
    target.parent.mkdir()
    code, out, err = cnnspec("import", str(source), "-o", str(target))
    assert code == 0, err
    assert "Traceback" not in err
    weights_path = target.with_suffix(".safetensors")
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "imported.cnn",
        "imported.safetensors",
    ]

    # What was written compiles on its own, without errors.
    compilation = compile_file(target)
    errors = [(d.code, d.message) for d in compilation.diagnostics.errors]
    assert compilation.ok and compilation.spec is not None, errors
    spec = compilation.spec
    graph = spec.model

    # (a) keras's counts.
    params = graph.params
    assert (params.trainable, params.non_trainable) == keras_counts(model)
    assert params.total == model.count_params()
    assert graph.input_shape == tuple(model.input_shape[1:])
    assert graph.output_shape == tuple(model.output_shape[1:])

    # (b) every Keras layer that holds weights is a node of the same name and size.
    nodes = {node.name: node for node in graph.nodes}
    weighted = [layer for layer in all_layers(model) if layer.weights]
    missing = [layer.name for layer in weighted if layer.name not in nodes]
    assert not missing, missing[:20]
    for layer in weighted:
        assert nodes[layer.name].params.total == layer.count_params(), layer.name

    # (c) the ORIGINAL model's outputs, from the imported weights in the generated scripts.
    weights = load_file(str(weights_path))
    assert sum(value.size for value in weights.values()) == params.total
    expected = np.asarray(model(x, training=False))
    assert np.all(np.isfinite(expected))
    if expected.ndim == 2 and np.allclose(expected.sum(axis=1), 1.0, atol=1e-4):
        # A softmax that is not one-hot: differences before it still show.
        assert expected.max() < 0.999, expected.max()

    got = pytorch_outputs(spec, weights_path, x, folder)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0, err_msg="pytorch vs keras model")

    if keras_script:
        keras_module = load_script(write_script(spec, folder, "keras"))
        rebuilt = keras_module.build_model()
        keras_module.load_weights(rebuilt, weights_path)
        again = np.asarray(rebuilt(x, training=False))
        np.testing.assert_allclose(
            again, expected, atol=ATOL, rtol=0, err_msg="generated keras vs keras model"
        )

    if verify:  # `cnnspec verify`: Keras, PyTorch and onnxruntime agree on these weights.
        code, out, err = cnnspec(
            "verify",
            str(target),
            "--weights",
            str(weights_path),
            "--batch",
            "2",
            "--tolerance",
            str(ATOL),
        )
        assert code == 0, out + err
    return Imported(spec, weights_path, x, expected)


def application(name: str, size: int, **kwargs: object) -> keras.Model:
    keras.backend.clear_session()
    network = getattr(keras.applications, name)
    return network(weights=None, input_shape=(size, size, 3), **kwargs)


# ---- keras.applications -----------------------------------------------------------------------


# ResNet50 and VGG16 run under `library`, for time: `make test` imports both (the readability
# test, with Keras's counts) and ResNet50 with its weights nested in resnet50_transfer's model
# (test_import_roundtrip_keras.py), and the flatten trap in hand-written models.
@pytest.mark.library
def test_resnet50_under_a_head(tmp_path: Path) -> None:
    """The original model's outputs in both generated scripts (ONNX too is left to the
    smaller models, for time)."""
    base = application("ResNet50", 64, include_top=False)
    import_and_compare(under_head(base), tmp_path, verify=False)


def test_mobilenet_v2_with_its_classifier(tmp_path: Path) -> None:
    """`cnnspec verify` on the imported files (Keras, PyTorch and onnxruntime agree) stands
    in for the generated Keras script's own comparison with the original, for time."""
    model = application("MobileNetV2", 96, include_top=True, classes=7, alpha=0.35)
    import_and_compare(model, tmp_path, keras_script=False)


@pytest.mark.library
def test_vgg16_without_top_and_a_flat_head(tmp_path: Path) -> None:
    """A head added to the base's own graph (not nested): Flatten of its 2x2x512 map (where
    HWC and CHW orders differ) into a softmax classifier."""
    keras.backend.clear_session()
    base = application("VGG16", 64, include_top=False)
    x = layers.Flatten(name="flat")(base.output)
    x = layers.Dense(6, activation="softmax", name="predictions")(x)
    import_and_compare(keras.Model(base.input, x, name="vgg16_head"), tmp_path)


def test_a_feature_extractor_alone_is_refused_in_one_line(tmp_path: Path) -> None:
    """A feature extractor on its own (include_top=False, no head) ends in a map, not class
    scores: a cnnspec model is a classifier, and the import says so in one line."""
    source = tmp_path / "features.keras"
    application("MobileNetV2", 32, include_top=False, alpha=0.35).save(source)
    code, _, err = cnnspec("import", str(source), "-o", str(tmp_path / "f.cnn"))
    assert code == 1
    assert "ends in features (1, 1, 1280), not class scores" in err, err
    assert "internal error" not in err and "Traceback" not in err
    assert not (tmp_path / "f.cnn").exists() and not (tmp_path / "f.safetensors").exists()


def library(*values: object, fails: str | None = None) -> object:
    marks = [pytest.mark.library]
    if fails is not None:
        marks.append(pytest.mark.xfail(reason=fails, strict=True))
    return pytest.param(*values, marks=marks, id=f"{values[0]}-{'top' if values[2] else 'head'}")


LIBRARY = [
    library("DenseNet121", 32, True),
    library("DenseNet121", 32, False),
    library("Xception", 71, True),
    library("Xception", 71, False),
    library("InceptionV3", 75, True),
    library("InceptionV3", 75, False),
    library("ResNet50V2", 32, True),
    library("ResNet50V2", 32, False),
    library("MobileNetV3Small", 32, True),
    library("MobileNetV3Small", 32, False),
    library("EfficientNetB0", 32, True),
    library("EfficientNetB0", 32, False),
    library("EfficientNetV2B0", 32, True),
    library("EfficientNetV2B0", 32, False),
    library("ConvNeXtTiny", 32, True),
    library("ConvNeXtTiny", 32, False),
    library("InceptionResNetV2", 75, True),
    library("InceptionResNetV2", 75, False),
    library("MobileNet", 32, True),
    library("MobileNet", 32, False),
    library("VGG19", 32, True),
    library("VGG19", 32, False),
    library("ResNet50", 32, True),
    library("MobileNetV2", 32, False),
    library("VGG16", 32, True),
]


@pytest.mark.parametrize(("name", "size", "top"), LIBRARY)
def test_keras_applications(name: str, size: int, top: bool, tmp_path: Path) -> None:
    if top:
        model = application(name, size, include_top=True, classes=4)
    else:
        model = under_head(application(name, size, include_top=False), name=f"{name}_head")
    import_and_compare(model, tmp_path, verify=False)


# ---- hand-written functional models -----------------------------------------------------------


def inception_like() -> keras.Model:
    inputs = keras.Input((20, 20, 3), name="pixels")
    stem = layers.Conv2D(12, 3, padding="same", activation="relu", name="stem")(inputs)
    one = layers.Conv2D(6, 1, activation="relu", name="b1_1x1")(stem)
    two = layers.Conv2D(5, 1, activation="relu", name="b2_reduce")(stem)
    two = layers.Conv2D(8, 3, padding="same", use_bias=False, name="b2_3x3")(two)
    two = layers.BatchNormalization(name="b2_bn")(two)
    two = layers.Activation("relu", name="b2_relu")(two)
    three = layers.Conv2D(4, 1, name="b3_reduce")(stem)
    three = layers.Conv2D(7, (1, 5), padding="same", name="b3_1x5")(three)
    three = layers.Conv2D(7, (5, 1), padding="same", activation="relu", name="b3_5x1")(three)
    four = layers.MaxPooling2D(3, strides=1, padding="same", name="b4_pool")(stem)
    four = layers.Conv2D(3, 1, activation="relu", name="b4_proj")(four)
    five = layers.AveragePooling2D(3, strides=1, padding="same", name="b5_pool")(stem)
    five = layers.Conv2D(2, 1, name="b5_proj")(five)
    mixed = layers.Concatenate(name="mixed")([one, two, three, four, five])
    # A residual around the block's projection.
    projected = layers.Conv2D(12, 1, name="mixed_proj")(mixed)
    added = layers.Add(name="mixed_add")([projected, stem])
    x = layers.MaxPooling2D(2, name="down")(added)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="inception_like")


def squeeze_excite() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inputs)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_squeeze")(x)
    s = layers.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    x = layers.Multiply(name="se_excite")([x, s])
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="after")(x)
    x = layers.BatchNormalization(name="after_bn")(x)
    x = layers.ReLU(name="after_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="squeeze_excite")


def separable_and_depthwise() -> keras.Model:
    inputs = keras.Input((24, 24, 3))
    x = layers.SeparableConv2D(
        16, 3, padding="same", depth_multiplier=2, activation="relu", name="sep1"
    )(inputs)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw1")(x)
    x = layers.BatchNormalization(name="dw1_bn")(x)
    x = layers.ReLU(max_value=6.0, name="dw1_relu6")(x)
    x = layers.SeparableConv2D(12, 3, padding="valid", use_bias=False, name="sep2")(x)
    x = layers.BatchNormalization(name="sep2_bn")(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="valid", name="dw2")(x)
    x = layers.Conv2D(10, 1, activation="swish", name="pointwise")(x)
    x = layers.GlobalMaxPooling2D(name="gmp")(x)
    outputs = layers.Dense(4, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="separable_depthwise")


def odd_sizes() -> keras.Model:
    """31x29: strided 'same' padding is uneven (more after than before), which a framework
    that pads symmetrically gets wrong on odd sizes."""
    inputs = keras.Input((31, 29, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="c1")(inputs)  # 16x15
    x = layers.BatchNormalization(name="c1_bn")(x)
    x = layers.Activation("relu", name="c1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="p1")(x)  # 8x8
    x = layers.Conv2D(8, 4, strides=2, padding="same", name="c2_even")(x)  # 4x4
    y = layers.AveragePooling2D(2, padding="same", name="p2")(x)  # 2x2
    y = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="c3")(y)  # 1x1
    z = layers.Conv2D(6, 5, strides=3, padding="same", name="c4")(x)  # 2x2
    z = layers.GlobalAveragePooling2D(name="z_gap")(z)
    y = layers.Flatten(name="y_flat")(y)
    x = layers.Concatenate(name="both")([y, z])
    outputs = layers.Dense(3, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="odd_sizes")


def odd_sizes_pools() -> keras.Model:
    """The same trap for pooling windows alone: 'same' max and average pools, stride 2 and 3,
    on 31x29, flattened (every position reaches the output)."""
    inputs = keras.Input((31, 29, 2))
    x = layers.Conv2D(4, 3, padding="same", name="c0")(inputs)
    a = layers.MaxPooling2D(2, padding="same", name="max2")(x)  # 16x15
    a = layers.AveragePooling2D(3, strides=3, padding="same", name="avg3")(a)  # 6x5
    b = layers.AveragePooling2D(3, strides=2, padding="same", name="avg2")(x)  # 16x15
    b = layers.MaxPooling2D(3, strides=3, padding="same", name="max3")(b)  # 6x5
    x = layers.Concatenate(name="pools")([a, b])
    x = layers.Flatten(name="flat")(x)
    outputs = layers.Dense(3, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="odd_pools")


def flatten_dense() -> keras.Model:
    """Flatten after a 6x5x8 map into Dense: Keras flattens HWC, PyTorch CHW, so the dense
    kernel's rows must be permuted on the way."""
    inputs = keras.Input((12, 10, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)  # 6x5x8
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.3, name="drop1")(x)
    x = layers.Dense(16, activation="relu", name="hidden")(x)
    x = layers.BatchNormalization(name="hidden_bn")(x)
    x = layers.Dropout(0.5, name="drop2")(x)
    outputs = layers.Dense(10, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="flatten_dense")


def sequential() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((14, 14, 1)),
            layers.Conv2D(6, 3, activation="relu", name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.MaxPooling2D(name="pool1"),
            layers.Conv2D(8, 3, activation="relu", name="conv2"),
            layers.Flatten(name="flat"),
            layers.Dense(10, activation="softmax", name="out"),
        ],
        name="sequential_small",
    )


def preprocessing_and_norms() -> keras.Model:
    """Rescaling, a held (adapted) Normalization and one with constants, layer norm, and the
    activations a layer or an Activation can name."""
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    x = layers.Normalization(name="adapted")(x)  # its mean and variance: weights
    x = layers.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.5, 0.5, 2.0], name="fixed")(x)
    x = layers.Conv2D(8, 3, padding="same", activation="gelu", name="c1")(x)
    x = layers.LayerNormalization(epsilon=1e-5, name="ln")(x)
    x = layers.LeakyReLU(negative_slope=0.1, name="leaky")(x)
    x = layers.Conv2D(8, 3, strides=2, activation="tanh", name="c2")(x)
    x = layers.ELU(name="elu")(x)
    x = layers.Conv2D(8, 1, activation="hard_swish", name="c3")(x)
    x = layers.Conv2D(8, 1, activation="elu", name="c4")(x)
    x = layers.Activation("sigmoid", name="gate")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(4, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="preprocessing_and_norms")


def split_blocks() -> keras.Model:
    """Blocks whose layers share a prefix (blk0_depthwise, blk0_project, ...) but are split by
    a ReLU Keras named itself (re_lu): MobileNetV3's layout."""
    inputs = keras.Input((32, 32, 8))
    x = inputs
    for index, filters in enumerate((8, 16, 24)):
        prefix = f"blk{index}"
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{prefix}_depthwise_pad")(x)
        x = layers.DepthwiseConv2D(
            3, strides=2, padding="valid", use_bias=False, name=f"{prefix}_depthwise"
        )(x)
        x = layers.BatchNormalization(name=f"{prefix}_depthwise_bn")(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_project")(x)
        x = layers.BatchNormalization(name=f"{prefix}_project_bn")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="split_blocks")


def nasnet_cells() -> keras.Model:
    """NASNet's cells: each reads the two cells before it, the one before that past the join
    that ends its branch (written with `from`)."""
    inputs = keras.Input((16, 16, 3))
    before = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    last = layers.Conv2D(8, 3, padding="same", name="stem2")(before)
    for index in range(3):
        p = f"cell{index}"
        a = layers.ReLU(name=f"{p}_relu_a")(last)
        a = layers.SeparableConv2D(8, 3, padding="same", name=f"{p}_sep_a")(a)
        b = layers.ReLU(name=f"{p}_relu_b")(before)
        b = layers.SeparableConv2D(8, 5, padding="same", name=f"{p}_sep_b")(b)
        first = layers.Add(name=f"{p}_add_1")([a, b])
        c = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{p}_avg")(before)
        second = layers.Add(name=f"{p}_add_2")([c, last])
        x = layers.Concatenate(name=f"{p}_concat")([first, second, last])
        x = layers.Conv2D(8, 1, name=f"{p}_proj")(x)
        x = layers.BatchNormalization(name=f"{p}_bn")(x)
        before, last = last, x
    x = layers.GlobalAveragePooling2D(name="gap")(last)
    outputs = layers.Dense(4, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="nasnet_cells")


def dual_path() -> keras.Model:
    """DPN's dual path: each block reads both paths, adds to the residual one and
    concatenates to the dense one, which the next block reads past that add's join."""
    inputs = keras.Input((12, 12, 3))
    residual = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    dense = layers.Conv2D(4, 1, name="stem_dense")(residual)
    for index in range(3):
        p = f"dp{index}"
        x = layers.Concatenate(name=f"{p}_in")([residual, dense])
        x = layers.BatchNormalization(name=f"{p}_bn")(x)
        x = layers.ReLU(name=f"{p}_relu")(x)
        x = layers.Conv2D(8, 3, padding="same", name=f"{p}_conv")(x)
        r = layers.Conv2D(8, 1, name=f"{p}_res")(x)
        d = layers.Conv2D(4, 1, name=f"{p}_dense")(x)
        residual = layers.Add(name=f"{p}_add")([residual, r])
        dense = layers.Concatenate(name=f"{p}_cat")([dense, d])
    x = layers.Concatenate(name="both")([residual, dense])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="dual_path")


HAND_WRITTEN: dict[str, Callable[[], keras.Model]] = {
    "inception_like": inception_like,
    "squeeze_excite": squeeze_excite,
    "separable_depthwise": separable_and_depthwise,
    "odd_sizes": odd_sizes,
    "odd_pools": odd_sizes_pools,
    "flatten_dense": flatten_dense,
    "sequential": sequential,
    "preprocessing_and_norms": preprocessing_and_norms,
    "split_blocks": split_blocks,
    "nasnet_cells": nasnet_cells,
    "dual_path": dual_path,
}


@pytest.mark.parametrize("build", HAND_WRITTEN.values(), ids=HAND_WRITTEN.keys())
def test_hand_written(build: Callable[[], keras.Model], tmp_path: Path) -> None:
    keras.backend.clear_session()
    import_and_compare(build(), tmp_path)


def hard_sigmoid_by_ops() -> keras.Model:
    """keras.applications' MobileNetV3 gating: Keras ops on a constant, `x + 3.0` and
    `x * (1 / 6)`, which the config records as Add and Multiply of ONE tensor (not the Add
    and Multiply layers of two)."""
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_squeeze")(x)
    s = layers.Conv2D(8, 1, name="se_expand")(s)
    s = layers.ReLU(6.0, name="se_relu6")(s + 3.0) * (1.0 / 6.0)
    x = layers.Multiply(name="se_excite")([x, s])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="hard_sigmoid_by_ops")


def test_keras_ops_on_a_constant(tmp_path: Path) -> None:
    keras.backend.clear_session()
    import_and_compare(hard_sigmoid_by_ops(), tmp_path)


@pytest.mark.parametrize("build", [flatten_dense, inception_like], ids=["flatten", "inception"])
def test_legacy_h5(build: Callable[[], keras.Model], tmp_path: Path) -> None:
    keras.backend.clear_session()
    import_and_compare(build(), tmp_path, suffix=".h5", verify=False)


def test_flatten_order_matters(tmp_path: Path) -> None:
    """The HWC/CHW check can fail: with the dense kernel's columns left in Keras's (HWC) order,
    the PyTorch model no longer computes what the Keras model does, so the agreement above is
    no coincidence of symmetric weights."""
    keras.backend.clear_session()
    imported = import_and_compare(flatten_dense(), tmp_path, verify=False, keras_script=False)
    weights = load_file(str(imported.weights))
    hidden = [k for k in weights if "hidden" in k and weights[k].ndim == 2]
    assert len(hidden) == 1, sorted(weights)
    kernel = weights[hidden[0]]  # PyTorch's (out, in) layout, the inputs in CHW order
    assert kernel.shape == (16, 8 * 6 * 5)
    hwc = kernel.reshape(16, 8, 6, 5).transpose(0, 2, 3, 1).reshape(16, -1)
    shuffled = tmp_path / "hwc.safetensors"
    save_file({**weights, hidden[0]: np.ascontiguousarray(hwc)}, str(shuffled))
    got = pytorch_outputs(imported.spec, shuffled, imported.x, tmp_path)
    assert np.abs(got - imported.expected).max() > 100 * ATOL


def test_frozen_layers_stay_frozen(tmp_path: Path) -> None:
    """A layer saved with trainable=False (a frozen base, for transfer learning) is not
    trained by the imported spec either: its default phase has keras's counts."""
    keras.backend.clear_session()
    model = sequential()
    model.get_layer("conv1").trainable = False
    source = tmp_path / "frozen.keras"
    model.save(source)
    target = tmp_path / "frozen.cnn"
    code, _, err = cnnspec("import", str(source), "-o", str(target))
    assert code == 0, err
    spec = compile_file(target).spec
    assert spec is not None
    phase = spec.phases[0]
    assert (phase.trainable_params, phase.non_trainable_params) == keras_counts(model)
    assert spec.model.params.total == model.count_params()


# ---- honest refusals --------------------------------------------------------------------------


def unsupported(kind: str) -> keras.Model:
    keras.backend.clear_session()
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    if kind in ("lambda", "both"):
        x = layers.Lambda(lambda t: t * 2.0, name="doubler")(x)
    if kind in ("lstm", "both"):
        x = layers.Reshape((64, 4), name="as_sequence")(x)
        x = layers.LSTM(5, name="memory")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(3, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name=f"with_{kind}")


@pytest.mark.parametrize(
    ("kind", "named", "process"),
    [
        ("lstm", ["memory"], False),
        ("lambda", ["doubler"], False),
        ("both", ["doubler", "memory"], True),
    ],
)
def test_unsupported_layers_are_named_and_nothing_is_written(
    kind: str, named: list[str], process: bool, tmp_path: Path
) -> None:
    unsupported(kind).save(tmp_path / "model.keras")
    before = files_under(tmp_path)
    code, out, err = import_into(tmp_path, "model.keras", process)
    assert code == 1, err
    assert "Traceback" not in out + err, err
    assert "internal error" not in err, err
    assert files_under(tmp_path) == before  # not out.cnn, not out.safetensors
    lines = err.splitlines()
    for name in named:
        mentions = [line for line in lines if f"'{name}'" in line]
        assert len(mentions) == 1, (name, err)
    # Only the unsupported layers are reported: none of the layers cnnspec has.
    for name in ("conv", "gap", "classes", "as_sequence"):
        assert not [line for line in lines if f"'{name}'" in line], (name, err)


def _zip(path: Path, entries: dict[str, bytes]) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def _weights_only(path: Path) -> None:
    keras.backend.clear_session()
    flatten_dense().save_weights(path)


def _saved(path: Path) -> bytes:
    """The bytes of a small model saved as .keras (written to `path`)."""
    keras.backend.clear_session()
    sequential().save(path)
    return path.read_bytes()


def _truncated(path: Path) -> None:
    data = _saved(path)
    path.write_bytes(data[: len(data) // 2])


def _weights_not_hdf5(path: Path) -> None:
    import zipfile

    _saved(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json")
    _zip(path, {"config.json": config, "model.weights.h5": b"not hdf5 at all"})


def bad(
    name: str,
    file: str,
    make: Callable[[Path], object] | None,
    fails: str = "",
    process: bool = False,
) -> object:
    marks = [pytest.mark.xfail(reason=fails, strict=True)] if fails else []
    return pytest.param(file, make, process, id=name, marks=marks)


BAD_FILES = [
    bad(
        "random_bytes",
        "x.keras",
        lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
        process=True,
    ),
    bad(
        "corrupt_zip",
        "x.keras",
        lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00\x17" * 600),
        process=True,
    ),
    bad("corrupt_hdf5", "x.h5", lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x01" * 900)),
    bad("truncated_keras", "x.keras", _truncated),
    bad("zip_without_config", "x.keras", lambda p: _zip(p, {"metadata.json": b"{}"})),
    bad("config_not_json", "x.keras", lambda p: _zip(p, {"config.json": b"{not json"})),
    bad("config_not_a_model", "x.keras", lambda p: _zip(p, {"config.json": b'{"a": [1]}'})),
    bad(
        "config_a_list",
        "x.keras",
        lambda p: _zip(p, {"config.json": b"[1, 2]"}),
    ),
    bad(
        "config_not_utf8",
        "x.keras",
        lambda p: _zip(p, {"config.json": b"\xff\xfe\x00"}),
    ),
    bad(
        "weights_not_hdf5",
        "x.keras",
        _weights_not_hdf5,
    ),
    bad("text_file", "notes.txt", lambda p: p.write_text("model? no, a shopping list\n")),
    bad("text_as_keras", "model.keras", lambda p: p.write_text("not a model\n")),
    bad("empty_file", "empty.keras", lambda p: p.write_bytes(b"")),
    bad("weights_only_h5", "w.weights.h5", _weights_only),
    bad("directory", "folder.keras", lambda p: p.mkdir()),
    bad("missing", "missing.keras", None, process=True),
]


@pytest.mark.parametrize(("name", "make", "process"), BAD_FILES)
def test_bad_files_are_one_line_of_error(
    name: str, make: Callable[[Path], object] | None, process: bool, tmp_path: Path
) -> None:
    if make is not None:
        make(tmp_path / name)
    before = files_under(tmp_path)
    code, out, err = import_into(tmp_path, name, process)
    assert code == 1, (code, err)
    assert "Traceback" not in out + err, err
    assert "internal error" not in err, err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    assert name in errors[0], err  # it says which file
    assert files_under(tmp_path) == before


# ---- no clobbering ----------------------------------------------------------------------------

HAND_WRITTEN_SPEC = """\
# mine: do not overwrite
model mine {
  input 14x14x1
  conv2d(4)
  flatten()
  dense(10, activation=softmax)
}
"""


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    keras.backend.clear_session()
    source = tmp_path / "small.keras"
    sequential().save(source)
    return source


def test_a_hand_written_spec_is_kept_without_force(saved: Path, tmp_path: Path) -> None:
    target = tmp_path / "mine.cnn"
    target.write_text(HAND_WRITTEN_SPEC, encoding="utf-8")
    assert compile_file(target).ok
    code, _, err = cnnspec("import", str(saved), "-o", str(target))
    assert code == 1, err
    assert "--force" in err
    assert target.read_text(encoding="utf-8") == HAND_WRITTEN_SPEC
    # Both files or neither: the weights were not written either.
    assert not target.with_suffix(".safetensors").exists()

    code, _, err = cnnspec("import", str(saved), "-o", str(target), "--force")
    assert code == 0, err
    assert target.read_text(encoding="utf-8") != HAND_WRITTEN_SPEC
    spec = compile_file(target).spec
    assert spec is not None
    assert spec.model.params.total == keras.saving.load_model(saved).count_params()
    assert target.with_suffix(".safetensors").exists()


def test_importing_twice_rewrites_nothing(saved: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "small.cnn"
    target.parent.mkdir()
    code, _, err = cnnspec("import", str(saved), "-o", str(target))
    assert code == 0, err
    first = files_under(target.parent)
    assert sorted(first) == ["small.cnn", "small.safetensors"]
    code, _, err = cnnspec("import", str(saved), "-o", str(target))
    assert code == 0, err
    assert files_under(target.parent) == first


def test_an_edited_import_is_kept_without_force(saved: Path, tmp_path: Path) -> None:
    target = tmp_path / "small.cnn"
    code, _, err = cnnspec("import", str(saved), "-o", str(target))
    assert code == 0, err
    edited = target.read_text(encoding="utf-8") + "# my note\n"
    target.write_text(edited, encoding="utf-8")
    code, _, err = cnnspec("import", str(saved), "-o", str(target))
    assert code == 1, err
    assert target.read_text(encoding="utf-8") == edited
    code, _, err = cnnspec("import", str(saved), "-o", str(target), "--force")
    assert code == 0, err
    assert target.read_text(encoding="utf-8") != edited


def test_a_foreign_weight_file_is_kept_without_force(saved: Path, tmp_path: Path) -> None:
    target = tmp_path / "small.cnn"
    foreign = target.with_suffix(".safetensors")
    foreign.write_bytes(b"my own weights")
    code, _, err = cnnspec("import", str(saved), "-o", str(target))
    assert code == 1, err
    assert foreign.read_bytes() == b"my own weights"
    assert not target.exists()  # both files or neither
    code, _, err = cnnspec("import", str(saved), "-o", str(target), "--force")
    assert code == 0, err
    assert load_file(str(foreign))
    assert target.exists()


def test_without_o_writes_next_to_the_working_directory(saved: Path, tmp_path: Path) -> None:
    """The default name is the model's, in the working directory."""
    work = tmp_path / "work"
    work.mkdir()
    result = cnnspec_process("import", str(saved), cwd=work)
    assert result.returncode == 0, result.stderr
    assert sorted(files_under(work)) == ["sequential_small.cnn", "sequential_small.safetensors"]
