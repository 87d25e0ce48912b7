"""Reading a Keras model file without TensorFlow: a Keras 3 `.keras` file is a zip of
`config.json` and `model.weights.h5`; a legacy `.h5` file holds the config as an attribute and
the weights by layer.

Each Keras layer class is read by the registry entry that declares it (`keras_classes`, the
other side of the entry's `keras()` emitter; see cnnspec.registry), into a kind and arguments;
a class no entry reads, or a setting the entry cannot express, is a Gap reported with the
layer's name. What is structure rather than a kind is read here (STRUCTURE): the InputLayer
(the image's shape), a nested Functional or Sequential model (inlined), InceptionResNetV2's
CustomScaleLayer (a rescaling and an add) and the operation layers of `keras.ops` with a number
(`x + 3.0`, a rescaling)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import cnnspec.layers  # noqa: F401  (registers the kinds, whose entries read Keras classes)
from cnnspec.importing.network import (
    INPUT,
    Gap,
    ImportFailure,
    Layer,
    Network,
    Spelled,
    identifier,
)
from cnnspec.registry import ImportGap, LayerArgs, keras_readers
from cnnspec.runtime import rules
from cnnspec.spelling import value_text

# The Keras classes that are the model's structure, read here rather than by an entry (the
# operation layers of keras.ops, such as Add of a tensor and a number, are told by their
# module: an Add of two tensors is the add entry's).
MODELS = ("Functional", "Model", "Sequential")
STRUCTURE = ("InputLayer", *MODELS, "CustomScaleLayer")


def read(path: Path) -> Network:
    try:
        import h5py
    except ImportError:
        raise ImportFailure(
            "importing a Keras file needs h5py: pip install 'cnnspec[import]'"
        ) from None
    data = path.read_bytes()
    if data.startswith(b"PK\x03\x04"):
        config, variables = _read_keras_zip(path, h5py)
    elif data.startswith(b"\x89HDF"):
        config, variables = _read_legacy_h5(path, h5py)
    else:
        raise ImportFailure(f"{path} is neither a Keras .keras file nor an HDF5 .h5 file")
    return network_from_config(config, variables, str(path))


def _read_keras_zip(path: Path, h5py: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    import io

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise ImportFailure(f"{path} is a zip without config.json, not a .keras file")
            config = json.loads(archive.read("config.json"))
            weights = archive.read("model.weights.h5") if "model.weights.h5" in names else None
    except (zipfile.BadZipFile, ValueError, KeyError, OSError) as error:
        # ValueError: bad JSON and undecodable text alike
        raise ImportFailure(f"{path} is not a readable .keras file: {error}") from None
    if not isinstance(config, dict):
        raise ImportFailure(f"{path} is not a readable .keras file: its config is not a model")
    variables: dict[str, list[Any]] = {}
    if weights is not None:
        try:
            store = h5py.File(io.BytesIO(weights), "r")
        except OSError as error:
            raise ImportFailure(
                f"{path} is not a readable .keras file: its weights are not HDF5 ({error})"
            ) from None
        with store:

            def visit(name: str, item: Any) -> None:
                if name.endswith("vars") and isinstance(item, h5py.Group):
                    owner = item.attrs.get("name")
                    if isinstance(owner, bytes):
                        owner = owner.decode()
                    values = [item[k][()] for k in sorted(item.keys(), key=int)]
                    if owner and values:
                        variables[str(owner)] = [(None, v) for v in values]

            store.visititems(visit)
    return config, variables


def _read_legacy_h5(path: Path, h5py: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    try:
        with h5py.File(path, "r") as store:
            raw = store.attrs.get("model_config")
            if raw is None:
                raise ImportFailure(
                    f"{path} holds weights only (save_weights), not a model: save the whole "
                    "model with model.save(...)"
                )
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            # The reader the PyTorch script loads keras.applications' files with.
            arrays = rules.keras_h5_arrays(store)
    except OSError as error:
        raise ImportFailure(f"{path} is not a readable HDF5 file: {error}") from None
    if arrays is None:
        raise ImportFailure(f"{path} is not a readable .h5 model: its weights have no layer names")
    variables: dict[str, list[Any]] = {}
    for layer, variable, _, value in arrays:
        variables.setdefault(layer, []).append((variable, value))
    return config, variables


# ---- the graph --------------------------------------------------------------------------------


def network_from_config(
    config: dict[str, Any], variables: dict[str, list[Any]], source: str
) -> Network:
    model = config.get("config", {})
    class_name = config.get("class_name")
    if class_name is None or not isinstance(model, dict):
        raise ImportFailure(f"{source} holds no Keras model config")
    if class_name not in MODELS:
        raise ImportFailure(f"{source} holds a {class_name}, not a Keras model cnnspec can read")
    gaps: list[Gap] = []
    layers: list[Layer] = []
    input_shape: tuple[int, int, int] | None = None
    aliases: dict[str, str] = {}

    def value(name: str) -> str:
        while name in aliases:
            name = aliases[name]
        return name

    def add_model(
        model_config: dict[str, Any], sequential: bool, inputs: list[str], frozen: bool = False
    ) -> str:
        nonlocal input_shape
        last = inputs[0] if inputs else INPUT
        for entry in model_config.get("layers", []):
            kind = entry.get("class_name")
            layer_config = entry.get("config", {})
            name = entry.get("name") or layer_config.get("name")
            if kind == "InputLayer":
                shape = layer_config.get("batch_shape") or layer_config.get("batch_input_shape")
                if inputs:
                    aliases[name] = inputs[0]
                    continue
                if input_shape is not None:
                    gaps.append(
                        Gap(
                            f"layer '{name}' (InputLayer)",
                            "a second input",
                            "a cnnspec model has one image input",
                        )
                    )
                    continue
                input_shape = _image_shape(shape, name, gaps)
                aliases[name] = INPUT
                last = INPUT
                continue
            sources = [last] if sequential else _inbound(entry, name, gaps)
            if input_shape is None and sequential and not inputs and last == INPUT:
                build = (
                    model_config.get("build_input_shape")
                    or layer_config.get("batch_input_shape")
                    or entry.get("build_config", {}).get("input_shape")
                )
                if build is not None:
                    input_shape = _image_shape(build, name, gaps)
            if kind in MODELS:
                # A nested model (ConvNeXt's stem) is inlined: its layers keep their names.
                out = add_model(
                    layer_config,
                    kind == "Sequential",
                    [value(s) for s in sources],
                    frozen or layer_config.get("trainable") is False,
                )
                aliases[name] = out
                last = name
                continue
            origin = f"layer '{name}' ({kind})"
            frozen_here = frozen or layer_config.get("trainable") is False
            if str(entry.get("module", "")).startswith("keras.src.ops") and _numbers_in(entry):
                # `x + 3.0` in a functional model: an operation layer with a constant.
                made = _operation(kind, entry, origin, gaps)
                if made is not None:
                    layers.append(Layer(name, "rescaling", made[0], (value(made[1]),), origin))
                last = name
                continue
            if kind == "CustomScaleLayer" and len(sources) == 2:
                # InceptionResNetV2's x + scale * branch: the branch's rescaling, then the add.
                x, branch = (value(s) for s in sources)
                scaled = f"{branch.rsplit('_', 1)[0]}_scale" if "_" in branch else f"{name}_scale"
                scale = float(layer_config.get("scale", 1.0))
                layers.append(
                    Layer(scaled, "rescaling", {"scale": scale, "offset": 0.0}, (branch,), origin)
                )
                layers.append(Layer(name, "add", {}, (x, scaled), origin))
                last = name
                continue
            mapped = _layer(kind, layer_config, origin, gaps)
            if mapped is None:
                last = name
                continue
            if isinstance(mapped, str):  # "identity"
                aliases[name] = value(sources[0])
                last = name
                continue
            layer_kind, args = mapped
            layers.append(
                Layer(name, layer_kind, args, tuple(value(s) for s in sources), origin, frozen_here)
            )
            last = name
        if sequential:
            return value(last)
        outputs = model_config.get("output_layers") or []
        if outputs and isinstance(outputs[0], str):
            outputs = [outputs]
        if len(outputs) != 1:
            gaps.append(
                Gap(
                    f"model '{model_config.get('name')}'",
                    f"{len(outputs)} outputs",
                    "a cnnspec model has one output",
                )
            )
            return value(last)
        return value(outputs[0][0])

    output = add_model(model, class_name == "Sequential", [])
    if input_shape is None:
        raise ImportFailure(
            f"{source} does not say its input shape: build the model on an input first"
        )
    if gaps:
        raise ImportFailure("the model uses what cnnspec cannot express", gaps)
    trainable_names = {layer.name for layer in layers}
    flat = {name: values for name, values in variables.items() if name in trainable_names}
    return Network(
        name=identifier(model.get("name") or "") or "imported",
        input_shape=input_shape,
        layers=layers,
        output=output,
        keras_variables=flat,
        source=source,
    )


def _numbers_in(entry: dict[str, Any]) -> bool:
    """Whether an operation layer's call has a number among its arguments (`x + 3.0`); one of
    tensors only (ConvNeXt's `ops.add(x, y)`) is read as the layer of that name."""
    nodes = entry.get("inbound_nodes") or [{}]
    args = nodes[0].get("args", []) if isinstance(nodes[0], dict) else []
    return any(isinstance(a, int | float) and not isinstance(a, bool) for a in args)


def _operation(
    kind: str, entry: dict[str, Any], origin: str, gaps: list[Gap]
) -> tuple[dict[str, Any], str] | None:
    """An operation of a tensor and a number as a rescaling: (its arguments, the tensor)."""
    nodes = entry.get("inbound_nodes") or [{}]
    args = nodes[0].get("args", []) if isinstance(nodes[0], dict) else []
    tensors = [
        a["config"]["keras_history"][0]
        for a in args
        if isinstance(a, dict) and a.get("class_name") == "__keras_tensor__"
    ]
    numbers = [a for a in args if isinstance(a, int | float) and not isinstance(a, bool)]
    if len(tensors) == 1 and len(numbers) == 1 and len(args) == 2:
        number = float(numbers[0])
        tensor_first = isinstance(args[0], dict)
        match kind:
            case "Add":
                return {"scale": 1.0, "offset": number}, tensors[0]
            case "Subtract" if tensor_first:
                return {"scale": 1.0, "offset": -number}, tensors[0]
            case "Multiply":
                return {"scale": number, "offset": 0.0}, tensors[0]
            case "Divide" | "TrueDivide" if tensor_first and number != 0:
                return {"scale": 1.0 / number, "offset": 0.0}, tensors[0]
    gaps.append(
        Gap(origin, f"the operation {kind}", "cnnspec's layers are not arbitrary tensor math")
    )
    return None


def _image_shape(shape: Any, name: str, gaps: list[Gap]) -> tuple[int, int, int] | None:
    dims = list(shape or [])[1:]
    if len(dims) != 3 or any(not isinstance(d, int) for d in dims):
        gaps.append(
            Gap(
                f"layer '{name}' (InputLayer)",
                f"input shape {tuple(dims)}",
                "cnnspec needs a fixed (height, width, channels) image input",
            )
        )
        return None
    return (dims[0], dims[1], dims[2])


def _inbound(entry: dict[str, Any], name: str, gaps: list[Gap]) -> list[str]:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1:
        if len(nodes) > 1:
            gaps.append(
                Gap(
                    f"layer '{name}'",
                    "a layer called more than once",
                    "cnnspec gives every call its own weights",
                )
            )
        return []
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3
        sources: list[str] = []

        def collect(value: Any) -> None:
            if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
                sources.append(value["config"]["keras_history"][0])
            elif isinstance(value, list | tuple):
                for item in value:
                    collect(item)

        collect(node.get("args", []))
        return sources
    return [item[0] for item in node]  # Keras 2: [[name, node, tensor, kwargs], ...]


# ---- layers -------------------------------------------------------------------------------------


def _layer(
    kind: str, config: dict[str, Any], origin: str, gaps: list[Gap]
) -> tuple[str, dict[str, Any]] | str | None:
    """The kind and arguments of a Keras layer of class `kind`, read by the entry that
    declares the class; "identity" for a layer that computes nothing; None after a gap."""
    entry = keras_readers().get(kind)
    if entry is None:
        gaps.append(Gap(origin, f"a {kind} layer", "cnnspec has no layer kind for it"))
        return None
    try:
        read = entry.from_keras(kind, config)
    except ImportGap as gap:
        gaps.append(Gap(origin, gap.what, gap.why))
        return None
    if isinstance(read, str):
        return "identity"
    layer_kind, args = read if isinstance(read, tuple) else (entry.kind, read)
    return layer_kind, {key: _spelled(value) for key, value in args.items()}


def _spelled(value: Any) -> Any:
    """An activation an entry read with its arguments (`leaky_relu(alpha=0.2)`) as spec text."""
    if not isinstance(value, LayerArgs):
        return value
    inner = ", ".join(f"{key}={value_text(v)}" for key, v in value.explicit().items())
    return Spelled(f"{value.kind}({inner})") if inner else value.kind
