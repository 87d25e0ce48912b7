"""`cnnspec import` of Vision Transformers (issue 25): torchvision's VisionTransformer and timm's
ViT through the factory route (torch.onnx.export at opset 20 inside) and through an ONNX file.

The exporter writes a ViT's shape arithmetic as ops (Shape, Gather, Concat, Expand...), which
fold to constants for the input size; then the patch convolution and its flatten(2).transpose
are a patch_embed, the class token's Expand and Concat a class_token, the Add of a (1, N, D)
parameter a position_embedding, LayerNormalization of tokens a layer_norm, nn.Linear on tokens
(MatMul and Add) a dense, nn.MultiheadAttention and timm's Attention (the whole computation,
from the qkv projection to the output projection) an attention with nn.MultiheadAttention's
four tensors, x[:, 0] a token_pool(class) and x.mean(1) a token_pool(mean). The imported spec
has PyTorch's counts and computes the original's probabilities (and logits) within 1e-4.

The small models here run in `make test`; ViT-B/16 and timm's vit_tiny_patch16_224 at 224 are
`library` cases. Their weights are random, and those a fresh module holds constant (the class
token, the layer norms' ones and zeros, the attention's zero biases) are drawn too. What
cnnspec's attention cannot express (a mask, no biases, another scale, its weights used, keys
and values of other tokens), the token reductions it has no layer for and the kinds that take
no tokens are refused in one line each."""

import importlib.util
import warnings

import numpy as np
import pytest

from cnnspec.importing import ImportFailure, import_model
from cnnspec.importing.refusal import refusal
from tests.frameworks.import_models.cases import assert_computes_what_torch_does

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
nn = torch.nn

pytestmark = pytest.mark.frameworks

HERE = "tests.frameworks.test_import_vit"
ZOO = "tests.frameworks.zoo"
UNSUPPORTED = "the model uses what cnnspec cannot express"
SIZE = (32, 32, 3)


def _zoo():
    from tests.frameworks import zoo

    try:
        zoo.torchvision()
    except ImportError:
        pytest.skip("torchvision is not installed")
    return zoo


def _timm():
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    return _zoo().timm()


# The class token and position embeddings, torchvision's and timm's.
_TOKENS = ("class_token", "cls_token", "pos_embedding", "pos_embed")


def _randomised(model):
    """Every bias, layer norm, class token and position embedding drawn (never the zeros and
    ones a fresh module holds), seeded."""
    generator = torch.Generator().manual_seed(1)

    def draw(parameter, low, high):
        values = torch.rand(parameter.shape, generator=generator) * (high - low) + low
        parameter.copy_(values.to(parameter.dtype))

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            if isinstance(owner, nn.LayerNorm) and leaf == "weight":
                draw(parameter, 0.5, 1.5)
            elif leaf.endswith("bias") or leaf in _TOKENS:
                draw(parameter, -0.5, 0.5)
    return model.eval()


# ---- the models -------------------------------------------------------------------------------


def tv_tiny():
    """torchvision's VisionTransformer, small: 2 layers of 2 heads on 16 features."""
    vision = _zoo().torchvision()
    torch.manual_seed(0)
    return _randomised(
        vision.models.VisionTransformer(
            image_size=32,
            patch_size=8,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
            num_classes=5,
        )
    )


def _timm_tiny(**options):
    timm = _timm()
    torch.manual_seed(0)
    return _randomised(
        timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            img_size=32,
            patch_size=8,
            depth=2,
            num_classes=5,
            **options,
        )
    )


def timm_tiny():
    """timm's ViT-Tiny (3 heads on 192 features), 2 blocks, at 32x32."""
    return _timm_tiny()


def timm_tiny_mean():
    """Without a class token, the tokens' mean to the head (global_pool="avg")."""
    return _timm_tiny(class_token=False, global_pool="avg")


def timm_tiny_mean_after_class():
    """The mean of the tokens after the class token (x[:, 1:].mean(1))."""
    return _timm_tiny(global_pool="avg")


def timm_tiny_without_bias():
    return _timm_tiny(qkv_bias=False)


class Tokens(nn.Module):
    """A patch embedding, a layer norm, `body`, then x[:, 0] (or `pool`) to a linear head."""

    def __init__(self, body, pool="first", dim=16):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 8, stride=8)
        self.norm = nn.LayerNorm(dim)
        self.body = body
        self.pool = pool
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.body(self.norm(self.proj(x).flatten(2).transpose(1, 2)))
        if self.pool == "last":
            return self.head(x[:, -1])
        if self.pool == "kept_mean":
            return self.head(x.mean(1, keepdim=True).flatten(1))
        return self.head(x[:, 0])


