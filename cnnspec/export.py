"""ONNX export straight from the checked IR: no TensorFlow or PyTorch needed, only onnx (and
safetensors/numpy for the weights).

The graph is NCHW with a named float32 input `image` whose batch dimension is dynamic; its output
`probabilities` is what the spec's head computes (softmax or sigmoid included). Each layer adds
its own nodes through its registry entry's `onnx()` emitter; this module supplies the builder,
the weights (canonical `weights.safetensors` from either backend's script, or a deterministic
initialisation) and the metadata that `predict` reads back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cnnspec import __version__
from cnnspec.check import data_classes
from cnnspec.emitters import tables
from cnnspec.ir import Graph, Spec
from cnnspec.layers import BatchNorm, Dense, Dropout
from cnnspec.layout import Map, flattened_layout
from cnnspec.registry import emitting
from cnnspec.sections import Digits

DEFAULT_OPSET = 18
INPUT = "image"
OUTPUT = "probabilities"
HASH_KEY = "cnnspec.graph_sha256"

# Protobuf cannot serialise a message over 2 GiB, so a model whose weights total more than this
# keeps them in one data file beside the .onnx (ONNX's external data); the margin leaves room for
# the graph and the metadata. Smaller models stay one self-contained file, as they always were.
EXTERNAL_DATA_THRESHOLD = 3 * 2**29  # 1.5 GiB
# Lowers the threshold (in bytes) so that tests exercise external data on small models.
THRESHOLD_VARIABLE = "CNNSPEC_EXTERNAL_DATA_THRESHOLD"
# Tensors smaller than this stay in the model file (onnx's own default): the scalars and shapes
# that Pad and Reshape take are not worth a seek.
EXTERNAL_MIN_BYTES = 1024
# Each tensor in the data file starts on a page boundary, where onnxruntime can map it.
EXTERNAL_ALIGNMENT = 4096


class WeightError(Exception):
    """The weights file does not fit the spec (missing or mis-shaped tensors)."""


class ExportError(Exception):
    """The spec cannot be exported as asked (an opset too old for what it needs)."""


class _Builder:
    """Collects ONNX nodes and initializers; implements `cnnspec.registry.OnnxBuilder`."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        import onnx  # noqa: F401  (fail early, with a clear message, where onnx is missing)

        self.weights = weights
        self.nodes: list[Any] = []
        self.initializers: dict[str, Any] = {}
        self.used: set[str] = set()
        self.names: set[str] = set()

    def _unique(self, name: str) -> str:
        candidate, index = name, 1
        while candidate in self.names:
            index += 1
            candidate = f"{name}_{index}"
        self.names.add(candidate)
        return candidate

    def op(self, op_type: str, inputs: list[str], name: str, **attributes: Any) -> str:
        from onnx import helper

        output = self._unique(name)
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output

    def weight(self, key: str) -> str:
        from onnx import numpy_helper

        if key not in self.weights:
            raise WeightError(f"the weights have no tensor {key!r}")
        if key not in self.initializers:
            array = np.ascontiguousarray(self.weights[key], dtype=np.float32)
            self.initializers[key] = numpy_helper.from_array(array, key)
        self.used.add(key)
        return key

    def constant(
        self,
        name: str,
        values: Sequence[float],
        shape: tuple[int, ...] = (),
        dtype: str = "float32",
    ) -> str:
        from onnx import numpy_helper

        key = self._unique(name)
        array = np.asarray(values, dtype=dtype).reshape(shape or ())
        self.initializers[key] = numpy_helper.from_array(array, key)
        return key


