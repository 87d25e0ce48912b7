"""Reading a Keras model file without TensorFlow: a Keras 3 `.keras` file is a zip of
`config.json` and `model.weights.h5`; a legacy `.h5` file holds the config as an attribute and
the weights by layer. Each Keras layer class maps to a cnnspec kind and arguments here; what
has no kind is a Gap, reported with the layer's name."""

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
from cnnspec.registry import ImportGap, keras_readers


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
            variables: dict[str, list[Any]] = {}
            group = store.get("model_weights", store)
            for layer_name in group:
                layer_group = group[layer_name]
                names = [
                    n.decode() if isinstance(n, bytes) else str(n)
                    for n in layer_group.attrs.get("weight_names", [])
                ]
                values = []
                for full in names:
                    variable = full.rsplit("/", 1)[-1].split(":")[0]
                    values.append((variable, layer_group[full][()]))
                if values:
                    variables[layer_name] = values
    except OSError as error:
        raise ImportFailure(f"{path} is not a readable HDF5 file: {error}") from None
    return config, variables


# ---- the graph --------------------------------------------------------------------------------


def network_from_config(
    config: dict[str, Any], variables: dict[str, list[Any]], source: str
) -> Network:
    model = config.get("config", {})
    class_name = config.get("class_name")
    if class_name is None or not isinstance(model, dict):
        raise ImportFailure(f"{source} holds no Keras model config")
    if class_name not in ("Functional", "Model", "Sequential"):
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
            if kind in ("Functional", "Sequential", "Model"):
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


def _keras_activations() -> dict[str, str]:
    """Keras's `activation=` strings: each entry's own Keras name (with its default arguments),
    and the other names Keras gives two of them."""
    from cnnspec.registry import REGISTRY

    names = {}
    for kind, cls in REGISTRY.items():
        if cls.is_activation and not any(f.is_required() for f in cls.model_fields.values()):
            name = cls().keras_name()
            if name is not None:
                names[name] = kind
    return {**names, "silu": "swish", "hard_silu": "hard_swish"}


_ACTIVATIONS = _keras_activations()


def _activation(value: Any, origin: str, gaps: list[Gap]) -> Any:
    if isinstance(value, dict):  # a serialized function
        value = value.get("config", value.get("class_name"))
    if value in (None, "linear"):
        return None
    if value == "leaky_relu":  # keras.activations.leaky_relu's slope is 0.2
        return Spelled("leaky_relu(alpha=0.2)")
    if value in _ACTIVATIONS:
        return _ACTIVATIONS[value]
    gaps.append(Gap(origin, f"activation '{value}'", "cnnspec has no such activation"))
    return None


