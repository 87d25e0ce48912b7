"""The rules cnnspec and the generated scripts share (cnnspec/runtime/rules.py), without a
framework: TensorFlow's `same` padding against hand-computed numbers and TensorFlow's
documented rule, the Keras <-> canonical weight layout both ways for every layout, and the
legacy Keras .h5 reader on a file written here. Also: the module imports nothing, and the
checker, the importer and both scripts use these definitions, not copies of their own."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np
import pytest

from cnnspec.backends.runtime import code
from cnnspec.layers.base import same_pads as checker_same_pads
from cnnspec.registry import KerasWeight
from cnnspec.runtime import rules

RULES = Path(rules.__file__)


def test_the_rules_import_nothing() -> None:
    # The checker imports this module (`cnnspec check` must not load numpy), and the
    # scripts copy its functions without its imports.
    # A function may import the standard library's math where it runs (the scripts copy
    # the import with the function); nothing else, and nothing at the top.
    tree = ast.parse(RULES.read_text(encoding="utf-8"))
    top = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert top == []
    inner = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
    assert all(
        isinstance(node, ast.Import) and [a.name for a in node.names] == ["math"] for node in inner
    )


# --- TensorFlow's `same` padding


# (size, kernel, stride, dilation) -> (before, after), worked out by hand from TensorFlow's
# rule: the output has ceil(size / stride) positions, and the padding is what the last
# window needs beyond the input, the odd pixel after.
BY_HAND = {
    (7, 3, 1, 1): (1, 1),  # 7 outputs: 2 more pixels
    (8, 4, 1, 1): (1, 2),  # an even kernel: 3 more, the odd one after
    (8, 3, 2, 1): (0, 1),  # 4 outputs, the last window at 6..8: 1 more
    (7, 3, 2, 1): (1, 1),  # 4 outputs, the last at 6..8: 2 more
    (224, 7, 2, 1): (2, 3),  # ResNet's stem: 112 outputs, the last at 222..228
    (225, 3, 2, 1): (1, 1),  # 113 outputs, the last at 224..226
    (5, 1, 3, 1): (0, 0),  # a 1x1 window never needs padding
    (6, 2, 3, 1): (0, 0),  # 2 outputs, the last at 3..4
    (5, 3, 1, 2): (2, 2),  # dilation 2: a window of extent 5
    (10, 3, 2, 3): (2, 3),  # dilation 3: extent 7; 5 outputs, the last at 8..14
    (1, 5, 1, 1): (2, 2),  # a window larger than the input
}


@pytest.mark.parametrize(("arguments", "expected"), BY_HAND.items())
def test_same_pads_by_hand(arguments: tuple[int, int, int, int], expected: tuple[int, int]) -> None:
    assert rules.same_pads(*arguments) == expected


def tensorflow_padding(size: int, extent: int, stride: int) -> tuple[int, int]:
    """TensorFlow's rule as its documentation states it (tf.nn.convolution, "SAME"): the
    total is max(extent - stride, 0) where the stride divides the size, and
    max(extent - size % stride, 0) where it does not."""
    total = max(extent - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def test_same_pads_is_tensorflows_documented_rule() -> None:
    for size, kernel, stride, dilation in itertools.product(
        range(1, 18), range(1, 8), range(1, 5), range(1, 4)
    ):
        extent = dilation * (kernel - 1) + 1
        before, after = rules.same_pads(size, kernel, stride, dilation)
        assert (before, after) == tensorflow_padding(size, extent, stride)
        assert after - before in (0, 1)  # the odd pixel goes after
        # The output has ceil(size / stride) positions, as `same` promises.
        assert (size + before + after - extent) // stride + 1 == math.ceil(size / stride)
        # The checker's typed same_pads is this rule.
        assert checker_same_pads(size, kernel, stride, dilation) == (before, after)


# --- The weight layout


def random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(size=shape).astype("float32")


# Per layout: a Keras weight, and the canonical shape it becomes.
LAYOUTS = {
    "conv": ((3, 5, 4, 6), (6, 4, 3, 5)),
    "depthwise": ((3, 3, 4, 2), (8, 1, 3, 3)),
    "dense": ((7, 3), (3, 7)),
    "features": ((7,), (7,)),
    "vector": ((7,), (7,)),
    "scalar": ((), (1,)),
}


def test_every_layout_is_tested() -> None:
    assert set(get_args(get_type_hints(KerasWeight)["layout"])) == set(LAYOUTS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_from_keras_and_to_keras_are_inverses(layout: str) -> None:
    rng = np.random.default_rng(sorted(LAYOUTS).index(layout))
    keras_shape, canonical_shape = LAYOUTS[layout]
    value = random(rng, *keras_shape)
    canonical = rules.from_keras(value, layout)
    assert canonical.shape == canonical_shape
    np.testing.assert_array_equal(rules.to_keras(canonical, layout, keras_shape), value)
    tensor = random(rng, *canonical_shape)
    np.testing.assert_array_equal(
        rules.from_keras(rules.to_keras(tensor, layout, keras_shape), layout), tensor
    )


def test_the_layouts_move_the_right_numbers() -> None:
    conv = np.arange(3 * 5 * 4 * 6).reshape(3, 5, 4, 6)  # (kh, kw, in, out)
    assert rules.from_keras(conv, "conv")[5, 2, 1, 4] == conv[1, 4, 2, 5]  # (out, in, kh, kw)
    depthwise = np.arange(3 * 3 * 4 * 2).reshape(3, 3, 4, 2)  # (kh, kw, C, M)
    # Output channel c * M + m of a grouped convolution is input channel c's m-th filter.
    assert rules.from_keras(depthwise, "depthwise")[2 * 2 + 1, 0, 0, 2] == depthwise[0, 2, 2, 1]
    dense = np.arange(7 * 3).reshape(7, 3)  # (in, out)
    np.testing.assert_array_equal(rules.from_keras(dense, "dense"), dense.T)
    assert rules.from_keras(np.float32(2.5), "scalar").tolist() == [2.5]


@pytest.mark.parametrize("layout", ["dense", "features", "vector"])
def test_features_after_a_flatten_go_to_chw_order_and_back(layout: str) -> None:
    height, width, channels = flattened = (2, 3, 4)
    rng = np.random.default_rng(5)
    keras_shape = (24, 5) if layout == "dense" else (24,)
    value = random(rng, *keras_shape)
    canonical = rules.from_keras(value, layout, flattened)
    # Keras's feature (h, w, c) is the canonical (c, h, w).
    hwc = value.reshape(height, width, channels, *keras_shape[1:])
    chw = hwc.transpose(2, 0, 1, *range(3, hwc.ndim)).reshape(keras_shape)
    if layout == "dense":
        np.testing.assert_array_equal(canonical, chw.T)
    elif layout == "features":
        np.testing.assert_array_equal(canonical, chw)
    else:  # a bias is over the layer's outputs, which no flatten orders
        np.testing.assert_array_equal(canonical, value)
    np.testing.assert_array_equal(rules.to_keras(canonical, layout, keras_shape, flattened), value)


# --- The legacy .h5 reader (h5py is the importer's, cnnspec[import])


def write_h5(path: Path, layers: dict[str, dict[str, np.ndarray]], model: bool) -> None:
    """A Keras .h5 file as Keras wrote them before Keras 3: `layer_names`, and per layer its
    `weight_names` and a dataset each; in `model_weights` with a model config where it is a
    whole model (model.save), at the top where it is weights only (keras.applications')."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as file:
        if model:
            file.attrs["model_config"] = b"{}"
        group = file.create_group("model_weights") if model else file
        group.attrs["layer_names"] = [name.encode() for name in layers]
        for name, weights in layers.items():
            layer = group.create_group(name)
            layer.attrs["weight_names"] = [weight.encode() for weight in weights]
            for weight, value in weights.items():
                layer.create_dataset(weight, data=value)


@pytest.mark.parametrize("model", [False, True], ids=["weights", "model"])
def test_the_h5_reader_reads_by_layer_name(tmp_path: Path, model: bool) -> None:
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(7)
    kernel, bias = random(rng, 3, 3, 3, 8), random(rng, 8)
    stem = random(rng, 4, 4, 3, 16)
    count = np.array(12.0, dtype="float32")
    layers = {
        "block1_conv1": {"block1_conv1/kernel:0": kernel, "block1_conv1/bias:0": bias},
        "input_1": {},
        # A model inside the model: one group holding its layers' weights.
        "stem": {"stem_conv/kernel:0": stem},
        # Keras 3's legacy writer: paths without ":0"; a scalar weight.
        "normalization": {"normalization/count": count},
    }
    path = tmp_path / "weights.h5"
    write_h5(path, layers, model)
    with h5py.File(path, "r") as file:
        found = rules.keras_h5_arrays(file)
    assert [(layer, weight, index) for layer, weight, index, _ in found] == [
        ("block1_conv1", "kernel", 0),
        ("block1_conv1", "bias", 1),
        ("stem_conv", "kernel", 0),
        ("normalization", "count", 0),
    ]
    arrays = [array for *_, array in found]
    for got, expected in zip(arrays, [kernel, bias, stem, count], strict=True):
        np.testing.assert_array_equal(got, expected)
    assert rules.from_keras(arrays[-1], "scalar").tolist() == [12.0]


def test_the_h5_reader_says_none_without_layer_names(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "model.weights.h5"
    with h5py.File(path, "w") as file:
        file.create_group("layers").create_dataset("vars/0", data=np.zeros(3))
    with h5py.File(path, "r") as file:
        assert rules.keras_h5_arrays(file) is None


# --- One copy: the scripts copy these definitions as they are


def test_the_scripts_copy_the_rules_as_written() -> None:
    text = RULES.read_text(encoding="utf-8")
    for name in ("same_pads", "from_keras", "to_keras", "keras_h5_arrays"):
        copied = code("rules", name)
        assert copied.startswith(f"def {name}(") and copied in text