def initial_weights(spec: Spec, seed: int) -> dict[str, np.ndarray]:
    """Deterministic weights in the canonical layout, initialised as Keras does: each layer entry
    says which of its tensors are Glorot-uniform kernels and which start at a constant (zero
    biases, BatchNorm at identity)."""
    rng = np.random.default_rng(seed)
    shapes = spec.model.value_shapes()
    weights: dict[str, np.ndarray] = {}
    for node in spec.model.nodes:
        for suffix, shape in node.layer.weight_shapes([shapes[i] for i in node.inputs]).items():
            key = f"{node.name}.{suffix}"
            value = node.layer.initial_value(suffix)
            if value is None:
                # Canonical kernels are (out, in, *window): Glorot's fans count the window.
                receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
                fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                weights[key] = rng.uniform(-limit, limit, shape).astype(np.float32)
            else:
                weights[key] = np.full(shape, value, dtype=np.float32)
    return weights


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a `weights.safetensors`. Another framework's file, a file that is not
    safetensors (or is truncated), and a tensor of a dtype numpy lacks are each a WeightError
    that says so; a file that cannot be opened is the OSError `open` raises."""
    from safetensors import SafetensorError, safe_open

    with open(path, "rb") as stream:
        head = stream.read(8)
    suffix = Path(path).suffix.lower()
    kind = None
    if head.startswith(b"PK\x03\x04"):  # a zip: Keras 3's .keras, or torch.save's .pt
        kind = "a PyTorch file (torch.save)" if suffix in (".pt", ".pth") else "a Keras model file"
    elif head.startswith(b"\x89HDF"):
        kind = "a Keras HDF5 file"
    if kind is not None:
        raise WeightError(
            f"{path} is {kind}, not cnnspec's weights: the generated scripts save those as "
            "weights.safetensors, beside model.keras and model.pt"
        )
    try:
        with safe_open(str(path), framework="np") as stream:
            keys = list(stream.keys())  # not iterable itself
            # A dtype numpy has no type for (bfloat16, float8, as torch can save) would fail
            # as a TypeError or AttributeError deep in safetensors: said here instead.
            odd = {
                key: dtype
                for key in keys
                if (dtype := stream.get_slice(key).get_dtype()) not in NUMPY_DTYPES
            }
            if odd:
                key, dtype = next(iter(odd.items()))
                more = f" (and {len(odd) - 1} more tensors)" if len(odd) > 1 else ""
                raise WeightError(
                    f"{path} holds {key} as {dtype}{more}, a type numpy has not: "
                    "save the weights as float32"
                )
            return {key: stream.get_tensor(key) for key in keys}
    except SafetensorError as error:  # a header that is not safetensors', a truncated file
        raise WeightError(f"cannot read {path}: {error}") from None


# The safetensors dtypes that numpy holds (safetensors.numpy reads these and no others).
NUMPY_DTYPES = frozenset(
    {"F64", "F32", "F16", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8", "BOOL", "C64"}
)


def check_weights(spec: Spec, weights: Mapping[str, np.ndarray]) -> None:
    """Every tensor the spec needs is present with its canonical shape."""
    shapes = spec.model.value_shapes()
    problems = []
    for node in spec.model.nodes:
        for suffix, shape in node.layer.weight_shapes([shapes[i] for i in node.inputs]).items():
            key = f"{node.name}.{suffix}"
            if key not in weights:
                problems.append(f"missing {key}")
            elif tuple(weights[key].shape) != shape:
                problems.append(f"{key} is {tuple(weights[key].shape)}, the spec needs {shape}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise WeightError("; ".join(problems[:3]) + more)


def metadata(spec: Spec, source_text_sha256: str, layout: str) -> dict[str, str]:
    data = spec.data
    assert spec.model.input_shape is not None
    h, w, c = spec.model.input_shape
    # An image folder that names no classes: its class folders, when they are here to read.
    classes = data_classes(data) or tuple(
        str(i) for i in range((spec.model.output_shape or (1,))[-1])
    )
    return {
        "cnnspec.version": __version__,
        "cnnspec.spec_name": spec.name,
        "cnnspec.spec_sha256": source_text_sha256,
        "cnnspec.class_names": json.dumps(list(classes)),
        "cnnspec.input_size": json.dumps([h, w, c]),
        "cnnspec.input_layout": layout,
        "cnnspec.rescale": repr(float(data.rescale)),
        "cnnspec.normalize": json.dumps(
            {"mean": list(data.normalize.mean), "std": list(data.normalize.std)}
            if data.normalize
            else None
        ),
        "cnnspec.color_order": data.color_order,
        "cnnspec.labels": data.labels,
        # The pixel value of white in the training data (the digits go up to 16), which an
        # 8-bit image's 255 is mapped to before rescaling.
        "cnnspec.pixel_max": repr(data.source.white if data.source is not None else 255.0),
        "cnnspec.threshold": repr(spec.evaluate.threshold or 0.5),
    }


def foldable_batchnorms(graph: Graph) -> dict[str, str]:
    """Batchnorms on feature vectors whose output reaches only a dense layer with a bias
    (through dropouts, which do nothing at inference): batchnorm name -> dense name. Their
    scale and shift fold exactly into the dense layer, which onnxruntime cannot do itself when
    the batchnorm follows an activation."""
    consumers: dict[str, list[str]] = {}
    for node in graph.nodes:
        for source in node.inputs:
            consumers.setdefault(source, []).append(node.name)
    folds = {}
    for node in graph.nodes:
        if not isinstance(node.layer, BatchNorm) or len(node.output_shape or ()) != 1:
            continue
        current = node.name
        while current != graph.output and len(consumers.get(current, [])) == 1:
            following = graph.node(consumers[current][0])
            if isinstance(following.layer, Dropout):
                current = following.name
                continue
            if isinstance(following.layer, Dense) and following.layer.use_bias:
                folds[node.name] = following.name
            break
    return folds


POOLS = ("MaxPool", "AveragePool")


def keep_pads_before_pools(builder: _Builder, opset: int) -> None:
    """onnxruntime's PadFusion merges a zero Pad into the pads of the MaxPool or AveragePool
    after it, which those ops fill with -inf or leave out of the average, as Keras's `same`
    pooling does: the numbers change (and a session refuses the model when the padding
    reaches the window). PadFusion leaves a Pad with an `axes` input alone (opset 18 on), so
    such a Pad names its axes; Pads before convolutions stay fusable."""
    feeds_pool = {i for node in builder.nodes if node.op_type in POOLS for i in node.input}
    for node in builder.nodes:
        if node.op_type != "Pad" or node.output[0] not in feeds_pool:
            continue
        if opset < 18:
            raise ExportError(
                f"{node.name} pads the input of a pooling layer, which needs --opset 18 or "
                "later: onnxruntime merges such padding into the pooling with other numbers"
            )
        zero = builder.constant(f"{node.name}_value", [0.0])
        axes = builder.constant(f"{node.name}_axes", [0, 1, 2, 3], (4,), dtype="int64")
        node.input.extend([zero, axes])


def fold_batchnorms(
    graph: Graph, weights: Mapping[str, np.ndarray], folds: dict[str, str]
) -> dict[str, np.ndarray]:
    """The weights with each folded batchnorm's affine map moved into its dense layer:
    W' = W diag(s), b' = b + W t, where s = gamma / sqrt(var + eps), t = beta - mean s."""
    result = dict(weights)
    for bn, dense in folds.items():
        layer = graph.node(bn).layer
        assert isinstance(layer, BatchNorm)
        # scale=false and center=false leave gamma 1 and beta 0.
        variance = weights[f"{bn}.running_var"]
        gamma = weights.get(f"{bn}.weight", np.ones_like(variance))
        beta = weights.get(f"{bn}.bias", np.zeros_like(variance))
        scale = gamma / np.sqrt(variance + layer.epsilon)
        shift = beta - weights[f"{bn}.running_mean"] * scale
        kernel = weights[f"{dense}.weight"].astype(np.float64)
        result[f"{dense}.bias"] = (weights[f"{dense}.bias"] + kernel @ shift).astype(np.float32)
        result[f"{dense}.weight"] = (kernel * scale[None, :]).astype(np.float32)
    return result


def _keras_order(builder: _Builder, value: str, shape: Map) -> str:
    """`value`, a vector flattened from a map of `shape` (H, W, C) in ONNX's CHW order, in
    Keras's HWC order: back to the NCHW map, to NHWC, flattened again."""
    h, w, c = shape
    map_shape = builder.constant(f"{value}_chw", [0, c, h, w], (4,), dtype="int64")
    chw = builder.op("Reshape", [value, map_shape], f"{value}_chw_map")
    hwc = builder.op("Transpose", [chw], f"{value}_hwc_map", perm=[0, 2, 3, 1])
    flat = builder.constant(f"{value}_hwc_shape", [0, -1], (2,), dtype="int64")
    return builder.op("Reshape", [hwc, flat], f"{value}_hwc")


