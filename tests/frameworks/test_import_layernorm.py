"""`cnnspec import` of nn.LayerNorm (issue 25: ONNX's LayerNormalization, which torch writes at
opset 17 on, refused before): over the last axis it reads as one layer_norm with its epsilon,
the op's Scale and B as the layer's weight and bias, on a vector and on a map permuted
channels-last and back (ConvNeXt's `x.permute(0, 2, 3, 1)`, torchvision's LayerNorm2d), which
is cnnspec's layer_norm of an (H, W, C) map; a ConvNeXt block (depthwise 7x7, layer norm,
Linear 4C and C on the channels-last map, GELU, a learnt layer scale, residual) imports with
PyTorch's counts and outputs. What layer_norm cannot express (several axes, no learnt scale or
shift, the width of a channels-first map, other ops on a channels-last map) is refused in one
line. The LayerNorm weights are randomised: never the ones and zeros a fresh module holds."""

import warnings

import numpy as np
import pytest

from cnnspec.compiler import compile_text
from cnnspec.export import export
from cnnspec.importing import ImportFailure, import_model, import_network
from cnnspec.importing.onnx_file import network_from_model
from cnnspec.importing.refusal import refusal
from tests.frameworks.import_models.cases import run_onnx, trained_like

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
nn = torch.nn
F = torch.nn.functional

pytestmark = pytest.mark.frameworks

HERE = "tests.frameworks.test_import_layernorm"
SIZE = (8, 8, 3)
UNSUPPORTED = "the model uses what cnnspec cannot express"


# ---- the modules ------------------------------------------------------------------------------


def _randomised(model):
    """Every LayerNorm's weight and bias, and every layer scale, away from 1 and 0."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            if isinstance(owner, nn.LayerNorm) or leaf in ("gamma", "layer_scale"):
                low, high = (-0.5, 0.5) if leaf == "bias" else (0.5, 1.5)
                parameter.copy_(
                    torch.empty_like(parameter).uniform_(low, high, generator=generator)
                )
    return model.eval()


class LayerNorm2d(nn.LayerNorm):
    """torchvision's (torchvision.models.convnext.LayerNorm2d): channels last, normalised,
    back."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    """torchvision.ops.misc.Permute."""

    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class PermutedNorm(nn.Module):
    """A layer norm of the channels as ConvNeXt's block writes it, permuting in forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.LayerNorm(8, eps=1e-6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.conv(x).permute(0, 2, 3, 1)
        x = self.norm(x).permute(0, 3, 1, 2)
        return self.fc(self.pool(x).flatten(1))


class Block(nn.Module):
    """ConvNeXt's block without stochastic depth: depthwise 7x7, layer norm, Linear 4C, GELU,
    Linear C on the channels-last map, a learnt per-channel scale, the residual add. `gamma`
    on the channels-last map (the paper's, timm's: a (C,) parameter); `layer_scale` after the
    permute back (torchvision's CNBlock: (C, 1, 1))."""

    def __init__(self, channels, torchvision_style=False):
        super().__init__()
        self.torchvision_style = torchvision_style
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * channels, channels)
        if torchvision_style:
            self.to_last, self.to_first = Permute([0, 2, 3, 1]), Permute([0, 3, 1, 2])
            self.layer_scale = nn.Parameter(torch.full((channels, 1, 1), 1e-6))
        else:
            self.gamma = nn.Parameter(torch.full((channels,), 1e-6))

    def forward(self, x):
        if self.torchvision_style:
            y = self.to_last(self.dwconv(x))
            y = self.to_first(self.pwconv2(self.act(self.pwconv1(self.norm(y)))))
            return x + self.layer_scale * y
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


def _head(channels=8):
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 5)]


def vector_norm():
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(192, 16), nn.LayerNorm(16), nn.Linear(16, 5)]
    return _randomised(nn.Sequential(*layers))


def permuted_norm():
    torch.manual_seed(0)
    return _randomised(PermutedNorm())


def layer_norm_2d():
    torch.manual_seed(0)
    return _randomised(nn.Sequential(nn.Conv2d(3, 8, 3), LayerNorm2d(8), *_head()))


def _convnext_like(torchvision_style):
    torch.manual_seed(0)
    stem = [nn.Conv2d(3, 8, 2, stride=2), LayerNorm2d(8, eps=1e-6)]
    block = Block(8, torchvision_style)
    return _randomised(nn.Sequential(*stem, block, *_head()))


def convnext_block():
    return _convnext_like(torchvision_style=False)


def convnext_block_torchvision():
    return _convnext_like(torchvision_style=True)


def _export(module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, opset_version=20
        )


def _expected(module, x):
    with torch.no_grad():
        return torch.softmax(module(torch.from_numpy(x)), 1).numpy()


def _inputs():
    return np.random.default_rng(0).standard_normal((2, 3, 8, 8), dtype=np.float32)


