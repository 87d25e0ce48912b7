"""Round trips through Keras model files: a spec's generated Keras model, saved as `.keras`
and as a legacy `.h5`, imports back to the same network (names, kinds, shapes, counts) whose
outputs equal the Keras model's within 1e-4."""

from pathlib import Path

import numpy as np
import pytest

from cnnspec.compiler import compile_file
from cnnspec.export import initial_weights
from cnnspec.importing import import_model

keras = pytest.importorskip("keras")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.frameworks

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.cnn"))
SMALL = {
    "pneumonia_vgg16": 48,
    "pneumonia_vgg16_imagenet": 48,
    "resnet50_transfer": 48,
    "mobilenet_v2_transfer": 48,
}
INFERENCE_IDENTITIES = ("dropout", "spatial_dropout", "stochastic_depth")


def _nontrivial(weights: dict) -> dict:
    rng = np.random.default_rng(3)
    result = {}
    for key, value in weights.items():
        if key.endswith(("running_var", "variance")):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif key.endswith(("running_mean", "bias", "mean")):
            value = rng.uniform(-0.5, 0.5, value.shape)
        result[key] = np.asarray(value, dtype=np.float32)
    return result


def keras_model_of(path: Path, size: int | None, directory: Path):
    """The spec's Keras model as its generated script builds it, with non-trivial weights."""
    from safetensors.numpy import save_file

    from cnnspec.verify import _load_script

    spec = compile_file(path, (size, size) if size else None).spec
    script = _load_script(spec, "keras", directory)
    model = script.build_model()
    weights = directory / "weights.safetensors"
    save_file(_nontrivial(initial_weights(spec, 0)), str(weights))
    script.load_weights(model, weights)
    return spec, model


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_shipped_spec_round_trips_through_a_keras_file(path: Path, tmp_path: Path):
    spec, model = keras_model_of(path, SMALL.get(path.stem), tmp_path)
    suffix = ".h5" if path.stem == "digits" else ".keras"  # the legacy format, once
    file = tmp_path / f"model{suffix}"
    model.save(file)
    imported = import_model(str(file))
    original = {n.name: n for n in spec.model.nodes}
    back = {n.name: n for n in imported.spec.model.nodes}
    assert list(back) == list(original)
    for name, node in original.items():
        assert back[name].kind == node.kind, name
        assert back[name].output_shape == node.output_shape, name
        assert back[name].params == node.params, name
    h, w, c = spec.model.input_shape
    x = np.random.default_rng(1).standard_normal((2, h, w, c)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    from cnnspec.export import export

    session = ort.InferenceSession(
        export(imported.spec, imported.tensors).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    actual = session.run(None, {"image": x.transpose(0, 3, 1, 2).copy()})[0]
    np.testing.assert_allclose(actual, expected, atol=1e-4)