def _pair(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(int(v) for v in value)
    return (int(value), int(value))


def _l2(config: dict[str, Any], key: str, origin: str, gaps: list[Gap]) -> float:
    regularizer = config.get(key)
    if not regularizer:
        return 0.0
    inner = regularizer.get("config", {})
    if regularizer.get("class_name") in ("L2", "l2") or set(inner) == {"l2"}:
        return float(inner.get("l2", 0.0))
    gaps.append(
        Gap(
            origin,
            f"{regularizer.get('class_name')} regularizer",
            "cnnspec has L2 kernel regularization only",
        )
    )
    return 0.0


def _channels_last(config: dict[str, Any], origin: str, gaps: list[Gap]) -> None:
    if config.get("data_format", "channels_last") not in ("channels_last", None):
        gaps.append(
            Gap(origin, "data_format=channels_first", "a Keras model in cnnspec is channels-last")
        )


def _conv_args(config: dict[str, Any], origin: str, gaps: list[Gap]) -> dict[str, Any]:
    _channels_last(config, origin, gaps)
    args = {
        "kernel": _pair(config["kernel_size"]),
        "stride": _pair(config.get("strides", 1)),
        "padding": config.get("padding", "valid"),
        "dilation": _pair(config.get("dilation_rate", 1)),
        "activation": _activation(config.get("activation"), origin, gaps),
        "use_bias": bool(config.get("use_bias", True)),
    }
    for key in ("kernel_regularizer", "depthwise_regularizer", "pointwise_regularizer"):
        if config.get(key):
            args["l2"] = _l2(config, key, origin, gaps)
    if args["padding"] not in ("same", "valid"):
        gaps.append(Gap(origin, f"padding={args['padding']}", "Keras pads same or valid"))
    return args


def _last_axis(config: dict[str, Any], origin: str, gaps: list[Gap], why: str) -> None:
    """A normalization over the channels (Keras's last axis), or a gap saying `why`."""
    axis = config.get("axis", -1)
    if isinstance(axis, list):
        axis = axis[0] if len(axis) == 1 else None
    if axis not in (-1, 3):
        gaps.append(Gap(origin, f"axis={config.get('axis')}", why))


def _layer(
    kind: str, config: dict[str, Any], origin: str, gaps: list[Gap]
) -> tuple[str, dict[str, Any]] | str | None:
    entry = keras_readers().get(kind)
    if entry is not None:
        try:
            return entry.kind, entry.from_keras(kind, config)
        except ImportGap as gap:
            gaps.append(Gap(origin, gap.what, gap.why))
            return None
    match kind:
        case "Conv2D":
            args = {"filters": int(config["filters"]), **_conv_args(config, origin, gaps)}
            if config.get("groups", 1) != 1:
                args["groups"] = int(config["groups"])
            return "conv2d", args
        case "DepthwiseConv2D":
            args = _conv_args(config, origin, gaps)
            args["depth_multiplier"] = int(config.get("depth_multiplier", 1))
            return "depthwise_conv2d", args
        case "SeparableConv2D":
            args = {"filters": int(config["filters"]), **_conv_args(config, origin, gaps)}
            args["depth_multiplier"] = int(config.get("depth_multiplier", 1))
            return "separable_conv2d", args
        case "Dense":
            args = {
                "units": int(config["units"]),
                "activation": _activation(config.get("activation"), origin, gaps),
                "use_bias": bool(config.get("use_bias", True)),
            }
            if config.get("kernel_regularizer"):
                args["l2"] = _l2(config, "kernel_regularizer", origin, gaps)
            return "dense", args
        case "BatchNormalization":
            _last_axis(config, origin, gaps, "cnnspec normalizes the channels (the last axis)")
            return "batchnorm", {
                "epsilon": float(config.get("epsilon", 1e-3)),
                "momentum": float(config.get("momentum", 0.99)),
                "center": bool(config.get("center", True)),
                "scale": bool(config.get("scale", True)),
            }
        case "LayerNormalization":
            _last_axis(config, origin, gaps, "cnnspec's layer_norm normalizes the last axis")
            return "layer_norm", {"epsilon": float(config.get("epsilon", 1e-3))}
        case "Normalization":
            _last_axis(config, origin, gaps, "cnnspec normalizes the channels (the last axis)")
            args = {}
            for key in ("mean", "variance"):
                value = config.get(key)
                if value is not None:
                    args[key] = tuple(float(v) for v in _flat(value))
            return "normalization", args
        case "Rescaling":
            scale, offset = config.get("scale", 1.0), config.get("offset", 0.0)
            return "rescaling", {"scale": _scalars(scale), "offset": _scalars(offset)}
        case "Dropout":
            noise = config.get("noise_shape")
            if noise is not None and list(noise)[1:] == [1, 1, 1]:
                return "stochastic_depth", {"rate": float(config["rate"])}
            if noise is not None:
                gaps.append(
                    Gap(
                        origin,
                        f"noise_shape={noise}",
                        "cnnspec drops units, channels (spatial_dropout) or examples",
                    )
                )
            return "dropout", {"rate": float(config["rate"])}
        case "SpatialDropout2D":
            return "spatial_dropout", {"rate": float(config["rate"])}
        case "StochasticDepth":
            return "stochastic_depth", {"rate": float(config.get("drop_path_rate", 0.0))}
        case "LayerScale":
            return "layer_scale", {"init": float(config.get("init_values", 1e-6))}
        case "Flatten":
            _channels_last(config, origin, gaps)
            return "flatten", {}
        case "Reshape":
            return "reshape", {"target": tuple(int(v) for v in config["target_shape"])}
        case "Activation":
            activation = _activation(config.get("activation"), origin, gaps)
            if activation is None:
                return "identity"
            if isinstance(activation, Spelled):
                return "leaky_relu", {"alpha": 0.2}
            return activation, {}
        case "ReLU":
            top = config.get("max_value")
            slope = float(config.get("negative_slope", 0.0) or 0.0)
            if float(config.get("threshold", 0.0) or 0.0) != 0.0:
                gaps.append(Gap(origin, "ReLU threshold", "cnnspec's relu has no threshold"))
            if top is not None and float(top) == 6.0 and slope == 0.0:
                return "relu6", {}
            if top is not None:
                gaps.append(Gap(origin, f"ReLU max_value={top}", "cnnspec caps at 6 only"))
            if slope:
                return "leaky_relu", {"alpha": slope}
            return "relu", {}
        case "LeakyReLU":
            return "leaky_relu", {
                "alpha": float(config.get("negative_slope", config.get("alpha", 0.3)))
            }
        case "ELU":
            return "elu", {"alpha": float(config.get("alpha", 1.0))}
        case "Softmax":
            if config.get("axis", -1) not in (-1, [-1]):
                gaps.append(
                    Gap(
                        origin,
                        f"softmax axis={config.get('axis')}",
                        "cnnspec's softmax is over the last axis",
                    )
                )
            return "softmax", {}
        case "Add":
            return "add", {}
        case "Multiply":
            return "multiply", {}
        case "Concatenate":
            if config.get("axis", -1) not in (-1, 3):
                gaps.append(
                    Gap(
                        origin,
                        f"axis={config.get('axis')}",
                        "cnnspec concatenates channels (the last axis)",
                    )
                )
            return "concat", {}
        case "MaxPooling2D" | "AveragePooling2D":
            _channels_last(config, origin, gaps)
            pool = _pair(config["pool_size"])
            strides = config.get("strides")
            stride = _pair(strides) if strides is not None else None
            return ("maxpool" if kind.startswith("Max") else "avgpool"), {
                "pool": pool,
                "stride": None if stride == pool else stride,  # the pool's own, as Keras's default
                "padding": config.get("padding", "valid"),
            }
        case "GlobalAveragePooling2D" | "GlobalMaxPooling2D":
            _channels_last(config, origin, gaps)
            return ("global_avg_pool" if "Average" in kind else "global_max_pool"), {
                "keepdims": bool(config.get("keepdims", False))
            }
        case "ZeroPadding2D":
            return "zero_pad", {"padding": _pads(config["padding"])}
        case "Cropping2D":
            return "crop", {"cropping": _pads(config["cropping"])}
        case "InputLayer":
            return "identity"
    gaps.append(Gap(origin, f"a {kind} layer", "cnnspec has no layer kind for it"))
    return None


def _flat(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [v for item in value for v in _flat(item)]
    return [value]


def _scalars(value: Any) -> Any:
    values = [float(v) for v in _flat(value)]
    return values[0] if len(values) == 1 else tuple(values)


def _pads(value: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(value, int):
        return ((value, value), (value, value))
    first, second = value
    first = (first, first) if isinstance(first, int) else tuple(first)
    second = (second, second) if isinstance(second, int) else tuple(second)
    return ((int(first[0]), int(first[1])), (int(second[0]), int(second[1])))
