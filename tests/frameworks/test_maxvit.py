"""MaxViT's kind (cnnspec.layers.partitions: partition_attention, block and grid) proved in
Keras, PyTorch and ONNX, against torchvision's own modules, and torchvision's MaxViT imported.

A small MaxViT written in the language (a stem, an MBConv with its squeeze-excitation and
pooled shortcut, pre-norm residuals of window and grid attention and of a GELU MLP, the
LayerNorm, Tanh and bias-free classifier) runs through `cnnspec verify` with random weights
(Keras, PyTorch and the ONNX graph within 1e-5) and comes back through `cnnspec export` and
`cnnspec import` as the same layers. The PyTorch script's PartitionAttention loads a
torchvision RelativePositionalMultiHeadAttention's state dict by its names and computes what
it computes inside torchvision's partitioning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnspec import codes
from tests.frameworks.scripts import checked_spec

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

pytestmark = pytest.mark.frameworks

# A 4x6 map after the MBConv: square partitions of 2 (windows, then a grid at a stride of
# (2, 3)) and non-square ones of 2x3 (a grid at a stride of (2, 2)).
SMALL = """
model maxvit_small {
  input 16x24x3
  conv2d(8, 3, stride=2, padding=same, use_bias=false)
  batchnorm(epsilon=1e-3)
  gelu()
  conv2d(8, 3, padding=same)
  residual {
    batchnorm(epsilon=1e-3)
    conv2d(32, 1, use_bias=false) batchnorm(epsilon=1e-3) gelu()
    depthwise_conv2d(3, stride=2, padding=same, use_bias=false) batchnorm(epsilon=1e-3) gelu()
    multiply se { branch {} branch { global_avg_pool(keepdims=true) conv2d(4, 1, activation=swish) conv2d(32, 1, activation=sigmoid) } }
    conv2d(16, 1)
    shortcut { avgpool(3, stride=2, padding=same) conv2d(16, 1) }
  }
  residual { layer_norm(epsilon=1e-5) partition_attention(2, size=2) }
  residual { layer_norm(epsilon=1e-5) dense(64, activation=gelu) dense(16) }
  residual { layer_norm(epsilon=1e-5) partition_attention(2, size=2, grid=true) }
  residual { layer_norm(epsilon=1e-5) dense(64, activation=gelu) dense(16) }
  residual { layer_norm(epsilon=1e-5) partition_attention(4, size=(2, 3)) }
  residual { layer_norm(epsilon=1e-5) partition_attention(4, size=(2, 3), grid=true) }
  global_avg_pool()
  layer_norm(epsilon=1e-5)
  dense(16, activation=tanh)
  head { dense(5, use_bias=false, activation=softmax) }
}
"""


def _torchvision():
    from tests.frameworks import zoo

    try:
        return zoo.torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed")


def _errors(text: str) -> list:
    from cnnspec.compiler import compile_text

    diagnostics = compile_text(text, "t.cnn").diagnostics
    return [d for d in diagnostics if str(d.severity) == "error"]


def test_counts_and_shapes():
    spec = checked_spec(SMALL)
    nodes = {node.name: node for node in spec.model.nodes}
    # to_qkv (48, 16) and its bias, merge (16, 16) and its bias, a (3 * 3, 2) table
    assert nodes["partition_attention_1"].params.trainable == 48 * 16 + 48 + 16 * 16 + 16 + 9 * 2
    assert nodes["partition_attention_4"].params.trainable == 4 * 16 * 16 + 4 * 16 + 3 * 5 * 4
    assert nodes["partition_attention_4"].output_shape == (4, 6, 16)


def test_verify_agrees_in_every_backend():
    from cnnspec import verify
    from tests.campaign import random_weights

    spec = checked_spec(SMALL)
    report = verify.run_verify(spec, random_weights(spec, np.random.default_rng(0)), 1e-4)
    assert report.skipped == {}
    assert report.counts == {"keras": report.expected, "pytorch": report.expected}, report
    assert report.shape_mismatches == []
    assert len(report.comparisons) == 3
    assert all(c.max_abs <= 1e-5 for c in report.comparisons), report.comparisons


def test_export_then_import_gives_the_same_network():
    from tests.campaign import import_round_trip, random_weights

    spec = checked_spec(SMALL)
    assert import_round_trip(spec, random_weights(spec, np.random.default_rng(1)), 1e-5, 0) == []


@pytest.mark.parametrize("grid", [False, True], ids=["window", "grid"])
def test_pytorch_partition_attention_is_torchvisions(tmp_path: Path, grid: bool):
    """torchvision's RelativePositionalMultiHeadAttention's state dict loads into the script's
    module by its names, and both compute the same inside torchvision's partitioning (its
    WindowPartition, the grid's SwapAxes, its WindowDepartition) of a 6x6 map."""
    from tests.frameworks.scripts import load_script, write_script

    maxvit = _torchvision().models.maxvit
    grid_text = ", grid=true" if grid else ""
    text = f"""
    model one {{
      input 6x6x8
      partition_attention(2, size=3{grid_text})
      global_avg_pool()
      head {{ dense(2, activation=softmax) }}
    }}
    """
    net = load_script(write_script(checked_spec(text), tmp_path, "pytorch")).build_model().eval()
    ours = net.partition_attention_1
    torch.manual_seed(0)
    theirs = maxvit.RelativePositionalMultiHeadAttention(8, 4, 9).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.normal_()
    state = {k: v for k, v in theirs.state_dict().items() if k != "relative_position_index"}
    assert sorted(state) == sorted(ours.state_dict())
    ours.load_state_dict(state)
    # torchvision's PartitionAttentionLayer's partitioning: p is the window, or for a grid
    # the number of partitions along an axis (then the axes swapped).
    p = 2 if grid else 3
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        parts = maxvit.WindowPartition()(x, p)
        parts = parts.swapaxes(-2, -3) if grid else parts
        y = theirs(parts)
        y = y.swapaxes(-2, -3) if grid else y
        expected = maxvit.WindowDepartition()(y, p, 6 // p, 6 // p)
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("line", "code", "words"),
    [
        ("partition_attention(3)", codes.SETTINGS_CONFLICT, "cannot split 8 channels into 3"),
        ("partition_attention(2, size=3)", codes.SETTINGS_CONFLICT, "a height of 8 into"),
        (
            "partition_attention(2, size=(4, 3), grid=true)",
            codes.SETTINGS_CONFLICT,
            "a width of 8 into partitions of 3",
        ),
        ("flatten() partition_attention(2)", codes.NEEDS_SPATIAL, "needs an (H, W, C) input"),
    ],
)
def test_located_errors(line: str, code, words: str):
    text = f"model m {{\n  input 8x8x8\n  {line}\n  head {{ dense(2, activation=softmax) }}\n}}\n"
    errors = _errors(text)
    assert errors
    assert errors[0].code == code
    assert words in errors[0].message, errors[0].message
    assert errors[0].span.line == 3