class MultiHead(nn.Module):
    """nn.MultiheadAttention of 2 heads, as a ViT's encoder calls it, or otherwise."""

    def __init__(self, mask=False, bias=True, weights=False, cross=False):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, bias=bias, batch_first=True)
        self.other = nn.LayerNorm(16)
        self.mask, self.weights, self.cross = mask, weights, cross

    def forward(self, x):
        count = x.shape[1]
        mask = torch.triu(torch.ones(count, count, dtype=torch.bool), 1) if self.mask else None
        kv = self.other(x) if self.cross else x
        y, weights = self.attn(x, kv, kv, attn_mask=mask, need_weights=self.weights)
        return y + weights.mean(-1, keepdim=True) if self.weights else y


class Written(nn.Module):
    """Attention written out, as timm's without the fused kernel: one qkv projection, or one
    projection each (`separate`), and any `scale`."""

    def __init__(self, scale=8**-0.5, separate=False):
        super().__init__()
        self.separate = separate
        if separate:
            self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        else:
            self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.scale = scale

    def forward(self, x):
        batch, count, dim = x.shape
        if self.separate:
            q, k, v = (
                m(x).reshape(batch, count, 2, 8).transpose(1, 2) for m in (self.q, self.k, self.v)
            )
        else:
            parts = self.qkv(x).reshape(batch, count, 3, 2, 8).permute(2, 0, 3, 1, 4)
            q, k, v = parts.unbind(0)
        weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, count, dim))


class Softmax(nn.Module):
    def forward(self, x):
        return x.softmax(-1)


class Twice(nn.Module):
    def forward(self, x):
        return torch.cat([x, x], 1)


def _tokens(body, pool="first"):
    torch.manual_seed(0)
    return _randomised(Tokens(body(), pool))


def written():
    return _tokens(Written)


def separate_projections():
    return _tokens(lambda: Written(separate=True))


def masked():
    return _tokens(lambda: MultiHead(mask=True))


def without_bias():
    return _tokens(lambda: MultiHead(bias=False))


def weights_used():
    return _tokens(lambda: MultiHead(weights=True))


def cross():
    return _tokens(lambda: MultiHead(cross=True))


def unscaled():
    return _tokens(lambda: Written(scale=1.0))


def last_token():
    return _tokens(nn.Identity, "last")


def kept_mean():
    return _tokens(nn.Identity, "kept_mean")


def softmax_of_tokens():
    return _tokens(Softmax)


def tokens_twice():
    return _tokens(Twice)


# ---- comparing --------------------------------------------------------------------------------


def _inputs(size=SIZE, count=2):
    x = np.random.default_rng(0).standard_normal((count, size[2], size[0], size[1]))
    return x.astype(np.float32)


def _assert_computes_the_same(imported, module, x, atol=1e-4):
    """The probabilities within `atol`, and the softmax's input against the logits (which
    near-uniform probabilities would hide), within `atol` of their scale."""
    with torch.no_grad():
        logits = module(torch.from_numpy(x))
    assert_computes_what_torch_does(imported, logits, x, atol)


def _export(module, path, size=SIZE):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(1, size[2], size[0], size[1]),),
            str(path),
            dynamo=False,
            opset_version=20,
        )


def _routes(factory, tmp_path):
    module = globals()[factory]()
    path = tmp_path / f"{factory}.onnx"
    _export(module, path)
    return module, {
        "module": import_model(f"{HERE}:{factory}", SIZE),
        "onnx file": import_model(str(path)),
    }


ENCODER = ["layer_norm", "attention", "add", "layer_norm", "dense", "gelu", "dense", "add"]
VIT = [
    "patch_embed",
    "class_token",
    "position_embedding",
    *ENCODER,
    *ENCODER,
    "layer_norm",
    "token_pool",
    "dense",
]


# ---- the small ViTs ---------------------------------------------------------------------------