def export(
    spec: Spec,
    weights: Mapping[str, np.ndarray],
    opset: int = DEFAULT_OPSET,
    input_layout: str = "nchw",
    fp16: bool = False,
    int8_calibration: str | None = None,
    weights_source: str = "",
    keep_batchnorms: bool = False,
) -> Any:
    """The spec's network as an ONNX ModelProto with `weights` (canonical layout). With `fp16`
    the weights and arithmetic are float16 while the input and output stay float32.
    `weights_source` (a file, or `seed N`) is recorded in the metadata."""
    import onnx
    from onnx import TensorProto, helper

    from cnnspec.backends.common import straight_line  # the same DAG walk as the scripts

    check_weights(spec, weights)
    graph = spec.model
    # Folding is exact and faster; kept, each batchnorm is a node of its own, which is what
    # `cnnspec import` needs to give the spec back layer for layer.
    folds = {} if keep_batchnorms else foldable_batchnorms(graph)
    weights = fold_batchnorms(graph, weights, folds)
    assert graph.input_shape is not None
    h, w, c = graph.input_shape
    builder = _Builder(weights)
    shapes = graph.value_shapes()
    builder.names.add(INPUT)
    values: dict[str, str] = {}
    if input_layout == "nhwc":
        input_shape: list[int | str] = ["batch", h, w, c]
        values[graph.INPUT] = builder.op("Transpose", [INPUT], "to_nchw", perm=[0, 3, 1, 2])
    else:
        input_shape = ["batch", c, h, w]
        values[graph.INPUT] = INPUT
    # Vectors flattened from a map are in CHW order here and HWC in Keras: put in Keras's
    # order where a layer uses their positions (see cnnspec.layout).
    layout = flattened_layout(graph)
    for step in straight_line(graph, graph.INPUT):
        node = step.node
        inputs = [values[name] for name in node.inputs]
        for index, shape in layout.reorders.get(node.name, {}).items():
            inputs[index] = _keras_order(builder, inputs[index], shape)
        if node.name in folds:
            values[node.name] = inputs[0]  # folded into the dense layer that follows
            continue
        first = len(builder.nodes)
        with emitting("onnx", node.span):
            values[node.name] = tables("onnx")["layers"].emit(
                node.layer, builder, node.name, inputs, [shapes[i] for i in node.inputs]
            )
        # The layer's kind, where ONNX alone cannot tell (a grouped convolution with one
        # channel per group is conv2d(groups=C) or depthwise_conv2d): `cnnspec import` reads it.
        for made in builder.nodes[first:]:
            if made.name == node.name:
                made.doc_string = f"cnnspec {node.kind}"
    keep_pads_before_pools(builder, opset)
    last = values[graph.output or graph.INPUT]
    if layout.output is not None:
        last = _keras_order(builder, last, layout.output)
    builder.nodes.append(helper.make_node("Identity", [last], [OUTPUT], name=OUTPUT))
    out_shape: list[int | str] = ["batch"]
    output_shape = graph.output_shape or ()
    out_shape += (
        [output_shape[-1], *output_shape[:-1]] if len(output_shape) == 3 else list(output_shape)
    )
    onnx_graph = helper.make_graph(
        builder.nodes,
        graph.name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, out_shape)],
        initializer=list(builder.initializers.values()),
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="cnnspec",
        producer_version=__version__,
    )
    model.ir_version = min(model.ir_version, 10)  # readable by onnxruntime releases of 2024 on
    if fp16:
        import warnings

        from onnxconverter_common import float16

        with warnings.catch_warnings():
            # Weights below float16's range are flushed towards zero, as they must be.
            warnings.simplefilter("ignore", UserWarning)
            model = float16.convert_float_to_float16(model, keep_io_types=True)
    props = metadata(spec, spec.sha256, input_layout)
    if int8_calibration is not None:
        from cnnspec.predict import Preprocessing
        from cnnspec.quantize import calibration_batch, classifier_nodes, quantize_int8

        preprocessing = Preprocessing.from_metadata(props, Path(spec.path))
        source = spec.data.source
        fraction = source.test_fraction if isinstance(source, Digits) else 0.2
        batch = calibration_batch(int8_calibration, preprocessing, (fraction, spec.train.seed))
        model = quantize_int8(model, batch, INPUT, classifier_nodes(graph))
    props["cnnspec.weights"] = weights_source
    props["cnnspec.precision"] = (
        "int8" if int8_calibration is not None else "float16" if fp16 else "float32"
    )
    props[HASH_KEY] = graph_digest(model, split=needs_external_data(model))
    onnx.helper.set_model_props(model, props)
    return model