def test_generated_scripts_are_ruff_clean(tmp_path: Path) -> None:
    """The scripts carry PartitionAttention and the rule it calls (window_index), copied from
    cnnspec/runtime."""
    from tests.frameworks.scripts import write_script
    from tests.test_build import RUFF_RULES, ruff

    spec = checked_spec(SMALL)
    paths = [str(write_script(spec, tmp_path, name)) for name in ("keras", "pytorch")]
    for path in paths:
        text = Path(path).read_text()
        assert "def window_index(" in text and "class PartitionAttention" in text
    checked = ruff("check", "--select", RUFF_RULES, *paths)
    assert checked.returncode == 0, checked.stdout
    formatted = ruff("format", "--check", "--diff", *paths)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def _small_maxvit():
    """A two-block torchvision MaxVit on 32x32 images: 8x8 and 4x4 maps in partitions of 2,
    window and grid attention in each block."""
    from tests.frameworks import zoo

    vision = _torchvision()
    torch.manual_seed(0)
    model = vision.models.maxvit.MaxVit(
        (32, 32), 8, 2, [16, 32], [1, 1], 8, stochastic_depth_prob=0.0, num_classes=5
    )
    return zoo._no_constant_parameters(zoo._trained_statistics(model)).eval()


def small_maxvit():  # the factory `cnnspec import` calls
    return _small_maxvit()


def _imports_exactly(target: str, model, size: tuple[int, int, int]):
    from cnnspec.importing import import_model
    from tests.frameworks.import_models.cases import assert_computes_what_torch_does

    imported = import_model(target, size)
    assert imported.spec.model.params.trainable == sum(p.numel() for p in model.parameters())
    x = np.random.default_rng(0).standard_normal((2, size[2], size[0], size[1]))
    x = x.astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    assert_computes_what_torch_does(imported, logits, x)
    return imported


def test_a_small_torchvision_maxvit_imports_exactly():
    imported = _imports_exactly(f"{__name__}:small_maxvit", _small_maxvit(), (32, 32, 3))
    attentions = [n.layer for n in imported.spec.model.nodes if n.kind == "partition_attention"]
    assert [(a.heads, a.size, a.grid) for a in attentions] == [
        (2, (2, 2), False),
        (2, (2, 2), True),
        (4, (2, 2), False),
        (4, (2, 2), True),
    ]


@pytest.mark.library
def test_torchvision_maxvit_t_imports_exactly():
    from tests.frameworks import zoo

    _torchvision()
    model = zoo.build("tv_maxvit_t")
    imported = _imports_exactly("tests.frameworks.zoo:tv_maxvit_t", model, (224, 224, 3))
    assert imported.spec.model.params.trainable == 30_919_624