def test_torchvisions_vision_transformer_imports_through_both_routes(tmp_path):
    module, routes = _routes("tv_tiny", tmp_path)
    x = _inputs()
    for route, imported in routes.items():
        nodes = {node.name: node for node in imported.spec.model.nodes}
        assert [node.kind for node in imported.spec.model.nodes] == VIT, route
        assert nodes["conv_proj"].layer.dim == 16 and nodes["conv_proj"].layer.patch == (8, 8)
        assert nodes["conv_proj"].output_shape == (16, 16)
        assert nodes["class_token"].output_shape == (17, 16)
        attention = nodes["encoder_layers_encoder_layer_0_self_attention"]
        assert attention.kind == "attention" and attention.layer.heads == 2, route
        mha = module.encoder.layers[0].self_attention
        for key, value in {
            "in_proj_weight": mha.in_proj_weight,
            "in_proj_bias": mha.in_proj_bias,
            "out_proj.weight": mha.out_proj.weight,
            "out_proj.bias": mha.out_proj.bias,
        }.items():
            tensor = imported.tensors[f"encoder_layers_encoder_layer_0_self_attention.{key}"]
            np.testing.assert_array_equal(tensor, value.detach().numpy(), route)
        np.testing.assert_array_equal(
            imported.tensors["class_token.weight"], module.class_token.detach().numpy()
        )
        np.testing.assert_array_equal(
            imported.tensors["encoder_pos_embedding.weight"],
            module.encoder.pos_embedding.detach().numpy(),
        )
        assert nodes["encoder_ln"].layer.epsilon == 1e-6
        assert nodes["gather"].layer.mode == "class"
        params = imported.spec.model.params
        assert params.trainable == sum(p.numel() for p in module.parameters()), route
        assert params.non_trainable == 0
        _assert_computes_the_same(imported, module, x)


def test_torchvisions_encoder_layers_read_as_a_define_repeated():
    imported = import_model(f"{HERE}:tv_tiny", SIZE)
    text = imported.text
    for line in (
        "define layer() {",
        "    attention(2, name=self_attention)",
        "  patch_embed(16, patch=8, name=conv_proj)",
        "  class_token(name=class_token)",
        "  position_embedding(name=encoder_pos_embedding)",
        '  repeat 2 { layer(name="encoder_layers_encoder_layer_" + str(index)) }',
        "  layer_norm(name=encoder_ln)",
        "  dense(5, activation=softmax, name=heads_head)",
    ):
        assert line in text.splitlines(), (line, text)
    assert len(text.splitlines()) < 35


def test_timms_vision_transformer_imports_through_both_routes(tmp_path):
    module, routes = _routes("timm_tiny", tmp_path)
    x = _inputs()
    for route, imported in routes.items():
        nodes = {node.name: node for node in imported.spec.model.nodes}
        assert [node.kind for node in imported.spec.model.nodes] == VIT, route
        assert nodes["blocks_1_attn"].layer.heads == 3, route
        block = module.blocks[1].attn
        expected = {
            "in_proj_weight": block.qkv.weight,
            "in_proj_bias": block.qkv.bias,
            "out_proj.weight": block.proj.weight,
            "out_proj.bias": block.proj.bias,
        }
        for key, value in expected.items():
            tensor = imported.tensors[f"blocks_1_attn.{key}"]
            np.testing.assert_array_equal(tensor, value.detach().numpy(), route)
        assert {"patch_embed_proj", "cls_token", "pos_embed", "norm", "head"} <= set(nodes)
        params = imported.spec.model.params
        assert params.trainable == sum(p.numel() for p in module.parameters()), route
        _assert_computes_the_same(imported, module, x)
    assert '  repeat 2 { blocks(name="blocks_" + str(index)) }' in routes["module"].text


def test_the_mean_of_the_tokens_reads_as_token_pool_mean():
    module = timm_tiny_mean()
    imported = import_model(f"{HERE}:timm_tiny_mean", SIZE)
    kinds = [node.kind for node in imported.spec.model.nodes]
    assert kinds[:2] == ["patch_embed", "position_embedding"] and "class_token" not in kinds
    pool = next(node for node in imported.spec.model.nodes if node.kind == "token_pool")
    assert pool.layer.mode == "mean" and pool.output_shape == (192,)
    _assert_computes_the_same(imported, module, _inputs())


@pytest.mark.parametrize("factory", ["written", "separate_projections"])
def test_an_attention_written_out_reads_as_one(factory):
    """q k^T scaled after the product (not q and k before it), and q, k and v from three
    projections: one attention, the projections' rows in nn.MultiheadAttention's order."""
    module = globals()[factory]()
    imported = import_model(f"{HERE}:{factory}", SIZE)
    kinds = [node.kind for node in imported.spec.model.nodes]
    assert kinds == ["patch_embed", "layer_norm", "attention", "token_pool", "dense"]
    body = module.body
    projections = [body.q, body.k, body.v] if factory == "separate_projections" else [body.qkv]
    np.testing.assert_array_equal(
        imported.tensors["body.in_proj_weight"],
        torch.cat([p.weight for p in projections]).detach().numpy(),
    )
    _assert_computes_the_same(imported, module, _inputs())


