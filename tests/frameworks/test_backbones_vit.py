"""torchvision's Vision Transformers as library backbones (cnnspec/backbones/vit.cnn).

torchvision is the reference, built by the tests: the checker's counts with and without the
classifier are its models' parameter counts; the spec's tensors are exactly its state dict's,
key for key (through the library's TORCHVISION_KEYS) and shape for shape; and a checkpoint it
writes (random weights, with random biases, class token and position embeddings) loads into
both generated scripts, which then compute what torchvision computes. At another input size the
position embeddings are fitted to the grid of patches as torchvision's interpolate_embeddings
fits them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("keras")

import torch

from cnnspec.backbones import BACKBONES
from tests.frameworks.scripts import checked_spec, load_script, write_script
from tests.frameworks.zoo import torchvision

pytestmark = pytest.mark.frameworks

TORCHVISION = {
    "vit_b16": "vit_b_16",
    "vit_b32": "vit_b_32",
    "vit_l16": "vit_l_16",
    "vit_l32": "vit_l_32",
}
# torchvision's own counts, with the 1000-class classifier.
COUNTS = {
    "vit_b16": 86_567_656,
    "vit_b32": 88_224_232,
    "vit_l16": 304_326_632,
    "vit_l32": 306_535_400,
}
SIZES = [
    pytest.param("vit_b16"),
    pytest.param("vit_b32", marks=pytest.mark.library),
    pytest.param("vit_l16", marks=pytest.mark.library),
    pytest.param("vit_l32", marks=pytest.mark.library),
]


def spec_text(name: str, size: int = 224, top: bool = True, weights: str = "none") -> str:
    head = (
        "" if top else "head { token_pool(class) dense(1000, activation=softmax, name=heads_head) }"
    )
    return f"""model m {{
      input {size}x{size}x3
      backbone {name}(include_top={str(top).lower()}, weights="{weights}")
      {head}
    }}"""


def torchvision_keys(name: str, keys: list[str]) -> dict[str, str]:
    """The scripts' TORCHVISION_KEYS applied to each canonical key, as runtime's
    torchvision_key applies them."""
    mapped = {}
    for key in keys:
        for pattern, replacement in BACKBONES[name].torchvision_keys:
            renamed, count = re.subn(pattern, replacement, key)
            if count:
                key_out = renamed
                break
        else:
            key_out = key
        mapped[key] = key_out
    return mapped


def spec_tensors(text: str) -> dict[str, tuple[int, ...]]:
    spec = checked_spec(text.replace('weights="none"', "weights=none"))
    shapes = spec.model.value_shapes()
    return {
        f"{node.name}.{suffix}": shape
        for node in spec.model.nodes
        for suffix, shape in node.layer.weight_shapes([shapes[i] for i in node.inputs]).items()
    }


@pytest.mark.parametrize("name", SIZES)
def test_counts_and_tensors_are_torchvisions(name: str) -> None:
    reference = getattr(torchvision().models, TORCHVISION[name])()
    state = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    assert sum(int(np.prod(s)) for s in state.values()) == COUNTS[name]
    with_top = checked_spec(spec_text(name).replace('"none"', "none")).model.params
    assert (with_top.total, with_top.trainable) == (COUNTS[name], COUNTS[name])
    pooled = checked_spec(
        f"model m {{ input 224x224x3 backbone {name}(weights=none, pooling=avg) "
        "head { dense(2, activation=softmax) } }"
    ).model
    assert pooled.backbone is not None
    without = sum(n.params.total for n in pooled.nodes if n.name in pooled.backbone.nodes)
    assert without == COUNTS[name] - (768 if "_b" in name else 1024) * 1000 - 1000
    tensors = spec_tensors(spec_text(name))
    mapped = torchvision_keys(name, list(tensors))
    assert sorted(mapped.values()) == sorted(state)
    for key, shape in tensors.items():
        assert state[mapped[key]] == shape, key


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """torchvision's ViT-B/32, random, with random biases, class token and position
    embeddings, saved as torch.save saves a checkpoint."""
    torch.manual_seed(0)
    reference = torchvision().models.vit_b_32().eval()
    with torch.no_grad():
        for key, parameter in reference.named_parameters():
            if key.endswith("bias") or key in ("class_token", "encoder.pos_embedding"):
                parameter.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("vit") / "vit_b_32.pth"
    torch.save(reference.state_dict(), path)
    return path, reference


def pytorch_model(text: str, directory: Path, weights: Path) -> Any:
    net = load_script(write_script(checked_spec(text), directory, "pytorch")).build_model()
    sys.modules[type(net).__module__].load_torchvision_weights(net, str(weights))
    return net.eval()


def test_the_pytorch_script_loads_torchvisions_checkpoint(
    checkpoint: tuple[Path, Any], tmp_path: Path
) -> None:
    path, reference = checkpoint
    net = pytorch_model(spec_text("vit_b32", weights=str(path)), tmp_path, path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch.softmax(reference(x), dim=1)
        torch.testing.assert_close(net(x), expected, atol=1e-7, rtol=1e-5)


def test_position_embeddings_fit_another_input_size(
    checkpoint: tuple[Path, Any], tmp_path: Path
) -> None:
    """At 96x96 the 7x7 grid of the checkpoint's position embeddings becomes 3x3 as
    torchvision's interpolate_embeddings makes it (bicubic, corners aligned)."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    path, reference = checkpoint
    small = torchvision().models.vit_b_32(image_size=96).eval()
    small.load_state_dict(interpolate_embeddings(96, 32, reference.state_dict()))
    net = pytorch_model(spec_text("vit_b32", 96, top=False, weights=str(path)), tmp_path, path)
    net.heads_head.load_state_dict(small.heads.head.state_dict())
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(net(x), torch.softmax(small(x), dim=1), atol=1e-7, rtol=1e-5)


