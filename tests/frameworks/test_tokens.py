"""A Vision Transformer's kinds (cnnspec.layers.tokens) proved in Keras, PyTorch and ONNX.

Each case is a small spec built through the real pipeline and run by `cnnspec verify` with
random weights (the class token, the position embeddings and every bias random too): the
generated models hold the checker's counts, every Keras layer has the checker's shape, and
Keras's SelfAttention, PyTorch's nn.MultiheadAttention and the ONNX graph agree within 1e-5.
Each comes back through `cnnspec export` and `cnnspec import` as the same layers, and through a
saved Keras model with the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from cnnspec import verify
from cnnspec.importing import import_model
from tests.campaign import import_round_trip, random_weights
from tests.frameworks.import_models.cases import run_onnx
from tests.frameworks.scripts import checked_spec, load_script, write_script
from tests.test_build import RUFF_RULES, ruff

pytestmark = pytest.mark.frameworks

CASES = {
    # ViT as torchvision writes it: a class token, learnt positions, pre-norm encoder blocks
    # (attention, then a GELU MLP, each in a residual), the class token read out.
    "encoder": """
        model vit_a {
          input 8x8x3
          patch_embed(16, patch=4)
          class_token()
          position_embedding()
          dropout(0.1)
          repeat 2 {
            residual { layer_norm(epsilon=1e-6) attention(heads=2) dropout(0.1) }
            residual { layer_norm(epsilon=1e-6) dense(32, activation=gelu) dense(16) }
          }
          layer_norm(epsilon=1e-6)
          token_pool(class)
          head { dense(3, activation=softmax) }
        }
    """,
    # Unequal patches after a convolution (a hybrid ViT), three heads with DeiT III's layer
    # scale, a dense layer without
    # bias and with an activation on tokens, tanh GELU, and the tokens' mean read out.
    "hybrid_mean": """
        model vit_b {
          input 8x12x3
          conv2d(8, 3, padding=same, activation=relu)
          patch_embed(12, patch=(2, 4))
          position_embedding()
          residual { layer_norm() attention(3) layer_scale(0.1) }
          dense(12, use_bias=false, activation=swish)
          residual { dense(24, activation=gelu(approximate=true)) dense(12) }
          token_pool(mean)
          head { dense(3, activation=softmax) }
        }
    """,
    # A map's positions reshaped into tokens, attention without a residual, and the tokens
    # flattened (token by token in every backend) into the classifier.
    "reshape_flatten": """
        model vit_c {
          input 8x8x3
          conv2d(6, 3, padding=same)
          reshape((-1, 6))
          class_token()
          attention(2)
          layer_norm()
          flatten()
          head { dense(3, activation=softmax) }
        }
    """,
}

# (trainable, non-trainable) by node, worked out by hand from the definitions.
EXPECTED_PARAMS = {
    "vit_a": {
        "patch_embed_1": (4 * 4 * 3 * 16 + 16, 0),
        "class_token_1": (16, 0),
        "position_embedding_1": (5 * 16, 0),
        # in_proj (48, 16) and its bias, out_proj (16, 16) and its bias
        "attention_1": (48 * 16 + 48 + 16 * 16 + 16, 0),
        "dense_1": (16 * 32 + 32, 0),
        "dense_2": (32 * 16 + 16, 0),
        "layer_norm_1": (32, 0),
        "head_dense_1": (16 * 3 + 3, 0),
    },
    "vit_b": {
        "patch_embed_1": (2 * 4 * 8 * 12 + 12, 0),
        "position_embedding_1": (12 * 12, 0),
        "attention_1": (4 * 12 * 12 + 4 * 12, 0),
        "dense_1": (12 * 12, 0),
        "layer_scale_1": (12, 0),
    },
    "vit_c": {"class_token_1": (6, 0), "head_dense_1": (65 * 6 * 3 + 3, 0)},
}

SHAPES = {
    "vit_a": {"patch_embed_1": (4, 16), "class_token_1": (5, 16), "token_pool_1": (16,)},
    "vit_b": {"patch_embed_1": (12, 12), "token_pool_1": (12,)},
    "vit_c": {"reshape_1": (64, 6), "class_token_1": (65, 6), "flatten_1": (390,)},
}


@pytest.mark.parametrize("text", CASES.values(), ids=list(CASES))
def test_counts_shapes_and_outputs_agree(text: str) -> None:
    spec = checked_spec(text)
    weights = random_weights(spec, np.random.default_rng(0))
    report = verify.run_verify(spec, weights, 1e-4)
    assert report.skipped == {}
    assert report.counts == {"keras": report.expected, "pytorch": report.expected}, report
    assert report.shape_mismatches == []
    assert len(report.comparisons) == 3
    assert all(c.max_abs <= 1e-5 for c in report.comparisons), report.comparisons
    nodes = {node.name: node for node in spec.model.nodes}
    for name, counts in EXPECTED_PARAMS[spec.name].items():
        assert (nodes[name].params.trainable, nodes[name].params.non_trainable) == counts, name
    for name, shape in SHAPES[spec.name].items():
        assert nodes[name].output_shape == shape, name


@pytest.mark.parametrize("text", CASES.values(), ids=list(CASES))
def test_export_then_import_gives_the_same_network(text: str) -> None:
    """The ONNX graph of every kind reads back as that kind (by the names of its nodes), with
    its tensors: the same layers, counts and outputs."""
    spec = checked_spec(text)
    assert import_round_trip(spec, random_weights(spec, np.random.default_rng(1)), 1e-5, 0) == []


@pytest.mark.parametrize("text", CASES.values(), ids=list(CASES))
def test_a_saved_keras_model_imports_with_its_outputs(text: str, tmp_path: Path) -> None:
    """The generated Keras model, saved: ClassToken, PositionEmbedding, SelfAttention and
    FirstToken read back as their kinds, patch_embed's Conv2D and Reshape as one patch_embed,
    and the imported spec computes the Keras model's outputs."""
    from safetensors.numpy import save_file

    from cnnspec.export import export

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
    h, w, c = spec.model.input_shape
    x = np.random.default_rng(3).standard_normal((2, h, w, c)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    actual = run_onnx(export(imported.spec, imported.tensors), x.transpose(0, 3, 1, 2).copy())
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_weights_round_trip_through_keras(tmp_path: Path) -> None:
    """Canonical tensors loaded into the Keras model and exported again come back unchanged:
    the class token, the position embeddings and attention's four tensors have their places
    and layouts (the projections transposed, as dense kernels are)."""
    from safetensors.numpy import load_file, save_file

    spec = checked_spec(CASES["encoder"])
    tensors = random_weights(spec, np.random.default_rng(4))
    source, target = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    save_file(tensors, str(source))
    script = load_script(write_script(spec, tmp_path, "keras"))
    model = script.build_model()
    script.load_weights(model, source)
    script.export_weights(model, target)
    back = load_file(str(target))
    assert set(back) == set(tensors)
    assert back["attention_1.in_proj_weight"].shape == (48, 16)
    for key, value in tensors.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_pytorch_attention_is_torchs_own(tmp_path: Path) -> None:
    """The PyTorch script's attention is nn.MultiheadAttention, so a torchvision ViT's
    `self_attention` tensors load into it by their names, and it equals torch's functional
    attention computed from those tensors."""
    import torch
    import torch.nn.functional as F

    spec = checked_spec(CASES["encoder"])
    net = load_script(write_script(spec, tmp_path, "pytorch")).build_model().eval()
    attention = net.attention_1
    assert isinstance(attention, torch.nn.MultiheadAttention)
    names = {name for name, _ in attention.named_parameters()}
    assert names == {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}
    x = torch.randn(2, 5, 16)
    q, k, v = F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    heads = [t.reshape(2, 5, 2, 8).transpose(1, 2) for t in (q, k, v)]
    context = F.scaled_dot_product_attention(*heads).transpose(1, 2).reshape(2, 5, 16)
    expected = F.linear(context, attention.out_proj.weight, attention.out_proj.bias)
    with torch.no_grad():
        actual = attention(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)


def test_generated_scripts_are_ruff_clean(tmp_path: Path) -> None:
    paths = [
        write_script(checked_spec(text), tmp_path, backend_name)
        for text in CASES.values()
        for backend_name in ("keras", "pytorch")
    ]
    checked = ruff("check", "--select", RUFF_RULES, *map(str, paths))
    assert checked.returncode == 0, checked.stdout
    formatted = ruff("format", "--check", "--diff", *map(str, paths))
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