# ---- refused ----------------------------------------------------------------------------------

_ATTENTION = (
    "cnnspec's attention is nn.MultiheadAttention's self-attention: the tokens projected to "
    "queries, keys and values, split into heads, softmax(q k^T / sqrt(head size)) v, the heads "
    "joined and projected, every projection with a bias"
)
_BIASES = (
    "cnnspec's attention has a bias on every projection (nn.MultiheadAttention's bias=True, "
    "timm's qkv_bias=True)"
)

REFUSED = [
    (
        "masked",
        "node '/body/attn/Softmax' (Softmax): a mask or bias added to the attention scores: "
        "cnnspec's attention weighs every token, unmasked",
    ),
    (
        "without_bias",
        "node '/body/attn/Softmax' (Softmax): attention without a bias on its query "
        f"projection: {_BIASES}",
    ),
    (
        "timm_tiny_without_bias",
        "2 nodes, first node '/blocks/blocks.0/attn/Softmax' (Softmax): attention without a "
        f"bias on its query projection: {_BIASES}",
    ),
    (
        "weights_used",
        "node '/body/attn/Softmax' (Softmax): attention's weights used besides weighing the "
        "values: cnnspec's attention gives its output alone (need_weights=False)",
    ),
    (
        "cross",
        "node '/body/attn/Softmax' (Softmax): attention of keys and values from other "
        "tokens: cnnspec's attention is self-attention: queries, keys and values of the same "
        "tokens",
    ),
    (
        "unscaled",
        "node '/body/Softmax' (Softmax): attention scaled by 1: cnnspec's attention scales the "
        "scores by 1/sqrt(head size), 0.353553 for heads of 8 features",
    ),
    (
        "last_token",
        "node '/Gather' (Gather): Gather of index -1 on axis 1 of tokens: cnnspec reads one "
        "token, the first (x[:, 0]): token_pool(class)",
    ),
    (
        "kept_mean",
        "node '/ReduceMean' (ReduceMean): ReduceMean over axes [1] of tokens, keepdims=1: "
        "cnnspec averages the tokens to a vector (x.mean(1)): token_pool(mean)",
    ),
    (
        "timm_tiny_mean_after_class",
        "node '/Slice' (Slice): Slice of tokens: cnnspec reads tokens whole: token_pool(class) "
        "the first, token_pool(mean) the mean of all of them",
    ),
    (
        "softmax_of_tokens",
        "node '/body/Softmax' (Softmax): softmax of tokens (N, D): cnnspec's tokens (N, D) go "
        "into add, attention, class_token, dense, dropout, flatten, layer_norm, "
        "layer_scale, position_embedding, reshape, token_pool and the activations but softmax",
    ),
    (
        "tokens_twice",
        "node '/body/Concat' (Concat): Concat of tokens on axis 1: cnnspec puts one learnt "
        "token before the tokens (class_token: torch.cat([token.expand(B, -1, -1), x], "
        "dim=1)), and joins no others",
    ),
]


@pytest.mark.parametrize(("factory", "line"), REFUSED, ids=[case[0] for case in REFUSED])
def test_what_cnnspec_cannot_express_of_a_vit_is_refused_in_one_line(factory, line):
    with pytest.raises(ImportFailure) as failure:
        import_model(f"{HERE}:{factory}", SIZE)
    assert refusal(factory, failure.value) == [
        f"cnnspec: error: cannot import {factory}: {UNSUPPORTED}",
        f"  {line}",
        "nothing written",
    ]


# ---- the real ones, at 224 --------------------------------------------------------------------


@pytest.mark.library
@pytest.mark.parametrize(
    ("factory", "layers", "heads"),
    [("tv_vit_b_16", 12, 12), ("timm_vit_tiny_patch16_224", 12, 3)],
)
def test_a_zoo_vit_imports_with_its_counts_and_outputs(factory, layers, heads):
    if factory.startswith("timm_"):
        _timm()
    zoo = _zoo()

    imported = import_model(f"{ZOO}:{factory}", (224, 224, 3))
    model = zoo.build(factory)
    nodes = imported.spec.model.nodes
    attentions = [node for node in nodes if node.kind == "attention"]
    assert len(attentions) == layers and {node.layer.heads for node in attentions} == {heads}
    assert [node.kind for node in nodes[:3]] == ["patch_embed", "class_token", "position_embedding"]
    assert imported.spec.model.params.trainable == sum(p.numel() for p in model.parameters())
    _assert_computes_the_same(imported, model, _inputs((224, 224, 3)))
