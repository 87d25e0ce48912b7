"""`cnnspec import` of the zoo's concatenations and classifiers that the survey found refused
(issue 25): DenseNet's concat of all of a block's features so far (a chain of two-input concats
once imported), InceptionE's nested torch.cat that the exporter flattens (nested concats again),
SqueezeNet's classifier of a convolution's channels pooled (a softmax after it), and a model
too large for an in-memory export (to a file). Each through the factory route, against torch's
outputs."""

from __future__ import annotations

import numpy as np
import pytest

from cnnspec.export import export
from cnnspec.importing import import_model, structure
from tests.frameworks.import_models.cases import assert_computes_what_torch_does, run_onnx

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
nn = torch.nn

pytestmark = pytest.mark.frameworks

HERE = "tests.frameworks.test_import_concat"


def _randomized(model):
    """Seeded weights, batchnorms with statistics unlike the initial ones, in eval mode."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
    return model.eval()


def _unit(cin: int, cout: int, kernel=1, padding=0) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class DenseBlock(nn.Module):
    """torchvision's _DenseBlock: each layer reads torch.cat of every feature so far, and the
    block's output is the cat of all."""

    def __init__(self, channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(channels + i * growth),
                nn.ReLU(),
                nn.Conv2d(channels + i * growth, growth, 3, padding=1, bias=False),
            )
            for i in range(layers)
        )

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.block = DenseBlock(8, 4, 4)
        self.norm = nn.BatchNorm2d(8 + 4 * 4)
        self.fc = nn.Linear(8 + 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.norm(self.block(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InceptionE(nn.Module):
    """torchvision's InceptionE: cat([b1, cat([b3a, b3b]), cat([d3a, d3b]), pool])."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch1x1 = _unit(cin, 6)
        self.branch3x3_1 = _unit(cin, 5)
        self.branch3x3_2a = _unit(5, 4, (1, 3), (0, 1))
        self.branch3x3_2b = _unit(5, 3, (3, 1), (1, 0))
        self.dbl_1 = _unit(cin, 4)
        self.dbl_2 = _unit(4, 4, 3, 1)
        self.dbl_3a = _unit(4, 2, (1, 3), (0, 1))
        self.dbl_3b = _unit(4, 5, (3, 1), (1, 0))
        self.pool = _unit(cin, 3)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d3 = self.dbl_2(self.dbl_1(x))
        d3 = torch.cat([self.dbl_3a(d3), self.dbl_3b(d3)], 1)
        pool = self.pool(nn.functional.avg_pool2d(x, 3, stride=1, padding=1))
        return torch.cat([b1, b3, d3, pool], 1)


class Inception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = _unit(3, 8, 3, 1)
        self.mixed = InceptionE(8)
        self.fc = nn.Linear(6 + 7 + 7 + 3, 5)

    def forward(self, x):
        x = self.mixed(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class SqueezeHead(nn.Module):
    """torchvision's SqueezeNet classifier: a 1x1 convolution to one channel a class, ReLU,
    global average pooling and flatten: class scores, no dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _unit(3, 8, 3, 1)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(8, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1))
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


def dense_net() -> nn.Module:
    torch.manual_seed(0)
    return _randomized(DenseNet())


def inception_e() -> nn.Module:
    torch.manual_seed(0)
    return _randomized(Inception())


def squeeze_head() -> nn.Module:
    torch.manual_seed(0)
    return _randomized(SqueezeHead())


def _imports_exactly(factory, size=(16, 16, 3), atol=1e-5, model=None):
    imported = import_model(f"{HERE}:{factory.__name__}", size)
    model = model if model is not None else factory()
    assert imported.spec.model.params.trainable == sum(p.numel() for p in model.parameters())
    x = np.random.default_rng(0).standard_normal((2, size[2], size[0], size[1]))
    x = x.astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
    found = run_onnx(export(imported.spec, imported.tensors), x)
    np.testing.assert_allclose(found, expected, atol=atol)
    return imported


def test_a_dense_block_imports_as_a_chain_of_concats():
    imported = _imports_exactly(dense_net)
    concats = [node for node in imported.spec.model.nodes if node.kind == "concat"]
    # Layer k's input and the block's output: four two-input concats, in the block's order.
    assert len(concats) == 4
    assert all(len(node.inputs) == 2 for node in concats)
    assert [node.output_shape[-1] for node in concats] == [12, 16, 20, 24]
    assert imported.text.count("branch {}") == 4


def test_an_inception_e_nested_cat_imports_as_nested_concats():
    imported = _imports_exactly(inception_e)
    concats = [node for node in imported.spec.model.nodes if node.kind == "concat"]
    # The exporter's one concat of six inputs, as the module's three.
    assert sorted(len(node.inputs) for node in concats) == [2, 2, 4]
    assert sorted(node.output_shape[-1] for node in concats) == [7, 7, 23]


def test_a_squeezenet_classifier_gets_a_softmax():
    imported = _imports_exactly(squeeze_head)
    last = imported.spec.model.nodes[-1]
    assert last.kind == "softmax" and tuple(last.output_shape) == (5,)
    assert any("softmax" in note for note in imported.notes)


def test_concats_the_rewrite_cannot_nest_are_written_with_from():
    """Concats the rewrite cannot nest (one stem's inputs apart) are nested as read, the
    stem's second use read again with `from`."""
    from cnnspec.importing.network import INPUT, Layer, Network
    from cnnspec.nesting import froms_of

    layers = [
        Layer("a", "conv2d", {"filters": 2}, (INPUT,)),
        Layer("a1", "relu", {}, ("a",)),
        Layer("b", "conv2d", {"filters": 2}, (INPUT,)),
        Layer("a2", "relu", {}, ("a",)),
        Layer("cat", "concat", {}, ("a1", "b", "a2")),
    ]
    network = Network("n", (8, 8, 3), layers, "cat")
    items = structure.nest(network)
    assert froms_of(items) == ["a"]
    assert [layer.inputs for layer in network.layers] == [layer.inputs for layer in layers]


def test_a_large_model_is_exported_to_a_file(monkeypatch):
    """Over the in-memory limit (protobuf's 2 GiB, here made 0 bytes), the export goes to a
    file in a temporary folder and is loaded back with its external data."""
    from cnnspec.importing import torch_module

    monkeypatch.setattr(torch_module, "IN_MEMORY_BYTES", 0)
    loads = []
    load = onnx.load

    def spy(path, *args, **kwargs):
        loads.append((path, kwargs))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(onnx, "load", spy)
    _imports_exactly(squeeze_head)
    assert len(loads) == 1 and loads[0][0].endswith("model.onnx")
    assert loads[0][1] == {"load_external_data": True}


@pytest.mark.library
@pytest.mark.parametrize(
    "factory", ["tv_densenet121", "tv_inception_v3", "tv_squeezenet1_1", "timm_densenet121"]
)
def test_zoo_model_imports_exactly(factory):
    from tests.frameworks import zoo

    try:
        zoo.torchvision()
        if factory.startswith("timm_"):
            zoo.timm()
    except ImportError:
        pytest.skip("torchvision or timm is not installed")
    size = zoo.input_size(factory)
    imported = import_model(f"tests.frameworks.zoo:{factory}", size)
    model = zoo.build(factory)
    # inception_v3's auxiliary classifier computes nothing in eval mode: not in the export.
    aux = getattr(model, "AuxLogits", None)
    unused = sum(p.numel() for p in aux.parameters()) if aux is not None else 0
    trainable = sum(p.numel() for p in model.parameters()) - unused
    assert imported.spec.model.params.trainable == trainable
    x = np.random.default_rng(0).standard_normal((2, size[2], size[0], size[1]))
    x = x.astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    assert_computes_what_torch_does(imported, logits, x)