def _outputs(imported, x):
    return run_onnx(export(imported.spec, imported.tensors), x)


def _counts(module):
    return sum(p.numel() for p in module.parameters())


# ---- (a)-(c): one layer norm ------------------------------------------------------------------

ONE_NORM = [
    # factory, the spec's kinds, the layer norm's name and epsilon, its module in torch
    ("vector_norm", ["flatten", "dense", "layer_norm", "dense"], "m_2", 1e-5, "2"),
    ("permuted_norm", ["conv2d", "layer_norm", "global_avg_pool", "dense"], "norm", 1e-6, "norm"),
    ("layer_norm_2d", ["conv2d", "layer_norm", "global_avg_pool", "dense"], "m_1", 1e-5, "1"),
]


@pytest.mark.parametrize(("factory", "kinds", "name", "epsilon", "module_path"), ONE_NORM)
def test_a_layer_norm_of_the_channels_imports_as_one_layer_norm_through_both_routes(
    factory, kinds, name, epsilon, module_path, tmp_path
):
    module = globals()[factory]()
    path = tmp_path / f"{factory}.onnx"
    _export(module, path)
    x = _inputs()
    expected = _expected(module, x)
    norm = module.get_submodule(module_path)
    assert not torch.allclose(norm.weight, torch.ones(1)) and norm.bias.abs().min() > 0
    routes = {
        "module": import_model(f"{HERE}:{factory}", SIZE),
        "onnx file": import_model(str(path)),
    }
    for route, imported in routes.items():
        nodes = imported.spec.model.nodes
        assert [node.kind for node in nodes] == kinds, route
        layer = next(node for node in nodes if node.kind == "layer_norm")
        assert (layer.name, layer.layer.epsilon) == (name, epsilon), route
        before = nodes[kinds.index("layer_norm") - 1]  # (16,) or (6, 6, 8)
        assert layer.output_shape == before.output_shape, route
        for key in ("weight", "bias"):
            np.testing.assert_array_equal(
                imported.tensors[f"{name}.{key}"], getattr(norm, key).detach().numpy(), route
            )
        assert imported.spec.model.params.trainable == _counts(module), route
        np.testing.assert_allclose(_outputs(imported, x), expected, atol=1e-5, err_msg=route)


# ---- (d): a ConvNeXt block ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "scale"),
    [("convnext_block", "m_2_gamma"), ("convnext_block_torchvision", "m_2_layer_scale")],
)
def test_a_convnext_block_imports_with_its_counts_and_outputs(factory, scale):
    module = globals()[factory]()
    imported = import_model(f"{HERE}:{factory}", SIZE)
    nodes = {node.name: node for node in imported.spec.model.nodes}
    assert [node.kind for node in imported.spec.model.nodes] == [
        "conv2d",
        "layer_norm",
        "depthwise_conv2d",
        "layer_norm",
        "dense",
        "gelu",
        "dense",
        "layer_scale",
        "add",
        "global_avg_pool",
        "dense",
    ]
    # The Linears act on the channels of the (4, 4, C) map, each with its bias.
    assert nodes["m_2_pwconv1"].output_shape == (4, 4, 32)
    assert nodes["m_2_pwconv2"].output_shape == (4, 4, 8)
    assert nodes["m_2_pwconv1"].layer.use_bias and nodes["m_2_pwconv2"].layer.use_bias
    assert nodes["m_2_norm"].layer.epsilon == 1e-6
    learnt = getattr(module.get_submodule("2"), scale.removeprefix("m_2_"))
    np.testing.assert_array_equal(
        imported.tensors[f"{scale}.weight"], learnt.detach().numpy().reshape(-1)
    )
    # The block is a residual: the layer scale's path the body, the block's input the shortcut.
    assert "residual {" in imported.text and "layer_scale(name=m_2_" in imported.text
    assert imported.spec.model.params.trainable == _counts(module)
    assert imported.spec.model.params.non_trainable == 0
    x = _inputs()
    np.testing.assert_allclose(_outputs(imported, x), _expected(module, x), atol=1e-5)


def test_a_convnext_block_in_an_onnx_file_computes_the_same(tmp_path):
    """In a file, without the module, nothing says gamma is learnt rather than a constant: its
    multiply is a rescaling by its values, which computes the same."""
    module = convnext_block()
    path = tmp_path / "convnext_block.onnx"
    _export(module, path)
    imported = import_model(str(path))
    kinds = [node.kind for node in imported.spec.model.nodes]
    assert kinds.count("layer_norm") == 2 and kinds.count("dense") == 3
    x = _inputs()
    np.testing.assert_allclose(_outputs(imported, x), _expected(module, x), atol=1e-5)


# ---- (e): refused in one line ---------------------------------------------------------------