def test_resize_bicubic_is_torchs() -> None:
    from cnnspec.runtime.common import resize_bicubic

    grid = np.random.default_rng(0).standard_normal((14, 14, 3))
    for size in ((7, 7), (4, 6), (20, 9), (1, 3), (14, 14)):
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(grid).permute(2, 0, 1)[None],
            size=size,
            mode="bicubic",
            align_corners=True,
        )[0].permute(1, 2, 0)
        np.testing.assert_allclose(resize_bicubic(grid, size), expected.numpy(), atol=1e-12)


def test_the_keras_script_reads_a_checkpoint_without_torch(tmp_path: Path) -> None:
    """read_torch_checkpoint rebuilds every tensor torch.save wrote (float32, float16,
    bfloat16, int64; views at an offset and with strides, sharing one storage) and
    runs nothing else the pickle names."""
    from cnnspec.runtime.keras import read_torch_checkpoint

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "weight": torch.randn(3, 5),
        "half": torch.randn(4).half(),
        "bf16": torch.randn(4).to(torch.bfloat16),
        "count": torch.tensor([7, 8], dtype=torch.int64),
        "column": base[:, 2],
        "transposed": base.t()[1:],
    }
    path = tmp_path / "state.pth"
    torch.save(state, path)
    read = read_torch_checkpoint(path)
    assert set(read) == set(state)
    for key, tensor in state.items():
        np.testing.assert_array_equal(
            read[key], tensor.float().numpy() if key == "bf16" else tensor.numpy(), err_msg=key
        )

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("ran",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    import pickle

    with pytest.raises(pickle.UnpicklingError, match="print is not a tensor"):
        read_torch_checkpoint(tmp_path / "evil.pth")


@pytest.mark.library
@pytest.mark.parametrize("size", [(224, 224), (64, 96)])
def test_the_keras_script_computes_what_the_pytorch_script_does(
    checkpoint: tuple[Path, Any], tmp_path: Path, size: tuple[int, int]
) -> None:
    """Both scripts load the same checkpoint (Keras through its own reader) and agree."""
    path, _ = checkpoint
    h, w = size
    text = spec_text("vit_b32", weights=str(path)).replace("224x224x3", f"{h}x{w}x3")
    if size != (224, 224):
        text = spec_text("vit_b32", top=False, weights=str(path)).replace("224x224x3", f"{h}x{w}x3")
    net = pytorch_model(text, tmp_path, path)
    script = load_script(write_script(checked_spec(text), tmp_path, "keras"))
    model = script.build_model()
    script.load_torchvision_weights(model, str(path))
    if size != (224, 224):  # the new head: the same weights in both
        head = model.get_layer("heads_head")
        kernel, bias = (np.asarray(v) for v in head.weights)
        with torch.no_grad():
            net.heads_head.weight.copy_(torch.from_numpy(kernel.T))
            net.heads_head.bias.copy_(torch.from_numpy(bias))
    x = np.random.default_rng(3).standard_normal((2, h, w, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected, atol=1e-6)


@pytest.mark.library
def test_verify_agrees_across_keras_pytorch_and_onnx() -> None:
    from cnnspec import verify
    from tests.campaign import random_weights

    spec = checked_spec(spec_text("vit_b32").replace('"none"', "none"))
    report = verify.run_verify(spec, random_weights(spec, np.random.default_rng(0)), 1e-4, batch=1)
    assert report.passed(1e-4), report


def test_the_preprocessing_is_torchvisions() -> None:
    """`preprocess imagenet` on a ViT backbone is torchvision's transforms' normalisation."""
    from cnnspec.preprocessing import MODES

    transforms = torchvision().models.ViT_B_16_Weights.IMAGENET1K_V1.transforms()
    rule = MODES[BACKBONES["vit_b16"].preprocessing]
    assert rule.rescale == 1 / 255 and not rule.bgr
    np.testing.assert_allclose(rule.mean, transforms.mean)
    np.testing.assert_allclose(rule.std, transforms.std)
