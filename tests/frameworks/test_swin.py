"""A Swin Transformer's kinds (cnnspec.layers.windows: window_attention, patch_merge) proved in
Keras, PyTorch and ONNX, against torchvision's own modules, and torchvision's Swin imported.

A small Swin written in the language runs through `cnnspec verify` with random weights (Keras's
WindowAttention, PyTorch's and the ONNX graph within 1e-5), and comes back through `cnnspec
export` and `cnnspec import` as the same layers. The PyTorch script's WindowAttention loads a
torchvision ShiftedWindowAttention's state dict by its names and computes what it computes;
torchvision's SwinTransformer counts as written here; and `cnnspec import` of a small
SwinTransformer (and, under the `library` mark, of swin_t) gives torch's probabilities."""

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

# Two stages of V1 blocks, as torchvision writes them: pre-norm residuals of window attention
# (alternately shifted by half a window) and of a GELU MLP, patch merging with its norm and
# reduction between; a 5x5 map cut into 3x3 windows (padded to 6x6) and non-square windows.
SMALL = """
model swin_small {
  input 20x20x3
  conv2d(8, 4, stride=4)
  layer_norm(epsilon=1e-5)
  residual { layer_norm(epsilon=1e-5) window_attention(2, size=3) stochastic_depth(0.1) }
  residual { layer_norm(epsilon=1e-5) dense(32, activation=gelu) dense(8) }
  residual { layer_norm(epsilon=1e-5) window_attention(2, size=3, shift=1) }
  residual { layer_norm(epsilon=1e-5) dense(32, activation=gelu) dense(8) }
  patch_merge()
  layer_norm(epsilon=1e-5)
  dense(16, use_bias=false)
  residual { layer_norm(epsilon=1e-5) window_attention(4, size=(2, 3), shift=(1, 1)) }
  layer_norm(epsilon=1e-5)
  global_avg_pool()
  head { dense(5, activation=softmax) }
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
    # qkv (24, 8) and its bias, proj (8, 8) and its bias, a (5 * 5, 2) table
    assert nodes["window_attention_1"].params.trainable == 24 * 8 + 24 + 8 * 8 + 8 + 25 * 2
    assert nodes["window_attention_3"].params.trainable == 4 * 16 * 16 + 4 * 16 + 3 * 5 * 4
    assert nodes["patch_merge_1"].output_shape == (3, 3, 32)
    assert nodes["window_attention_3"].output_shape == (3, 3, 16)


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


@pytest.mark.parametrize(
    ("size", "window", "shift"),
    [((6, 6), [3, 3], [1, 1]), ((5, 7), [3, 3], [1, 1]), ((4, 4), [4, 4], [2, 2])],
)
def test_pytorch_window_attention_is_torchvisions(tmp_path: Path, size, window, shift):
    """torchvision's ShiftedWindowAttention's state dict loads into the script's module by its
    names, and both compute the same (padding, the shift, and no shift where one window
    covers the map, included)."""
    from tests.frameworks.scripts import load_script, write_script

    vision = _torchvision()
    h, w = size
    text = f"""
    model one {{
      input {h}x{w}x8
      window_attention(2, size=({window[0]}, {window[1]}), shift=({shift[0]}, {shift[1]}))
      global_avg_pool()
      head {{ dense(2, activation=softmax) }}
    }}
    """
    net = load_script(write_script(checked_spec(text), tmp_path, "pytorch")).build_model().eval()
    ours = net.window_attention_1
    torch.manual_seed(0)
    theirs = vision.models.swin_transformer.ShiftedWindowAttention(8, window, shift, 2).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.normal_()
    state = {k: v for k, v in theirs.state_dict().items() if k != "relative_position_index"}
    ours.load_state_dict(state)
    x = torch.randn(2, h, w, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_torchvision_swin_t_counts_as_written():
    """swin_t's 28,288,354 parameters: torchvision's architecture written in the language."""
    vision = _torchvision()
    lines = ["model swin_t {", "  input 224x224x3", "  conv2d(96, 4, stride=4)", "  layer_norm()"]
    dim = 96
    for stage, (depth, heads) in enumerate(zip((2, 2, 6, 2), (3, 6, 12, 24), strict=True)):
        if stage:
            lines.append(f"  patch_merge() layer_norm() dense({2 * dim}, use_bias=false)")
            dim *= 2
        for block in range(depth):
            shift = 3 if block % 2 else 0
            lines.append(f"  residual {{ layer_norm() window_attention({heads}, shift={shift}) }}")
            lines.append(
                f"  residual {{ layer_norm() dense({4 * dim}, activation=gelu) dense({dim}) }}"
            )
    lines += [
        "  layer_norm()",
        "  global_avg_pool()",
        "  head { dense(1000, activation=softmax) }",
        "}",
    ]
    spec = checked_spec("\n".join(lines) + "\n")
    with torch.device("meta"):
        model = vision.models.swin_t()
    expected = sum(p.numel() for p in model.parameters())
    assert expected == 28_288_354
    assert spec.model.params.trainable == expected
    assert spec.model.params.non_trainable == 0


def _small_swin():
    """A two-stage torchvision SwinTransformer on 20x20 images: a 5x5 map in 3x3 windows
    (padded), shifted blocks, patch merging of an odd map (padded to 6x6)."""
    from tests.frameworks import zoo

    vision = _torchvision()
    torch.manual_seed(0)
    model = vision.models.swin_transformer.SwinTransformer(
        [4, 4], 8, [2, 2], [2, 4], [3, 3], stochastic_depth_prob=0.0, num_classes=5
    )
    return zoo._no_constant_parameters(zoo._trained_statistics(model)).eval()


def small_swin():  # the factory `cnnspec import` calls
    return _small_swin()


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


def test_a_small_torchvision_swin_imports_exactly():
    imported = _imports_exactly(f"{__name__}:small_swin", _small_swin(), (20, 20, 3))
    kinds = [node.kind for node in imported.spec.model.nodes]
    assert kinds.count("window_attention") == 4
    assert kinds.count("patch_merge") == 1
    shifts = [
        node.layer.shift for node in imported.spec.model.nodes if node.kind == "window_attention"
    ]
    # The second stage's 3x3 map is one window: torchvision shifts nothing there.
    assert shifts == [(0, 0), (1, 1), (0, 0), (0, 0)]


@pytest.mark.library
def test_torchvision_swin_t_imports_exactly():
    from tests.frameworks import zoo

    _torchvision()
    _imports_exactly("tests.frameworks.zoo:tv_swin_t", zoo.build("tv_swin_t"), (224, 224, 3))


@pytest.mark.parametrize(
    ("line", "code", "words"),
    [
        ("window_attention(3)", codes.SETTINGS_CONFLICT, "cannot split 8 channels into 3 heads"),
        ("window_attention(2, size=4, shift=4)", codes.SETTINGS_CONFLICT, "a whole window"),
        ("flatten() window_attention(2)", codes.NEEDS_SPATIAL, "needs an (H, W, C) input"),
        ("flatten() patch_merge()", codes.NEEDS_SPATIAL, "needs an (H, W, C) input"),
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
    """The scripts carry WindowAttention, PatchMerge or patch_merge, and the rules they call
    (window_shift, window_index, window_mask), copied from cnnspec/runtime."""
    from tests.frameworks.scripts import write_script
    from tests.test_build import RUFF_RULES, ruff

    spec = checked_spec(SMALL)
    paths = [str(write_script(spec, tmp_path, name)) for name in ("keras", "pytorch")]
    for path in paths:
        text = Path(path).read_text()
        assert "def window_mask(" in text and "WindowAttention" in text
    checked = ruff("check", "--select", RUFF_RULES, *paths)
    assert checked.returncode == 0, checked.stdout
    formatted = ruff("format", "--check", "--diff", *paths)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


@pytest.mark.library  # a Keras model saved and read back: some 15 s
def test_a_saved_keras_model_imports_with_its_outputs(tmp_path: Path) -> None:
    """The generated Keras model, saved: WindowAttention and PatchMerge read back as their
    kinds, and the imported spec computes the Keras model's outputs."""
    pytest.importorskip("keras")
    from safetensors.numpy import save_file

    from cnnspec.export import export
    from cnnspec.importing import import_model
    from tests.campaign import random_weights
    from tests.frameworks.import_models.cases import run_onnx
    from tests.frameworks.scripts import load_script, write_script

    spec = checked_spec(SMALL)
    script = load_script(write_script(spec, tmp_path, "keras"))
    model = script.build_model()
    weights = tmp_path / "weights.safetensors"
    save_file(random_weights(spec, np.random.default_rng(2)), str(weights))
    script.load_weights(model, weights)
    model.save(tmp_path / "model.keras")
    imported = import_model(str(tmp_path / "model.keras"))
    kinds = sorted(node.kind for node in imported.spec.model.nodes)
    assert kinds == sorted(node.kind for node in spec.model.nodes)
    x = np.random.default_rng(3).standard_normal((2, 20, 20, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    actual = run_onnx(export(imported.spec, imported.tensors), x.transpose(0, 3, 1, 2).copy())
    np.testing.assert_allclose(actual, expected, atol=1e-5)
