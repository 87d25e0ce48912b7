"""NASNetMobile and NASNetLarge (cnnspec/backbones/nasnet.cnn: one `nasnet` definition, cells
that read the two cells before them through `from`) equal keras.applications layer by layer,
verify across the frameworks, load a weight file in keras.applications' layout by layer name,
and freeze by keras's cell name scopes.

keras.applications leaves the cells' relus, the adjust blocks' ZeroPadding2D, Cropping2D and
concatenate, and one add of each reduction cell unnamed: the library names them as a fresh Keras
session does (activation_N, zero_padding2d_N, cropping2d_N, concatenate_N, add_N), and
keras_application() clears the session before each build, so the strict name check applies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("torch")

import keras
import torch

from cnnspec.compiler import compile_text
from tests.frameworks.backbone_check import (
    assert_equals_keras_applications,
    assert_freezes_by_block,
    assert_verifies,
    keras_application,
    library,
)
from tests.frameworks.scripts import load_script, write_script
from tests.frameworks.test_backbones import write_keras_weight_file
from tests.frameworks.test_keras_script import randomise_batchnorm

pytestmark = pytest.mark.frameworks

# (backbone, input size, include_top, pooling). The classifiers at their native sizes (NASNetMobile
# at 224 reaches 7x7 through even sizes; NASNetLarge at 331 meets odd ones in every stage, where
# correct_pad and the adjust blocks' shifted path pad differently); without them at 32, keras's
# smallest (a 15x15 stem, down to a 1x1 map).
CASES = [
    ("nasnet_mobile", 224, True, None),
    ("nasnet_mobile", 32, False, None),
    library("nasnet_large", 331, True, None),
    library("nasnet_large", 32, False, "avg"),
]


@pytest.mark.parametrize(("name", "size", "include_top", "pooling"), CASES)
def test_backbone_equals_keras_applications(
    name: str, size: int, include_top: bool, pooling: str | None
) -> None:
    assert_equals_keras_applications(name, size, include_top, pooling)


@pytest.mark.parametrize("name", ["nasnet_mobile", library("nasnet_large")])
def test_backbone_verifies_at_the_smallest_size(name: str) -> None:
    assert_verifies(name, 32)


# A normal cell that projects its `p`, the first normal cell after a reduction cell (whose `p`
# is reduced), and a reduction cell.
@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("nasnet_mobile", "normal_A_block_3"),
        ("nasnet_mobile", "normal_A_block_5"),
        ("nasnet_mobile", "reduction_A_block_reduce_4"),
        ("nasnet_large", "reduction_A_block_stem_2"),
    ],
)
def test_backbone_freezes_by_cell(name: str, block: str) -> None:
    assert_freezes_by_block(name, 32, block)


@pytest.mark.library  # slow: `make test-library` runs it
def test_weight_files_load_by_layer_name_and_reproduce_keras_applications(tmp_path: Path) -> None:
    """A weight file in keras.applications' layout (what weights=imagenet downloads for
    include_top=false: random weights and batchnorm statistics here) loads by layer name into
    both generated scripts, which then compute NASNetMobile's own average-pooled features. The
    pixels are in [-1, 1], what NASNet's `tf` preprocessing gives it: NASNet does not rescale
    inside, and on assert_weights_load_by_name's 0-255 pixels its features reach the thousands,
    where float32 rounding alone is 1e-3."""
    keras.utils.set_random_seed(0)
    source = keras_application("nasnet_mobile", 32, False, "avg")
    randomise_batchnorm(source, seed=1)
    weight_file = tmp_path / "nasnet_mobile_no_top.h5"
    write_keras_weight_file(source, weight_file)
    compilation = compile_text(
        "model t { input 32x32x3  backbone nasnet_mobile(weights=none, pooling=avg) }"
        "\ndata { labels sparse }"
    )
    # Pooled features as the output: the checker's E302 says a classifier would need a
    # softmax; the scripts build the network all the same.
    assert {d.code for d in compilation.diagnostics.errors} == {"E302"}
    spec = compilation.spec
    assert spec is not None
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(source(x, training=False))
    # Within 1e-5 of the largest feature (about 50 with these weights): PyTorch sums in another
    # order, about 1e-6 of it off.
    atol = 1e-5 * float(np.abs(expected).max())

    keras_script = load_script(write_script(spec, tmp_path, "keras"))
    model = keras_script.build_model()
    keras_script.load_backbone_weights(model, str(weight_file))
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected, atol=atol)

    torch_script = load_script(write_script(spec, tmp_path, "pytorch"))
    net = torch_script.build_model()
    torch_script.load_backbone_weights(net, str(weight_file))
    net.eval()
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()).numpy()
    np.testing.assert_allclose(got, expected, atol=atol)
