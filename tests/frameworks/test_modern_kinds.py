"""The layer kinds keras.applications' modern families need, proved in Keras, PyTorch and ONNX.

Each case is a small spec built through the real pipeline (parse, lower, check) and run by
`cnnspec verify` with random weights (random biases, scales and statistics too, so a tensor
dropped or misplaced anywhere shows): the generated Keras model and PyTorch model hold exactly
the checker's (trainable, non-trainable) counts, PyTorch's parameters being the trainable count
and its buffers the non-trainable one; every Keras layer has the checker's output shape; and
Keras, PyTorch and onnxruntime agree within 1e-4 (in fact 1e-5: a later normalisation can hide
a wrong layer under 1e-4, as a stale Keras Normalization once was).

The kinds and arguments covered: separable_conv2d, conv2d(groups=), depthwise_conv2d
(depth_multiplier=), batchnorm(center=, scale=), layer_norm, rescaling, normalization (held and
given statistics), hard_sigmoid, hard_swish, stochastic_depth, layer_scale, reshape, crop (Cropping2D),
global_avg_pool / global_max_pool (keepdims=), and InceptionResNetV2's scaled residual.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import torch

from cnnspec import verify
from cnnspec.compiler import compile_text
from tests.campaign import random_weights
from tests.frameworks.scripts import checked_spec, load_script, write_script
from tests.test_build import RUFF_RULES, ruff

pytestmark = pytest.mark.frameworks

CASES = {
    # Xception / NASNet: separable convolutions (stride, dilation, multiplier, integer
    # padding, no bias); ResNeXt-style grouped convolutions; InceptionV3's scale=False
    # batchnorm and its partners, also on a flattened vector whose scale folds into a dense
    # layer in ONNX and whose vectors are reordered between NHWC and NCHW.
    "separable_grouped_batchnorm": """
        model modern_a {
          input 12x12x3
          separable_conv2d(6, kernel=3, padding=same, stride=2, depth_multiplier=2, activation=relu)
          separable_conv2d(4, kernel=(3, 5), dilation=2, padding=same, use_bias=false)
          separable_conv2d(6, 3, padding=1)
          depthwise_conv2d(3, depth_multiplier=2, padding=same)
          conv2d(8, kernel=3, groups=4, padding=same, stride=2)
          conv2d(8, 1, groups=4, use_bias=false)
          batchnorm(scale=false)
          batchnorm(center=false, epsilon=1e-5)
          batchnorm(center=false, scale=false)
          head { flatten() batchnorm(center=false) dense(3, activation=softmax) }
        }
    """,
    # EfficientNet's and ConvNeXt's preprocessing, a ConvNeXt block (7x7 depthwise with bias,
    # layer_norm(epsilon=1e-6), dense on the map, gelu, layer_scale, stochastic_depth in a
    # residual), MobileNetV3's squeeze-and-excite with keepdims pooling and hard_sigmoid, and
    # InceptionResNetV2's scaled residual (CustomScaleLayer: x + scale * branch).
    "preprocessing_convnext_mobilenet_v3": """
        model modern_b {
          input 10x10x3
          normalization()
          normalization(mean=[0.5, 0.2, 0.1], variance=[0.25, 1, 4])
          normalization(mean=0.5, variance=2)
          rescaling(1/255)
          rescaling([1, 2, 3], offset=-1)
          rescaling(0.5, offset=[0, 1, 2])
          conv2d(8, 3, padding=same, activation=hard_swish)
          residual {
            depthwise_conv2d(7, padding=same)
            layer_norm(epsilon=1e-6)
            dense(16)  gelu()  dense(8)
            layer_scale(0.5)
            stochastic_depth(0.2)
          }
          multiply {
            branch { }
            branch {
              global_avg_pool(keepdims=true) conv2d(2, 1, activation=relu) conv2d(8, 1)
              hard_sigmoid()
            }
          }
          hard_swish()
          layer_norm()
          residual { conv2d(8, 3, padding=same) rescaling(0.17) }
          head {
            global_max_pool() layer_norm() layer_scale()
            dense(4, activation=hard_sigmoid) dense(3, activation=softmax)
          }
        }
    """,
    # NASNet's crop, reshapes between maps and vectors in Keras's channels-last order (a
    # map reshaped to another map, a map to a vector, a vector to a map), and keepdims pooling.
    "reshape_crop_keepdims": """
        model modern_c {
          input 10x10x3
          crop(((1, 0), (2, 1)))
          crop((1, 2))
          conv2d(4, 1)
          reshape((3, 7, 4))
          conv2d(4, (2, 3), padding=same)
          reshape(-1)
          dense(12)
          reshape(2x2x-1)
          conv2d(4, 2, padding=same)
          crop(0)
          global_max_pool(keepdims=true)
          reshape(4)
          head { dense(3, activation=softmax) }
        }
    """,
}

# (trainable, non-trainable) by node, worked out by hand from Keras's definitions.
EXPECTED_PARAMS = {
    "modern_a": {
        # 3x3 depthwise over 3 channels x2, then 1x1 to 6 with bias: 54 + 36 + 6.
        "separable_conv2d_1": (96, 0),
        "separable_conv2d_2": (15 * 6 + 6 * 4, 0),
        "separable_conv2d_3": (9 * 4 + 4 * 6 + 6, 0),
        "depthwise_conv2d_1": (9 * 12 + 12, 0),
        # 3x3 kernels over 12 / 4 = 3 input channels, 8 filters, bias.
        "conv2d_1": (9 * 3 * 8 + 8, 0),
        "conv2d_2": (2 * 8, 0),
        "batchnorm_1": (8, 16),
        "batchnorm_2": (8, 16),
        "batchnorm_3": (0, 16),
        "head_batchnorm_1": (72, 144),
    },
    "modern_b": {
        "normalization_1": (0, 7),  # mean, variance and Keras's sample count
        "normalization_2": (0, 0),
        "rescaling_1": (0, 0),
        "layer_norm_1": (16, 0),
        "layer_scale_1": (8, 0),
        "stochastic_depth_1": (0, 0),
        "head_layer_norm_1": (16, 0),
        "head_layer_scale_1": (8, 0),
    },
    "modern_c": {"reshape_2": (0, 0), "dense_1": (84 * 12 + 12, 0)},
}


def _report(spec_text: str) -> tuple[verify.Report, str]:
    spec = checked_spec(spec_text)
    weights = random_weights(spec, np.random.default_rng(0))
    return verify.run_verify(spec, weights, 1e-4), spec.name


@pytest.mark.parametrize("text", CASES.values(), ids=list(CASES))
def test_counts_shapes_and_outputs_agree(text: str) -> None:
    report, name = _report(text)
    assert report.skipped == {}
    assert report.counts == {"keras": report.expected, "pytorch": report.expected}, report
    assert report.shape_mismatches == []
    assert [(c.first, c.second) for c in report.comparisons] == [
        ("keras", "pytorch"),
        ("keras", "onnx"),
        ("pytorch", "onnx"),
    ]
    assert report.passed(1e-4), report
    assert all(c.max_abs <= 1e-5 for c in report.comparisons), report.comparisons
    nodes = {node.name: node for node in checked_spec(text).model.nodes}
    for node_name, counts in EXPECTED_PARAMS[name].items():
        params = nodes[node_name].params
        assert (params.trainable, params.non_trainable) == counts, node_name


def test_generated_scripts_are_ruff_clean(tmp_path: Path) -> None:
    """The helpers the new kinds bring (SeparableConv2d, partial_batchnorm, Normalization,
    rescale_channels, DropPath, LayerScale) keep the scripts clean and formatted."""
    paths = [
        write_script(checked_spec(text), tmp_path, backend_name)
        for text in CASES.values()
        for backend_name in ("keras", "pytorch")
    ]
    checked = ruff("check", "--select", RUFF_RULES, *map(str, paths))
    assert checked.returncode == 0, checked.stdout
    formatted = ruff("format", "--check", "--diff", *map(str, paths))
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_weights_round_trip_through_keras(tmp_path: Path) -> None:
    """Canonical weights loaded into the Keras model and exported again come back unchanged:
    every new Keras weight (depthwise_kernel, pointwise_kernel, partial batchnorm vectors,
    Normalization's mean, variance and count, LayerScale's gamma) has its place and layout."""
    from safetensors.numpy import load_file, save_file

    spec = checked_spec(CASES["separable_grouped_batchnorm"])
    weights = random_weights(spec, np.random.default_rng(1))
    other = checked_spec(CASES["preprocessing_convnext_mobilenet_v3"])
    for case, tensors in (
        (spec, weights),
        (other, random_weights(other, np.random.default_rng(2))),
    ):
        source = tmp_path / f"{case.name}_in.safetensors"
        target = tmp_path / f"{case.name}_out.safetensors"
        save_file(tensors, str(source))
        script = load_script(write_script(case, tmp_path, "keras"))
        model = script.build_model()
        script.load_weights(model, source)
        script.export_weights(model, target)
        back = load_file(str(target))
        assert set(back) == set(tensors), case.name
        for key, value in tensors.items():
            np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_stochastic_depth_drops_whole_samples_in_training(tmp_path: Path) -> None:
    """PyTorch's DropPath, like Keras's Dropout(noise_shape=(None, 1, 1, 1)): in training each
    sample is all zeros or all scaled by 1 / (1 - rate); at inference the identity."""
    spec = checked_spec(
        "model sd {\n  input 4x4x2\n  stochastic_depth(0.5)\n  head { flatten() softmax() }\n}"
    )
    net = load_script(write_script(spec, tmp_path, "pytorch")).build_model()
    x = torch.ones(64, 2, 4, 4)
    torch.manual_seed(0)
    out = net.train().logits(x)
    per_sample = out.reshape(64, -1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    rows = per_sample.min(dim=1).values == per_sample.max(dim=1).values
    assert bool(rows.all())
    assert 8 < int((per_sample[:, 0] == 0).sum()) < 56
    assert torch.equal(net.eval().logits(x), x.reshape(64, -1))


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("conv2d(6, groups=4)", "E205", "needs filters divisible by 4"),
        ("conv2d(8, groups=2)", "E205", "needs input channels divisible by 2"),
        ("reshape((5, 2, 2, -1))", "E113", "must have 1, 2 or 3 axes"),
        ("reshape((5, -1))", "E205", "192 is not a multiple of 5"),
        ("reshape((5, 5, 5))", "E205", "cannot make (8, 8, 3) (192 elements)"),
        ("crop((4, 0))", "E201", "leaves nothing of the 8x8 map"),
        ("separable_conv2d(4, stride=(1, 2))", "E205", "needs equal strides"),
        ("normalization(mean=[1, 2])", "E113", "mean and variance go together"),
        ("rescaling([1, 2])", "E205", "has 2 values of scale"),
    ],
)
def test_bad_arguments_are_located(text: str, code: str, message: str) -> None:
    """The same refusals as tests/diagnostics/layers_modern.cnn, without the frameworks."""
    spec = f"model bad {{\n  input 8x8x3\n  {text}\n  head {{ global_avg_pool() dense(2, activation=softmax) }}\n}}\n"
    errors = compile_text(spec, "bad.cnn").diagnostics.errors
    assert [(e.code, e.span.line) for e in errors] == [(code, 3)], errors
    assert message in errors[0].message
