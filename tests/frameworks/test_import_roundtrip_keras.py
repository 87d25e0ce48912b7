"""Round trips through Keras model files: a spec's generated Keras model, saved as `.keras`
and as a legacy `.h5`, imports back to the same network (names, kinds, shapes, counts) whose
outputs equal the Keras model's within 1e-4."""

from pathlib import Path

import numpy as np
import pytest

from cnnspec.compiler import compile_file
from cnnspec.importing import import_model
from tests.frameworks.import_models.cases import (
    SPECS,
    assert_same_layers,
    image_size,
    run_onnx,
    trained_like,
)

keras = pytest.importorskip("keras")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.frameworks


def keras_model_of(path: Path, directory: Path):
    """The spec's Keras model as its generated script builds it, with non-trivial weights."""
    from safetensors.numpy import save_file

    from cnnspec.verify import _load_script

    spec = compile_file(path, image_size(path)).spec
    script = _load_script(spec, "keras", directory)
    model = script.build_model()
    weights = directory / "weights.safetensors"
    save_file(trained_like(spec), str(weights))
    script.load_weights(model, weights)
    return spec, model


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_round_trips_through_a_keras_file(path: Path, tmp_path: Path):
    spec, model = keras_model_of(path, tmp_path)
    suffix = ".h5" if path.stem == "digits" else ".keras"  # the legacy format, once
    file = tmp_path / f"model{suffix}"
    model.save(file)
    imported = import_model(str(file))
    assert_same_layers(spec.model, imported.spec.model)
    h, w, c = spec.model.input_shape
    x = np.random.default_rng(1).standard_normal((2, h, w, c)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    from cnnspec.export import export

    nchw = x.transpose(0, 3, 1, 2).copy()
    actual = run_onnx(export(imported.spec, imported.tensors), nchw)
    np.testing.assert_allclose(actual, expected, atol=1e-4)