def several_axes():
    torch.manual_seed(0)
    return _randomised(nn.Sequential(nn.Conv2d(3, 8, 3), nn.LayerNorm((8, 6, 6)), *_head()))


def without_affine():
    torch.manual_seed(0)
    norm = nn.LayerNorm(16, elementwise_affine=False)
    return _randomised(nn.Sequential(nn.Flatten(), nn.Linear(192, 16), norm, nn.Linear(16, 5)))


def without_bias():
    torch.manual_seed(0)
    norm = nn.LayerNorm(16, bias=False)
    return _randomised(nn.Sequential(nn.Flatten(), nn.Linear(192, 16), norm, nn.Linear(16, 5)))


def width_of_a_map():
    """nn.LayerNorm(W) on an NCHW map normalises its width, not its channels."""
    torch.manual_seed(0)
    return _randomised(nn.Sequential(nn.Conv2d(3, 8, 3), nn.LayerNorm(6), *_head()))


class _ChannelsLastMean(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x).permute(0, 2, 3, 1)).mean(dim=(1, 2)))


def pooled_channels_last():
    """A mean over the height and width of the channels-last map: no layer of the channels."""
    torch.manual_seed(0)
    return _randomised(_ChannelsLastMean())


class _Swapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Sequential(*_head())

    def forward(self, x):
        return self.head(self.conv(x).transpose(2, 3))


def swapped_axes():
    """A transpose of the height and width: not to channels-last and back."""
    torch.manual_seed(0)
    return _Swapped().eval()


REFUSED = [
    (
        "several_axes",
        "node '/1/LayerNormalization' (LayerNormalization): LayerNormalization over 3 axes "
        "(axis=-3): cnnspec's layer_norm normalizes one axis, the last (the channels): "
        "nn.LayerNorm(C) of a vector or of a map permuted channels-last",
    ),
    (
        "without_affine",
        "node '/2/LayerNormalization' (LayerNormalization): LayerNormalization without a "
        "learnt scale and shift (elementwise_affine=False): cnnspec's layer_norm learns a "
        "scale and a shift per channel",
    ),
    (
        "without_bias",
        "node '/2/LayerNormalization' (LayerNormalization): LayerNormalization without a "
        "learnt shift (bias=False): cnnspec's layer_norm learns a scale and a shift per "
        "channel",
    ),
    (
        "width_of_a_map",
        "node '/1/LayerNormalization' (LayerNormalization): LayerNormalization of the width of "
        "a channels-first map: cnnspec's layer_norm normalizes the channels: of a vector, or "
        "of a map permuted to channels-last (x.permute(0, 2, 3, 1)) and back",
    ),
    (
        "pooled_channels_last",
        "node '/ReduceMean' (ReduceMean): ONNX op ReduceMean on a channels-last map: cnnspec "
        "reads a map transposed to channels-last only through layers of its last axis, the "
        "channels (layer_norm, dense, activations, a per-channel scale, a join of two such "
        "maps), up to the transpose back",
    ),
    (
        "swapped_axes",
        "node '/Transpose' (Transpose): Transpose [0, 1, 3, 2] of a channels-first map: "
        "cnnspec's maps are channels-last throughout: it reads a map permuted to channels-last "
        "(0, 2, 3, 1) and back (0, 3, 1, 2) around layers of the channels",
    ),
]


@pytest.mark.parametrize(("factory", "line"), REFUSED, ids=[case[0] for case in REFUSED])
def test_what_layer_norm_cannot_express_is_refused_in_one_line(factory, line):
    with pytest.raises(ImportFailure) as failure:
        import_model(f"{HERE}:{factory}", SIZE)
    assert refusal(factory, failure.value) == [
        f"cnnspec: error: cannot import {factory}: {UNSUPPORTED}",
        f"  {line}",
        "nothing written",
    ]


# ---- cnnspec's own export still reads back by its steps ----------------------------------------

OWN = """\
model own {
  input 8x8x3
  conv2d(8, 3)
  layer_norm(epsilon=1e-6)
  global_avg_pool()
  layer_norm()
  dense(5, activation=softmax)
}
"""


def test_cnnspecs_own_layer_norms_still_import_by_their_steps():
    spec = compile_text(OWN, "own.cnn").spec
    model = export(spec, trained_like(spec))
    assert "LayerNormalization" not in {node.op_type for node in model.graph.node}
    imported = import_network(network_from_model(model, "own.onnx"))
    read = [(node.name, node.kind) for node in imported.spec.model.nodes]
    assert read == [(node.name, node.kind) for node in spec.model.nodes]
    epsilons = [n.layer.epsilon for n in imported.spec.model.nodes if n.kind == "layer_norm"]
    assert epsilons == [1e-6, 1e-3]
    x = _inputs()
    np.testing.assert_allclose(_outputs(imported, x), run_onnx(model, x), atol=1e-5)
