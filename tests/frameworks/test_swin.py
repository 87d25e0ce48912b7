"""A Swin Transformer's kinds (cnnspec.layers.windows: window_attention, patch_merge) proved in
Keras, PyTorch and ONNX, against torchvision's own modules, and torchvision's Swin imported.

A small Swin written in the language runs through `cnnspec verify` with random weights (Keras's
WindowAttention, PyTorch's and the ONNX graph within 1e-5), and comes back through `cnnspec
export` and `cnnspec import` as the same layers. The PyTorch script's WindowAttention loads a
torchvision ShiftedWindowAttention's state dict by its names and computes what it computes;
torchvision's SwinTransformer counts as written here; and `cnnspec import` of a small
SwinTransformer (and, under the `library` mark, of swin_t) gives torch's probabilities. Swin V2
(`window_attention(..., version=2)`, post-norm blocks, PatchMergingV2 as patch_merge() dense()
layer_norm()) is proved the same ways against ShiftedWindowAttentionV2 and swin_v2_t."""

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


# The same two stages as Swin V2 writes them: post-norm residuals (the norm after the attention
# and after the MLP), V2's cosine attention with its bias MLP, and PatchMergingV2's reduction
# before its norm.
SMALL_V2 = """
model swin_v2_small {
  input 20x20x3
  conv2d(8, 4, stride=4)
  layer_norm(epsilon=1e-5)
  residual { window_attention(2, size=3, version=2) layer_norm(epsilon=1e-5) stochastic_depth(0.1) }
  residual { dense(32, activation=gelu) dense(8) layer_norm(epsilon=1e-5) }
  residual { window_attention(2, size=3, shift=1, version=2) layer_norm(epsilon=1e-5) }
  residual { dense(32, activation=gelu) dense(8) layer_norm(epsilon=1e-5) }
  patch_merge()
  dense(16, use_bias=false)
  layer_norm(epsilon=1e-5)
  residual { window_attention(4, size=(2, 3), shift=(1, 1), version=2) layer_norm(epsilon=1e-5) }
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


def test_v2_counts():
    spec = checked_spec(SMALL_V2)
    nodes = {node.name: node for node in spec.model.nodes}
    # qkv and proj as in V1, logit_scale (2, 1, 1), cpb_mlp (512, 2) + 512 and (2, 512)
    projections = 24 * 8 + 24 + 8 * 8 + 8
    assert nodes["window_attention_1"].params.trainable == projections + 2 + 3 * 512 + 2 * 512
    assert nodes["window_attention_3"].output_shape == (3, 3, 16)


@pytest.mark.parametrize("text", [SMALL, SMALL_V2], ids=["v1", "v2"])
def test_verify_agrees_in_every_backend(text: str):
    from cnnspec import verify
    from tests.campaign import random_weights

    spec = checked_spec(text)
    report = verify.run_verify(spec, random_weights(spec, np.random.default_rng(0)), 1e-4)
    assert report.skipped == {}
    assert report.counts == {"keras": report.expected, "pytorch": report.expected}, report
    assert report.shape_mismatches == []
    assert len(report.comparisons) == 3
    assert all(c.max_abs <= 1e-5 for c in report.comparisons), report.comparisons


@pytest.mark.parametrize("text", [SMALL, SMALL_V2], ids=["v1", "v2"])
def test_export_then_import_gives_the_same_network(text: str):
    from tests.campaign import import_round_trip, random_weights

    spec = checked_spec(text)
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


@pytest.mark.parametrize(
    ("size", "window", "shift"),
    [((6, 6), [3, 3], [1, 1]), ((5, 7), [3, 2], [1, 1]), ((4, 4), [4, 4], [2, 2])],
)
def test_pytorch_window_attention_v2_is_torchvisions(tmp_path: Path, size, window, shift):
    """ShiftedWindowAttentionV2's state dict (less its two fixed buffers) loads into the
    script's module by its names, key bias and all, and both compute the same."""
    from tests.frameworks.scripts import load_script, write_script

    vision = _torchvision()
    h, w = size
    text = f"""
    model one {{
      input {h}x{w}x8
      window_attention(2, size=({window[0]}, {window[1]}), shift=({shift[0]}, {shift[1]}),
                       version=2)
      global_avg_pool()
      head {{ dense(2, activation=softmax) }}
    }}
    """
    net = load_script(write_script(checked_spec(text), tmp_path, "pytorch")).build_model().eval()
    ours = net.window_attention_1
    torch.manual_seed(0)
    theirs = vision.models.swin_transformer.ShiftedWindowAttentionV2(8, window, shift, 2).eval()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.normal_()  # a key bias too, which neither uses
    fixed = ("relative_position_index", "relative_coords_table")
    state = {k: v for k, v in theirs.state_dict().items() if k not in fixed}
    assert sorted(state) == sorted(ours.state_dict())
    ours.load_state_dict(state)
    x = torch.randn(2, h, w, 8)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


