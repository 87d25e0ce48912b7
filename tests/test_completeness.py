"""Every registry against every backend: a kind, augmentation, optimizer, schedule, loss or callback
without a Keras, PyTorch or ONNX emitter fails here, not in a user's build. The walk reads the
backends' emitter tables (cnnspec.emitters), which are what the backends themselves call, and
calls each emitter on a sample of the entry. No framework is needed.

The readers' side (every class and op the emitters write is read back by `cnnspec import`) is
tests/test_import_entries.py; the data sources and metrics, which are declarations rather than
methods, are walked in tests/test_build.py."""

from __future__ import annotations

from typing import Any

import pytest

from cnnspec import codes
from cnnspec.backends import REGISTRY as BACKENDS
from cnnspec.backends import keras as keras_backend
from cnnspec.backends import pytorch as pytorch_backend
from cnnspec.codegen import Call, Code
from cnnspec.emitters import Emitters, tables
from cnnspec.registry import REGISTRY, LayerArgs, ShapeError, Unsupported, emitting
from tests.test_build import _RecordingBuilder

# Samples of the entries whose arguments have no default.
SAMPLES: dict[str, dict[str, Any]] = {
    "conv2d": {"filters": 4},
    "dense": {"units": 4},
    "dropout": {"rate": 0.1},
    "spatial_dropout": {"rate": 0.1},
    "separable_conv2d": {"filters": 4},
    "stochastic_depth": {"rate": 0.1},
    "rescaling": {"scale": 0.5},
    "reshape": {"target": (-1,)},
    "channel_shuffle": {"groups": 3},
    "channel_slice": {"start": 1, "stop": 3},
    "patch_embed": {"dim": 4, "patch": 2},
    "attention": {"heads": 1},
    "window_attention": {"heads": 1, "size": 4, "shift": 2},
    "partition_attention": {"heads": 1, "size": 4},
    "rotation": {"degrees": 10.0},
    "adam": {"lr": 0.001},
    "adamw": {"lr": 0.001},
    "sgd": {"lr": 0.01},
    "rmsprop": {"lr": 0.001},
    "step": {"every": 2},
    "exponential": {"rate": 0.9},
}
MAP = (8, 8, 3)
TOKENS = (16, 8)


def sample_input(layer: Any, arity: int) -> tuple[int, ...]:
    """An (8, 8, 3) map, or (16, 8) tokens for the kinds that take nothing else."""
    try:
        layer.output_shape([MAP] * arity)
    except ShapeError as error:
        if error.code == codes.NEEDS_TOKENS:
            return TOKENS
    return MAP


def sample(kind: str, entry: type) -> Any:
    needed = SAMPLES.get(kind, {})
    if "factor" in getattr(entry, "model_fields", {}) and "factor" not in needed:
        needed = {**needed, "factor": 0.1}
    return entry.model_validate(needed)  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend_name", list(BACKENDS))
def test_every_entry_of_every_registry_has_an_emitter(backend_name: str) -> None:
    found = tables(backend_name)
    expected = {"layers"} | (
        {"augmentations", "optimizers", "schedules", "losses", "metrics", "callbacks"}
        if BACKENDS[backend_name].script
        else set()
    )
    assert set(found) == expected
    for registry, table in found.items():
        assert list(table.missing()) == [], f"{backend_name} cannot write these {registry}"


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_layer_emitter_writes_a_well_formed_layer(kind: str) -> None:
    """Each layer's emitters, called through the tables on the kind's defaults on an (8, 8, 3)
    map (or (16, 8) tokens): one Keras layer carries the node's name, the helpers they name exist, the ONNX
    emitter reads exactly the canonical tensors the layer declares, and Keras's weights map
    onto exactly those tensors."""
    cls = REGISTRY[kind]
    layer = sample(kind, cls)
    keras = tables("keras")["layers"].emit(layer)
    assert keras and [k.suffix for k in keras].count("") == 1
    for helper in layer.keras_helpers():
        assert helper in keras_backend.HELPERS, helper
    arity = 2 if cls.arity is None else cls.arity
    shape = sample_input(layer, arity)
    torch_layer = tables("pytorch")["layers"].emit(layer, [shape] * arity)
    assert torch_layer.module is not None or "{module}" not in torch_layer.apply
    for helper in torch_layer.helpers:
        assert helper in pytorch_backend.HELPERS, helper
    if cls.is_activation:
        assert "\0" in repr(layer.torch_function())
    recorder = _RecordingBuilder()
    inputs = [f"in{i}" for i in range(arity)]
    output = tables("onnx")["layers"].emit(layer, recorder, "node", inputs, [shape] * arity)
    assert output in {*recorder.outputs, *inputs}
    shapes = layer.weight_shapes([shape] * arity)
    assert recorder.weights == {f"node.{suffix}" for suffix in shapes}
    assert {w.suffix for w in layer.keras_weights()} == set(shapes)
    for suffix in shapes:
        value = layer.initial_value(suffix)
        assert value is None or isinstance(value, float), suffix


@pytest.mark.parametrize(
    "registry", ["augmentations", "optimizers", "schedules", "losses", "metrics", "callbacks"]
)
def test_every_training_entry_writes_both_scripts_code(registry: str) -> None:
    for backend_name in ("keras", "pytorch"):
        table = tables(backend_name)[registry]
        for kind, entry in table.entries.items():
            instance = sample(kind, entry)
            if registry == "augmentations":
                args: tuple[Any, ...] = (
                    ({"fill_mode": "nearest"},) if backend_name == "keras" else ()
                )
            elif registry == "optimizers" and backend_name == "pytorch":
                args = (Code("model.parameters()"),)
            elif registry == "schedules":
                args = (0.01, 10)  # the optimizer's rate and the phase's epochs
            elif registry == "metrics" and backend_name == "keras":
                args = ("onehot",)  # the labels' encoding
            else:
                args = ()
            written = table.emit(instance, *args)
            if registry == "augmentations" and kind == "fill":
                assert written is None  # an option of the geometric steps
            elif registry == "schedules" and kind == "constant":
                # The optimizer's own rate: Keras's learning_rate, no PyTorch callback.
                assert written == (0.01 if backend_name == "keras" else None)
            elif registry == "metrics":
                # Keras's object (or its own name for it); the PyTorch function's body.
                assert isinstance(written, Call | str) and written, (backend_name, kind)
                assert backend_name == "keras" or "return" in str(written), kind
            elif registry == "losses" and backend_name == "pytorch":
                assert isinstance(written, str) and "losses" in written, kind
            else:
                assert isinstance(written, Call), (backend_name, kind)


class _Unwritten(LayerArgs):
    kind = "unwritten"


def test_an_entry_without_an_emitter_is_unsupported_naming_kind_and_backend() -> None:
    table = Emitters("jax", "jax", {"unwritten": _Unwritten})
    assert list(table.missing()) == ["unwritten"]
    with pytest.raises(Unsupported) as refused, emitting("jax", "span"):
        table.emit(_Unwritten())
    assert refused.value.message == "the jax backend has no emitter for unwritten"
    assert (refused.value.span, refused.value.backend) == ("span", "jax")


def test_a_backend_adds_emitters_by_entry_class() -> None:
    """How a backend outside the entries (a JAX one) writes the kinds: a table it fills."""
    table = Emitters("jax", "jax", {"unwritten": _Unwritten})

    @table.register(_Unwritten)
    def unwritten(layer: _Unwritten) -> str:
        return "jnp.asarray(x)"

    assert list(table.missing()) == []
    assert table.emit(_Unwritten()) == "jnp.asarray(x)"