def external_data_threshold() -> int:
    """The weight bytes above which a model is written with external data."""
    value = os.environ.get(THRESHOLD_VARIABLE, "")
    return int(value) if value.strip().isdigit() else EXTERNAL_DATA_THRESHOLD


def _movable(tensor: Any) -> bool:
    """An initializer that goes to the data file of an external-data model."""
    return bool(tensor.HasField("raw_data")) and tensor.ByteSize() >= EXTERNAL_MIN_BYTES


def needs_external_data(model: Any) -> bool:
    """Whether the model's weights are too large for one protobuf message (see
    EXTERNAL_DATA_THRESHOLD). Only tensors that would move count, so an external-data model
    always has at least one tensor in its data file: that is how its hash scheme is told."""
    total = sum(t.ByteSize() for t in model.graph.initializer if _movable(t))
    return total > external_data_threshold()


def _is_external(tensor: Any) -> bool:
    from onnx import TensorProto

    return bool(tensor.data_location == TensorProto.EXTERNAL)


def _without(message: Any, names: set[str]) -> Any:
    """A copy of a protobuf message without the fields `names`; the others are copied, so the
    large ones left out are never duplicated."""
    copy = type(message)()
    for field, value in message.ListFields():
        if field.name in names:
            continue
        if hasattr(value, "extend"):  # a repeated field, of messages or scalars
            getattr(copy, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(copy, field.name).CopyFrom(value)
        else:
            setattr(copy, field.name, value)
    return copy


TENSOR_DATA_FIELDS = {"raw_data", "external_data", "data_location"}


def graph_digest(model: Any, split: bool, folder: Path | None = None) -> str:
    """The sha256 stored under HASH_KEY. A self-contained model's is that of its serialised
    graph (what every export before external data stored). An external-data model's cannot be:
    its graph in memory may exceed protobuf's 2 GiB, and in its file the weights live elsewhere.
    So `split` hashes the graph without initializers, then each initializer without its bytes
    and where they are, then a digest of those bytes, wherever they are: in memory at export,
    in the data file in `folder` afterwards. Raises ValueError for bytes that cannot be read."""
    if not split:
        return hashlib.sha256(model.graph.SerializeToString()).hexdigest()
    graph = model.graph
    digest = hashlib.sha256(_without(graph, {"initializer"}).SerializeToString())
    for tensor in graph.initializer:
        if not (tensor.HasField("raw_data") or _is_external(tensor)):
            # Typed fields (float_data...) are small and stay in the message itself.
            part = tensor.SerializeToString()
            digest.update(len(part).to_bytes(8, "little") + part + b"\0" * 32)
            continue
        part = _without(tensor, TENSOR_DATA_FIELDS).SerializeToString()
        digest.update(len(part).to_bytes(8, "little") + part)
        if _is_external(tensor):
            digest.update(_external_digest(tensor, folder))
        else:
            digest.update(hashlib.sha256(tensor.raw_data).digest())
    return digest.hexdigest()


def _external_digest(tensor: Any, folder: Path | None) -> bytes:
    """The sha256 of an external tensor's bytes, read from its data file in `folder`."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location", "")
    # Only a file beside the model: a location elsewhere is no file cnnspec wrote.
    if folder is None or Path(location).name != location or location in ("", ".", ".."):
        raise ValueError(f"{tensor.name}: its data is not in a file beside the model")
    try:
        offset, length = int(entries.get("offset", "0")), int(entries["length"])
    except (KeyError, ValueError):
        raise ValueError(f"{tensor.name}: damaged external data entries") from None
    digest = hashlib.sha256()
    try:
        with open(folder / location, "rb") as stream:
            stream.seek(offset)
            left = length
            while left > 0:
                chunk = stream.read(min(left, 2**24))
                if not chunk:
                    raise ValueError(f"{tensor.name}: {location} is shorter than the model says")
                digest.update(chunk)
                left -= len(chunk)
    except OSError as error:
        raise ValueError(f"{tensor.name}: cannot read {location}: {error}") from None
    return digest.digest()


def data_file_for(target: Path) -> Path:
    """Where the weights of an external-data export to `target` go."""
    return target.with_name(f"{target.name}.data")


def move_weights_out(model: Any, location: str, stream: BinaryIO) -> None:
    """Write the model's large initializers' bytes to `stream` (the data file named `location`,
    beside the model file) and leave in the model only where they are. Mutates `model`."""
    from onnx import TensorProto

    offset = 0
    for tensor in model.graph.initializer:
        if not _movable(tensor):
            continue
        data = tensor.raw_data
        padding = -offset % EXTERNAL_ALIGNMENT
        stream.write(b"\0" * padding)
        offset += padding
        stream.write(data)
        del tensor.external_data[:]
        for key, value in (("location", location), ("offset", offset), ("length", len(data))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        tensor.data_location = TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        offset += len(data)


def _existing(data: bytes) -> Any:
    """The ONNX model in the bytes of an existing file, or None when they are none: not a
    protobuf, or a truncated one (protobuf's DecodeError, the one error parsing raises)."""
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    try:
        return onnx.load_from_string(data)
    except DecodeError:
        return None


def external_locations(data: bytes) -> set[str]:
    """The data files an existing model file names (none for a self-contained model, or for
    bytes that are no model)."""
    model = _existing(data)
    if model is None:
        return set()
    return {
        entry.value
        for tensor in model.graph.initializer
        if _is_external(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }


def weights_source(data: bytes) -> str:
    """Where an exported model's weights came from (a file, or `seed N`), from its metadata;
    "" when the bytes are no ONNX model."""
    model = _existing(data)
    if model is None:
        return ""
    props = {p.key: p.value for p in model.metadata_props}
    return props.get("cnnspec.weights", "")


def model_state(data: bytes, folder: Path | None = None) -> str:
    """'generated', 'edited' or 'foreign' for the bytes of an existing .onnx file in `folder`,
    where an external-data model's data file is read (its bytes are part of its hash: a data
    file that was changed, cut short or removed makes the model read as edited)."""
    model = _existing(data)
    if model is None:  # not an ONNX file at all
        return "foreign"
    props = {p.key: p.value for p in model.metadata_props}
    if HASH_KEY not in props:
        return "foreign"
    split = any(_is_external(tensor) for tensor in model.graph.initializer)
    try:
        digest = graph_digest(model, split, folder)
    except ValueError:
        return "edited"
    return "generated" if props[HASH_KEY] == digest else "edited"


def save(model: Any, target: Path, force: bool = False) -> tuple[str, Path | None]:
    """Check the model and write it to `target` (see cnnspec.artifact): one file, or, for a
    model that needs external data, the model file and its data file beside it, both or
    neither. Returns the outcome ('wrote' or 'unchanged') and the data file, if any. A file
    cnnspec did not write, or that was edited since (its data file included), is refused
    (artifact.Refused) unless `force`; an external-data model's weights are moved out of
    `model` in memory."""
    import onnx

    from cnnspec.artifact import (
        Outcome,
        Refused,
        State,
        binary_state,
        replace_together,
        write_generated,
    )

    def state(path: Path) -> State:
        return binary_state(path, lambda data: State(model_state(data, path.parent)))

    data_path = data_file_for(target)
    try:
        earlier = external_locations(target.read_bytes()) if target.is_file() else set()
    except OSError:
        earlier = set()
    if not needs_external_data(model):
        onnx.checker.check_model(model, full_check=True)
        outcome = write_generated(target, model.SerializeToString(), force, state)
        if data_path.name in earlier:
            # The data file of the external-data model this one replaced: cnnspec's own (the
            # model naming it was generated, or --force said to replace it), and now unused.
            data_path.unlink(missing_ok=True)
        return str(outcome), None
    current = state(target)
    if current in (State.foreign, State.edited) and not force:
        raise Refused(target, current)
    if data_path.exists() and data_path.name not in earlier and not force:
        # A file of that name that no cnnspec model names is someone else's.
        raise Refused(data_path, State.foreign)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Both files are written into a folder beside their targets under their own names (the
    # model names its data file, and the checker looks for it beside the model), then renamed
    # into place, the data file first.
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        staged_data, staged_model = folder / data_path.name, folder / target.name
        with open(staged_data, "wb") as stream:
            move_weights_out(model, data_path.name, stream)
            stream.flush()
            os.fsync(stream.fileno())
        content = model.SerializeToString()
        if current is State.generated and target.read_bytes() == content:
            # The same bytes name the same hash, and the state check read the data file
            # against it: the pair on disk is this export already.
            return str(Outcome.unchanged), data_path
        with open(staged_model, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        # The checker cannot take a model over 2 GiB in memory; from its file, it reads it
        # with its data file beside it.
        onnx.checker.check_model(str(staged_model), full_check=True)
        replace_together([(staged_data, data_path), (staged_model, target)])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return str(Outcome.written), data_path