# torchvision's Swin sizes: the embedding's channels, blocks per stage, the first stage's heads.
SIZES = {"t": (96, (2, 2, 6, 2), 3), "s": (96, (2, 2, 18, 2), 3), "b": (128, (2, 2, 18, 2), 4)}


def _swin_lines(name: str, version: int, window: int) -> list[str]:
    """torchvision's swin_t/s/b or swin_v2_t/s/b in the language: the patch embedding, four
    stages of blocks (pre-norm in V1, post-norm in V2) with patch merging between (the norm
    before the reduction in V1, after it in V2)."""
    dim, depths, first = SIZES[name[-1]]
    lines = [f"model {name} {{", "  input 224x224x3", f"  conv2d({dim}, 4, stride=4)"]
    lines.append("  layer_norm()")
    v2 = ", version=2" if version == 2 else ""
    for stage, depth in enumerate(depths):
        heads = first * 2**stage
        if stage:
            reduce = f"dense({2 * dim}, use_bias=false)"
            lines.append(
                f"  patch_merge() {reduce} layer_norm()"
                if version == 2
                else f"  patch_merge() layer_norm() {reduce}"
            )
            dim *= 2
        for block in range(depth):
            shift = window // 2 if block % 2 else 0
            attention = f"window_attention({heads}, size={window}, shift={shift}{v2})"
            mlp = f"dense({4 * dim}, activation=gelu) dense({dim})"
            if version == 2:
                lines.append(f"  residual {{ {attention} layer_norm() }}")
                lines.append(f"  residual {{ {mlp} layer_norm() }}")
            else:
                lines.append(f"  residual {{ layer_norm() {attention} }}")
                lines.append(f"  residual {{ layer_norm() {mlp} }}")
    return [
        *lines,
        "  layer_norm()",
        "  global_avg_pool()",
        "  head { dense(1000, activation=softmax) }",
        "}",
    ]


@pytest.mark.parametrize(
    ("name", "version", "window", "count"),
    [
        ("swin_t", 1, 7, 28_288_354),
        ("swin_v2_t", 2, 8, 28_351_570),
        ("swin_v2_s", 2, 8, 49_737_442),
        ("swin_v2_b", 2, 8, 87_930_848),
    ],
)
def test_torchvision_swin_counts_as_written(name: str, version: int, window: int, count: int):
    """swin_t's and swin_v2_t/s/b's parameters: torchvision's architectures written in the
    language."""
    vision = _torchvision()
    spec = checked_spec("\n".join(_swin_lines(name, version, window)) + "\n")
    with torch.device("meta"):
        model = vision.models.get_model(name)
    expected = sum(p.numel() for p in model.parameters())
    assert expected == count
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


def _small_swin_v2():
    """The same SwinTransformer with V2's blocks and patch merging."""
    from tests.frameworks import zoo

    swin = _torchvision().models.swin_transformer
    torch.manual_seed(0)
    model = swin.SwinTransformer(
        [4, 4],
        8,
        [2, 2],
        [2, 4],
        [3, 3],
        stochastic_depth_prob=0.0,
        num_classes=5,
        block=swin.SwinTransformerBlockV2,
        downsample_layer=swin.PatchMergingV2,
    )
    return zoo._no_constant_parameters(zoo._trained_statistics(model)).eval()


def small_swin_v2():  # the factory `cnnspec import` calls
    return _small_swin_v2()


def test_a_small_torchvision_swin_v2_imports_exactly():
    model = _small_swin_v2()
    imported = _imports_exactly(f"{__name__}:small_swin_v2", model, (20, 20, 3))
    attentions = [n for n in imported.spec.model.nodes if n.kind == "window_attention"]
    assert [(n.layer.version, n.layer.shift) for n in attentions] == [
        (2, (0, 0)),
        (2, (1, 1)),
        (2, (0, 0)),
        (2, (0, 0)),
    ]
    # torchvision's tensors by their names, the unused key bias kept as it was.
    state = model.state_dict()
    for name in ("qkv.bias", "logit_scale", "cpb_mlp.0.weight", "cpb_mlp.2.weight"):
        expected = state[f"features.1.1.attn.{name}"].numpy()
        np.testing.assert_array_equal(imported.tensors[f"features_1_1_attn.{name}"], expected)


def test_a_v2_attention_whose_bias_mlp_was_folded_is_refused(tmp_path: Path):
    """An export whose cosine attention holds its position bias as a constant (the cpb_mlp
    folded away by an optimiser) computes no window_attention: refused at its Softmax, the
    cause said."""
    import io
    import warnings

    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from cnnspec.importing import import_model
    from cnnspec.importing.network import ImportFailure
    from tests.frameworks.import_models.cases import run_onnx

    model = _small_swin_v2()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.randn(1, 3, 20, 20),), buffer, dynamo=False, opset_version=20
        )
    folded = onnx.load_from_string(buffer.getvalue())
    graph = folded.graph
    # The first block's bias, 16 * sigmoid(...): its value an initializer, its ops gone.
    sixteen = next(n for n in graph.node if n.name == "/features/features.1/features.1.0/attn/Mul")
    bias = sixteen.output[0]
    probe = onnx.load_from_string(buffer.getvalue())
    probe.graph.output.append(helper.make_tensor_value_info(bias, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    value = session.run([bias], {session.get_inputs()[0].name: np.zeros((1, 3, 20, 20), "f")})[0]
    graph.node.remove(sixteen)
    graph.initializer.append(numpy_helper.from_array(value, bias))
    x = np.random.default_rng(0).standard_normal((1, 3, 20, 20)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(folded, x), model(torch.from_numpy(x)), atol=1e-5)
    path = tmp_path / "folded.onnx"
    onnx.save(folded, str(path))
    with pytest.raises(ImportFailure) as failure:
        import_model(str(path))
    said = [str(gap) for gap in failure.value.gaps if "Softmax" in str(gap)]
    assert len(said) == 1, failure.value.gaps
    assert "features.1.0/attn/Softmax" in said[0]
    assert "do_constant_folding=False" in said[0]


@pytest.mark.library
def test_torchvision_swin_t_imports_exactly():
    from tests.frameworks import zoo

    _torchvision()
    _imports_exactly("tests.frameworks.zoo:tv_swin_t", zoo.build("tv_swin_t"), (224, 224, 3))


@pytest.mark.library
def test_torchvision_swin_v2_t_imports_exactly():
    from tests.frameworks import zoo

    _torchvision()
    model = zoo.build("tv_swin_v2_t")
    _imports_exactly("tests.frameworks.zoo:tv_swin_v2_t", model, (224, 224, 3))


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
@pytest.mark.parametrize("text", [SMALL, SMALL_V2], ids=["v1", "v2"])
def test_a_saved_keras_model_imports_with_its_outputs(tmp_path: Path, text: str) -> None:
    """The generated Keras model, saved: WindowAttention (of either version) and PatchMerge
    read back as their kinds, and the imported spec computes the Keras model's outputs."""
    pytest.importorskip("keras")
    from safetensors.numpy import save_file

    from cnnspec.export import export
    from cnnspec.importing import import_model
    from tests.campaign import random_weights
    from tests.frameworks.import_models.cases import run_onnx
    from tests.frameworks.scripts import load_script, write_script

    spec = checked_spec(text)
    script = load_script(write_script(spec, tmp_path, "keras"))
    model = script.build_model()
    weights = tmp_path / "weights.safetensors"
    save_file(random_weights(spec, np.random.default_rng(2)), str(weights))
    script.load_weights(model, weights)
    model.save(tmp_path / "model.keras")
    imported = import_model(str(tmp_path / "model.keras"))
    kinds = sorted(node.kind for node in imported.spec.model.nodes)
    assert kinds == sorted(node.kind for node in spec.model.nodes)
    versions = [n.layer.version for n in imported.spec.model.nodes if n.kind == "window_attention"]
    assert versions == [n.layer.version for n in spec.model.nodes if n.kind == "window_attention"]
    x = np.random.default_rng(3).standard_normal((2, 20, 20, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    actual = run_onnx(export(imported.spec, imported.tensors), x.transpose(0, 3, 1, 2).copy())
    np.testing.assert_allclose(actual, expected, atol=1e-5)
